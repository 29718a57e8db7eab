"""`scale0`: the operator's command line (node, worker, demo).

Flags are DESIGN.md's "Command line" names, which scripts depend on: keep them.
Every node flag also has a TOML key (`--config`); a flag that is given wins
over the file, one that is not leaves the file's value (or the default) alone.
Flags for parts that are not built yet are accepted and stored, so scripts
written today keep working. Mistakes are reported in one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from node.errors import ConfigError
from node.querysecrets import DEFAULT_NAMES

DESCRIPTION_NODE = """\
Run one Scale0 node. Flags win over the --config file. Every flag below but
--config and --check-config has a key of the same name in that file (- or _):
repeatable flags are lists (seed or seeds = [...], route or routes = [...]);
--workers is `endpoint` in [workers], --cache is `store` in [cache] (or
cache = "SPEC"), --access-log is access_log = true|false (--busy-poll likewise),
--access-log-redact is a list (access_log_redact = ["password", "token"]).
"""

EPILOG_NODE = """\
examples:
  scale0 node                                   # :8080, admin 127.0.0.1:8081, workers tcp://*:7950
  scale0 node --id east-1 --dc east --route www.example.com=www --route '*.example.com/api=api'
  scale0 node --config /etc/scale0/node.toml --http 0.0.0.0:80
  scale0 node --check-config /etc/scale0/node.toml   # validate, bind nothing; exit 0 or 2
  scale0 node --config /etc/scale0/node.toml --check-config   # the same

