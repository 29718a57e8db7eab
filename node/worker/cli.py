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
import logging
import signal
import sys
from typing import Any

from node.gctune import settle_heap
from node.worker.sdk import Handler, Worker

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
    p.add_argument("--read-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="--upstream: a response body silent this long between two reads "
                        "is broken off, and the client's connection aborted (default 60)")
    p.add_argument("--name", help="name shown in the node's logs (default host:pid)")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, time allowed to finish requests in flight; the node "
                        "retries or fails what is left at once (default 10)")
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


def _handler(args: argparse.Namespace) -> tuple[Handler, Any]:
    if args.upstream:
        from node.worker.upstream import UpstreamClient

        client = UpstreamClient(args.upstream, max_connections=args.concurrency,
                                read_timeout=args.read_timeout)
        return client, client
    if args.wsgi:
        from node.worker.wsgi import wsgi_handler

        return wsgi_handler(load_object(args.wsgi), args.concurrency), None
    handler = load_object(args.app)
    if not callable(handler):
        raise ValueError(f"{args.app!r} is not callable")
    return handler, None


def run_worker(args: argparse.Namespace) -> int:
    """Run the worker described by parsed `args` until SIGTERM/SIGINT; the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.concurrency < 1:
        print("scale0 worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if not args.read_timeout > 0:  # also refuses nan
        print("scale0 worker: --read-timeout must be more than 0", file=sys.stderr)
        return 2
    try:
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
    return int(runner(_serve(args, handler, closeable, secure)))


def _curve(args: argparse.Namespace) -> Any:
    if not getattr(args, "curve", None):
        return None
    from node.curve import CurveError, CurveKeys

    try:
        return CurveKeys.load(args.curve).secure
    except CurveError as exc:
        raise ValueError(str(exc)) from None


async def _serve(args: argparse.Namespace, handler: Handler, closeable: Any,
                 secure: Any = None) -> int:
    worker = Worker(args.node, args.service, args.concurrency, handler, name=args.name,
                    heartbeat_interval=args.heartbeat, secure=secure)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            stopping.append(loop.create_task(worker.stop(args.grace)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # "connecting", not "serving": nothing says yet that the node took us (a --curve key it
    # does not list, or a plaintext worker at a --curve node, is only "silent" later).
    logging.getLogger("scale0.worker").info(
        "connecting to %s to serve %s (concurrency %d)", args.node, ",".join(args.service),
        args.concurrency)
    await worker.run()
    for task in stopping:
        await task
    if closeable is not None:
        with contextlib.suppress(Exception):
            await closeable.close()
    return 0
