"""`scale0 worker`: connect a backend to a node as a ZeroMQ worker.

node/cli.py adds this sub-command with `add_worker_parser(subparsers)` and
calls `run_worker(args)` when it is chosen. SIGTERM or Ctrl-C stop the worker
gracefully: it tells the node (DISCONNECT), finishes what it is serving within
the grace period, and exits 0. What is still running then is given up, and the
node is told so at once (it retries idempotent requests at another worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from node.busypoll import busy_polling
from node.config import check_endpoint
from node.cpuaffinity import allowed_cpus, pin, worker_cpus
from node.errors import ConfigError
from node.gctune import settle_heap
from node.heaptrim import HeapTrim
from node.protocol import Ready
from node.trimrule import TrimRule
from node.worker.sdk import Handler, Worker, check_ready

EPILOG = """\
examples:
  # an existing HTTP server becomes a worker of service "www"
  scale0 worker --node tcp://127.0.0.1:7950 --service www --upstream http://127.0.0.1:8000

  # a Flask/Django app, without an HTTP server of its own (module on PYTHONPATH)
  scale0 worker --node tcp://10.0.0.5:7950 --service api --wsgi myproject.wsgi:application

  # an async handler: async def handle(request: node.http.Request) -> node.http.Response
  scale0 worker --node tcp://127.0.0.1:7950 --service www --app mymodule:handle

The node routes requests to services by Host (see `scale0 node --route`); start as
many workers as you like, on any machine that can reach the node's worker port.
"""


def add_worker_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `worker` sub-command to an argparse `subparsers` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="serve a node's requests with an HTTP backend or a Python app",
        description="Connect to a Scale0 node's worker socket and serve requests for one "
                    "or more services, with exactly one of --upstream, --wsgi or --app.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node", required=True, metavar="ENDPOINT",
                   help="the node's worker socket, e.g. tcp://127.0.0.1:7950")
    p.add_argument("--service", required=True, action="append", metavar="NAME",
                   help="a service to serve (repeat for several)")
    p.add_argument("--concurrency", type=int, default=16, metavar="N",
                   help="requests served at once (default 16)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--upstream", metavar="URL",
                     help="forward to this HTTP/1.1 origin, e.g. http://127.0.0.1:8000")
    src.add_argument("--wsgi", metavar="MODULE:ATTR", help="a WSGI application object")
    src.add_argument("--app", metavar="MODULE:ATTR",
                     help="an async handler: async def handle(request) -> response")
    p.add_argument("--read-timeout", type=_seconds(0.0), default=60.0, metavar="SECONDS",
                   help="--upstream: a response body silent this long between two reads "
                        "is broken off, and the client's connection aborted (default 60)")
    p.add_argument("--name", help="name shown in the node's logs (default host:pid)")
    p.add_argument("--grace", type=_seconds(0.0, zero=True), default=10.0, metavar="SECONDS",
                   help="on SIGTERM, time allowed to finish requests in flight; the node "
                        "retries or fails what is left at once (default 10)")
    p.add_argument("--return-memory-after", type=_seconds(0.0, zero=True), default=10.0,
                   metavar="SECONDS",
                   help="after a traffic spike, once the worker has been quiet this long, give "
                        "the memory the spike left back to the OS, as the node does (scale0 "
                        "node --help); 0 = never (default 10)")
    p.add_argument("--cpu-affinity", metavar="CPUS", default="off",
                   help="keep the worker on these CPUs, e.g. 0 or 2-3: the one its node "
                        "process keeps to (scale0 node --cpu-affinity), so a request's "
                        "wake-ups stay on one CPU; default: off")
    p.add_argument("--busy-poll", metavar="on|off", choices=["on", "off"], default="off",
                   help="keep this host's CPUs from sleeping while they serve traffic, as "
                        "scale0 node --busy-poll does (see its --help): for a host of "
                        "workers without a node; one spinner a CPU whoever asks; default: off")
    p.add_argument("--curve", metavar="KEYDIR",
                   help="CurveZMQ: KEYDIR holds this worker's pair (scale0 keygen KEYDIR "
                        "--name NAME) and a copy of the node's node.key; the node lets it in "
                        "once NAME.key is in the node's KEYDIR/authorized/ (then SIGHUP it)")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    p.set_defaults(func=run_worker)
    return p


def load_object(spec: str) -> Any:
    """`package.module:attr.sub` → the object; ValueError saying what is wrong."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _seconds(low: float, *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds above `low` (or equal to it, `zero`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (low <= value if zero else low < value) or value == float("inf"):
            rule = f"at least {low:g}" if zero else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {rule} seconds, got {text}")
        return value
    return parse