Unmapped hosts go to the service `default`; with no such service the node answers 404.
Health: curl http://127.0.0.1:8081/_scale0/health   Readiness: /_scale0/ready
SIGTERM drains: stop accepting, finish in-flight requests (limits.drain_grace, 20 s), exit 0.
SIGHUP reloads the --config file: routes, static mounts, cache rules, [services.NAME]
settings, logging and return_memory_after; keys it cannot apply are logged as "needs a
restart: KEY".
With --processes N, signal the first process: it passes SIGTERM and SIGHUP on to the rest.
"""


def _node_parser(sub: Any) -> None:
    p = sub.add_parser(
        "node", help="run a node: HTTP front door + worker broker + mesh member",
        description=DESCRIPTION_NODE,
        epilog=EPILOG_NODE, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML config file (keys as the flags: id, dc, http, "
      "routes = [...], [workers], [limits], [cache], [services.NAME]); default: none")
    a("--id", metavar="NAME", help="this node's name in logs and the mesh; default: host name")
    a("--dc", metavar="NAME", help="datacenter label; routing prefers its own dc; default: default")
    a("--http", metavar="HOST:PORT", help="client HTTP listener; default: :8080 (all interfaces)")
    a("--https", metavar="HOST:PORT",
      help="TLS listener (needs --tls-cert, --tls-key); default: off")
    a("--tls-cert", metavar="FILE", action="append",
      help="PEM certificate chain for --https; repeat for several sites (chosen by SNI)")
    a("--tls-key", metavar="FILE", action="append",
      help="PEM private key of the --tls-cert at the same position (repeatable)")
    a("--admin", metavar="HOST:PORT", help="admin listener (health, readiness, mesh); "
      "default: 127.0.0.1:8081 — keep it private")
    a("--processes", metavar="N", type=int, help="node processes sharing the HTTP port; "
      "process i binds the admin, workers, gossip and peer ports + 100*i; default: 1")
    a("--cpu-affinity", metavar="off|auto|CPUS",
      help="keep each node process on one CPU: auto (process i on the i-th CPU it may use) "
           "or a list such as 0,2-3 (process i on its i-th entry); pin its workers to the "
           "same CPU with scale0 worker --cpu-affinity. Saves the cross-CPU wake-ups of a "
           "request at low load (0.1-0.2 ms a miss on our 2-core VM) at the cost of one core "
           "a process; default: off")
    a("--busy-poll", metavar="on|off", choices=["on", "off"],
      help="keep this machine's CPUs from sleeping while they serve traffic: one "
           "idle-priority spinner process per CPU, which takes only time no other task "
           "wants, backs off while the CPU is busy and rests once other tasks have used "
           "under 1%% of it for 10 s. On a VM, where a sleeping vCPU takes tens of µs to "
           "wake, this cuts what a miss adds at low load (0.40 to 0.28 ms on our 2-core "
           "VM; HAProxy's busy-polling is for the same case); the price: top shows every "
           "CPU busy while traffic flows. Give it to the node or, on a host without one, "
           "to a worker (one spinner a CPU either way); default: off")
    a("--workers", metavar="ENDPOINT", help="ZeroMQ ROUTER that workers connect to "
      "(in the file: [workers] endpoint); default: tcp://*:7950")
    a("--gossip", metavar="ENDPOINT", help="PUB socket for mesh state; default: tcp://*:7946")
    a("--peer", metavar="ENDPOINT", help="ROUTER socket for peers; default: tcp://*:7947")
    a("--advertise", metavar="HOST", help="address peers should dial (behind NAT); default: bound")
    a("--seed", metavar="ENDPOINT", action="append", dest="seeds",
      help="a peer socket to join the mesh through, e.g. tcp://10.0.0.5:7947 (repeatable)")
    a("--discover", metavar="mdns", choices=["mdns"], help="find peers on the LAN with zeroconf")
    a("--route", metavar="HOST[/PREFIX]=SERVICE", action="append", dest="routes",
      help="map requests to a service, e.g. www.example.com=www, '*.example.com/api=api', "
           "'*/static=files'; most specific host, then longest prefix wins (repeatable)")
    a("--cache", metavar="SPEC",
      help="files:DIR | memory | mongo:URL | off; default: files:./scale0-cache")
    a("--static", metavar="PREFIX=DIR", action="append",
      help="serve files under a URL prefix from a directory, e.g. /assets=./public (repeatable)")
    a("--app", metavar="MODULE:ATTR", help="an in-node Tornado application or URL rules")
    a("--curve", metavar="KEYDIR",
      help="CurveZMQ on every ZeroMQ socket: KEYDIR holds this node's key pair "
           "(scale0 keygen) and authorized/ with the public keys of peers and workers allowed "
           "in; the node refuses to start if it cannot enforce that list")
    a("--admin-token-file", metavar="FILE",
      help="file holding a bearer token the admin listener requires (mandatory when --admin "
           "is not on loopback)")
    a("--trusted-proxy", metavar="CIDR", action="append", dest="trusted_proxies",
      help="a load balancer whose X-Forwarded-For/-Proto/-Host and Forwarded are believed "
           "(repeatable); default: none, client-sent ones are replaced")
    a("--http-server", metavar="fast|tornado", choices=["fast", "tornado"],
      help="HTTP wire layer: fast (httptools on uvloop) or tornado (Tornado's own server); "
           "both serve the same pipeline; default: fast")
    a("--gossip-preset", metavar="lan|wan|local", choices=["lan", "wan", "local"],
      help="failure-detection timing: lan (1 s beats, a crash is noticed in ~2-3 s), "
           "wan (long lossy links), local (loopback tests); default: lan")
    a("--return-memory-after", metavar="SECONDS", type=float,
      help="after a traffic spike, once the node has been quiet this long (no request in "
           "flight, under 5%% of a core), give the memory the spike left back to the OS "
           "(a garbage collection and glibc's malloc_trim, at most once a minute, only when "
           "RSS grew 32 MiB or more since start); 0 = never; default: 10")
    a("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING; default: INFO")
    a("--log-format", metavar="text|json", choices=["text", "json"],
      help="access log lines as text or one JSON object each; default: text")
    a("--access-log", metavar="on|off", choices=["on", "off"],
      help="one line per request (buffered, written every second); default: on")
    a("--access-log-redact", metavar="NAMES",
      help="query parameters whose values the access log shows as *** (?password=***): "
           "comma-separated names, matched whole and case-insensitively, e.g. "
           "password,token. Replaces the default list ('default,NAME' adds to it; 'none' "
           "hides nothing); default: "
           f"{', '.join(DEFAULT_NAMES)}")
    a("--check-config", metavar="FILE", nargs="?", const="",
      help="validate FILE (or, without FILE, the --config file) as the node would read it, "
           "binding nothing; prints FILE: ok or FILE:LINE: the problem; exit 0 or 2")
    p.set_defaults(func=_cmd_node)


def _reloader(path: str, given: Mapping[str, Any]) -> Callable[[], Any]:
    """What SIGHUP runs: the checks of `--check-config` (so a refusal names the file's
    line, and what the node would refuse at start is refused here too), then the load."""
    from node.checkconfig import check_file
    from node.config import load_config

    def reload() -> Any:
        ok, line = check_file(path, given)
        if not ok:
            raise ConfigError(line)
        return load_config(path, given)
    return reload


def _cmd_node(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.server import run_node

    given = _given(args)
    check = getattr(args, "check_config", None)
    if check is not None:
        from node.checkconfig import check_file

        # `--check-config FILE`, or `--config FILE --check-config` as with `nginx -t -c FILE`;
        # the other flags are laid over the file as below, so what is checked is what runs.
        check = check or getattr(args, "config", "")
        if not check:
            return _fail("--check-config needs a FILE (or --config FILE)")
        ok, line = check_file(check, given)
        print(line, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 2
    path = getattr(args, "config", None)
    config = load_config(path, given)
    logging.getLogger().setLevel(config.log_level.upper())
    # Without a file there is nothing to reload: None makes SIGHUP say so (node.server).
    reload = _reloader(path, given) if path else None
    try:
        return run_node(config, reload=reload)
    except Exception as exc:
        import zmq

        if not isinstance(exc, OSError | zmq.ZMQError):
            raise
        named = bind_flag(str(exc), config)
        if named == str(exc):
            raise
        print(f"scale0: {named}", file=sys.stderr)  # as main() reports it, with the flag
        return 1


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The node flags that were given, as load_config's overrides (keys of the file)."""
    given = dict(vars(args))
    for key in ("func", "command", "config", "check_config"):
        given.pop(key, None)
    if "workers" in given:
        given["workers"] = {"endpoint": given["workers"]}
    if "access_log" in given:
        given["access_log"] = given["access_log"] == "on"
    if "busy_poll" in given:
        given["busy_poll"] = given["busy_poll"] == "on"
    if "access_log_redact" in given:  # "a, b" → ["a", "b"]; "" → [] (hide nothing)
        given["access_log_redact"] = [name.strip() for name in
                                      given["access_log_redact"].split(",") if name.strip()]
    return given


def bind_flag(message: str, config: Any) -> str:
    """`message` of a failed ZeroMQ bind with the flag of the endpoint added:
    "cannot bind tcp://*:7946 (--gossip): Address already in use"."""
    endpoints = {"--workers": config.workers.endpoint, "--gossip": config.gossip,
                 "--peer": config.peer}
    for endpoint in dict.fromkeys(endpoints.values()):
        flags = "/".join(flag for flag, e in endpoints.items() if e == endpoint)
        for said in (f"cannot bind {endpoint}:", f"cannot bind the worker socket {endpoint}:"):
            if said in message:
                return message.replace(said, f"{said[:-1]} ({flags}):", 1)
    return message


def _worker_parser(sub: Any) -> None:
    try:
        worker_cli = importlib.import_module("node.worker.cli")
    except ImportError as exc:  # the worker CLI is another part of the tree
        why = str(exc)
        p = sub.add_parser("worker", help="run a worker (unavailable in this build)")
        p.set_defaults(func=lambda _a: _fail(f"scale0 worker is unavailable: {why}"))
        return
    worker_cli.add_worker_parser(sub)


def _fail(message: str) -> int:
    print(f"scale0: {message}", file=sys.stderr)
    return 2


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="a local two-datacenter mesh you can curl and watch",
        description="Start, in subprocesses, a tiny origin web server, four nodes in two "
                    "datacenters (east-1 takes each default port that is free; the others "
                    "get free ports: use the URLs it prints), HTTP-upstream "
                    "workers, a Python-API worker for /hello, a static mount and an in-node "
                    "handler. Prints what to curl, the dashboard and the load table; Ctrl-C "
                    "(or --for) stops everything.",
        epilog="example:\n  scale0 demo --for 60\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--for", dest="seconds", type=_duration, default=0.0, metavar="SECONDS",
                   help="stop by itself SECONDS after start-up has finished (start-up and "
                        "shutdown add a few seconds); default: run until Ctrl-C")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the demo's temporary folder (logs, caches) after a clean stop; "
                        "it is always kept when something failed")
    p.set_defaults(func=_cmd_demo)


def _duration(text: str) -> float:
    """A --for value: seconds, more than 0 (0 and below, nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text} "
                                         "(leave --for out to run until Ctrl-C)")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    return run_demo(args.seconds, keep_logs=args.keep_logs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scale0",
        description="Scale0: a mesh of identical HTTP proxy nodes with ZeroMQ workers. "
                    "Start with `scale0 demo`, then `scale0 node --help`.",
        epilog="each command has its own --help, e.g. scale0 node --help",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _node_parser(sub)
    _worker_parser(sub)
    from mesh.cli import add_mesh_parser
    from node.purge import add_purge_parser

    add_mesh_parser(sub)
    add_purge_parser(sub)
    from node.keygen import add_keygen_parser

    add_keygen_parser(sub)
    _demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:  # most of the start-up's imports happen here: Ctrl-C now is no traceback either
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return 130
    level = getattr(args, "log_level", None) or "INFO"
    logging.basicConfig(level=str(level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a port in use, a missing file: the operator's environment
        print(f"scale0: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import zmq

        if not isinstance(exc, zmq.ZMQError):
            raise
        print(f"scale0: {exc}", file=sys.stderr)  # e.g. a ZeroMQ endpoint already bound
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