def _handler(args: argparse.Namespace) -> tuple[Handler, Any]:
    if args.upstream:
        from node.worker.upstream import UpstreamClient

        client = UpstreamClient(args.upstream, max_connections=args.concurrency,
                                read_timeout=args.read_timeout)
        return client, client
    if args.wsgi:
        from node.worker.wsgi import wsgi_handler

        app = _load(args.wsgi, "--wsgi")
        if not callable(app):
            raise ValueError(f"--wsgi {args.wsgi}: {_what(app)} is not callable; expected "
                             "a WSGI application, app(environ, start_response)")
        return wsgi_handler(app, args.concurrency), None
    handler = _load(args.app, "--app")
    if not is_async_handler(handler):
        raise ValueError(f"--app {args.app}: {_what(handler)} is not an async handler; expected "
                         "`async def handle(request)` or an object whose __call__ is async def")
    return handler, None


def _load(spec: str, flag: str) -> Any:
    try:
        return load_object(spec)
    except ValueError as exc:
        raise ValueError(f"{flag} {spec}: {exc}") from None


def is_async_handler(obj: Any) -> bool:
    """Whether `await obj(request)` is how obj is called: an async def function (or a
    method or partial of one), or an instance whose class's __call__ is async def.
    Not a class (calling it makes an instance), not a plain function."""
    if isinstance(obj, type):
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    # The class's own __call__ (found along its MRO), as `obj(request)` would call it.
    call = next((vars(k)["__call__"] for k in type(obj).__mro__ if "__call__" in vars(k)), None)
    return inspect.iscoroutinefunction(call)


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    if inspect.isroutine(obj):
        return f"the plain function {getattr(obj, '__name__', obj)!s}"
    return f"a {type(obj).__name__}"


def run_worker(args: argparse.Namespace) -> int:
    """Run the worker described by parsed `args` until SIGTERM/SIGINT; the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not 1 <= args.concurrency <= 100_000:  # past it, the node drops our READY
        print("scale0 worker: --concurrency must be 1 to 100000", file=sys.stderr)
        return 2
    if not args.read_timeout > 0:  # also refuses nan
        print("scale0 worker: --read-timeout must be more than 0", file=sys.stderr)
        return 2
    try:
        check_endpoint(args.node, "--node", bind=False, ipc=True)
    except ConfigError as exc:
        print(f"scale0 worker: {exc}", file=sys.stderr)
        return 2
    allowed = allowed_cpus()
    try:
        # First: threads the app or ZeroMQ start from here on keep to the same CPUs.
        pin(worker_cpus(args.cpu_affinity, allowed))
    except ValueError as exc:
        print(f"scale0 worker: --cpu-affinity {args.cpu_affinity}: {exc}", file=sys.stderr)
        return 2
    try:
        check_ready(Ready(tuple(args.service), args.concurrency, args.name or ""))
        handler, closeable = _handler(args)
        secure = _curve(args)
    except ValueError as exc:
        print(f"scale0 worker: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    settle_heap()  # the app is loaded: keep it out of the collector's scans (node.gctune)
    with busy_polling(args.busy_poll == "on", allowed):
        return int(runner(_serve(args, handler, closeable, secure)))


def _curve(args: argparse.Namespace) -> Any:
    if not getattr(args, "curve", None):
        return None
    from node.curve import CurveError, CurveKeys

    try:
        return CurveKeys.load(args.curve).secure
    except CurveError as exc:
        raise ValueError(f"--curve {args.curve}: {exc}") from None


async def _serve(args: argparse.Namespace, handler: Handler, closeable: Any,
                 secure: Any = None) -> int:
    worker = Worker(args.node, args.service, args.concurrency, handler, name=args.name,
                    heartbeat_interval=args.heartbeat, secure=secure)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    log = logging.getLogger("scale0.worker")
    given_up: list[int] = []  # requests still running when the grace ran out

    async def drain(sig: int) -> None:
        running = worker.in_flight
        log.info("%s: draining (%d request%s in flight, grace %gs)", signal.Signals(sig).name,
                 running, "" if running == 1 else "s", args.grace)
        await worker.stop(args.grace)
        given_up.append(len(worker._jobs))  # cancelled by stop(), not yet unwound

    def stop(sig: int) -> None:
        if not stopping:
            stopping.append(loop.create_task(drain(sig)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    # "connecting", not "serving": nothing says yet that the node took us (a --curve key it
    # does not list, or a plaintext worker at a --curve node, is only "silent" later).
    log.info("connecting to %s to serve %s (concurrency %d)", args.node,
             ",".join(args.service), args.concurrency)
    heap = HeapTrim(TrimRule(after=args.return_memory_after), lambda: worker.in_flight)
    trimming = loop.create_task(heap.run())  # memory a spike left, back once quiet
    try:
        await worker.run()
    finally:
        trimming.cancel()
    for task in stopping:
        await task
    if closeable is not None:
        with contextlib.suppress(Exception):
            await closeable.close()
    left = given_up[0] if given_up else 0
    log.info("stopped: %s", f"{left} request{'' if left == 1 else 's'} still running were "
             "given up (the node retries or fails them)" if left else "every request finished")
    return 0
