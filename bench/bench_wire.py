"""Front-door wire speed: Tornado's HTTPServer vs the fast wire, nginx as reference.

Each server is its own process serving node.front.Front with an in-memory
handler that returns 1 KiB (no cache, no workers: only the wire and Front), and
the fast wire once more with a bare delegate (the wire's own cost);
nginx answers `return 200` of the same 1 KiB. wrk -t1 -c50 drives each in turn;
the table shows req/s, p50/p99, server CPU µs per request and ratios.

    python -m bench.bench_wire [--seconds 5]
    python -m bench.bench_wire --serve fast|tornado|bare --port N [--tls-cert C --tls-key K]
        (one server, used internally; over TLS with the pair, as bench_https does)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from bench.procs import Procs, free_port
from bench.tools import HEADER, Nginx, cpu_seconds, have, wait_http, wrk

BODY = b"x" * 1024


def serve(kind: str, port: int, tls: tuple[str, str] | None = None) -> None:
    from tornado import httputil

    from node.fastwire import FastHTTPServer, WireLimits, new_event_loop
    from node.front import Front
    from node.http import Headers, Request, Response
    from node.tls import CertStore, TLSConfig

    ctx = CertStore(TLSConfig((tls,))).context if tls else None  # the node's own settings

    async def handle(request: Request) -> Response:
        return Response(200, Headers([("Content-Type", "text/plain")]), BODY)

    class Bare(httputil.HTTPMessageDelegate):
        """The wire alone: answer from headers_received's caller, no pipeline."""

        def __init__(self, conn: httputil.HTTPConnection) -> None:
            self.conn = conn

        def finish(self) -> None:
            fields = httputil.HTTPHeaders({"Content-Type": "text/plain",
                                           "Content-Length": "1024"})
            self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 200, "OK"),
                                    fields, BODY)
            self.conn.finish()

    class BareServer(httputil.HTTPServerConnectionDelegate):
        def start_request(self, server_conn: object,
                          request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
            return Bare(request_conn)

    async def main() -> None:
        front = Front(handle, scheme="https" if ctx else "http")
        if kind == "bare":
            await FastHTTPServer(BareServer(), ssl_context=ctx).listen("127.0.0.1", port)
        elif kind == "tornado":
            front.listen(port, "127.0.0.1", ssl_options=ctx)
        else:
            await FastHTTPServer(front, limits=WireLimits(), ssl_context=ctx).listen(
                "127.0.0.1", port)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def measure(name: str, url: str, pid: int, seconds: int) -> tuple[str, float]:
    wrk(url, seconds=1)  # warm up
    before = cpu_seconds(pid)
    result = wrk(url, seconds=seconds)
    cpu_us = (cpu_seconds(pid) - before) / max(result.requests, 1) * 1e6
    print(result.row(name, cpu_us), flush=True)
    return name, result.rps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", choices=("fast", "tornado", "bare"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port,
              (args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None)
        return
    if not have("wrk"):
        print("wrk is not installed: nothing to measure")
        return
    procs = Procs()
    nginx: Nginx | None = None
    rates: dict[str, float] = {}
    print(HEADER)
    try:
        for kind in ("tornado", "fast", "bare"):
            port = free_port()
            proc = procs.start([sys.executable, "-m", "bench.bench_wire", "--serve", kind,
                                "--port", str(port)])
            url = f"http://127.0.0.1:{port}/"
            wait_http(url)
            label = "fast wire, bare delegate" if kind == "bare" else f"{kind} + Front"
            _, rps = measure(f"{label}, 1 KiB", url, proc.pid, args.seconds)
            rates[kind] = rps
        if have("nginx"):
            port = free_port()
            nginx = Nginx(f"server {{ listen 127.0.0.1:{port}; "
                          f"location / {{ return 200 '{'x' * 1024}'; }} }}")
            nginx.start()
            url = f"http://127.0.0.1:{port}/"
            wait_http(url)
            pids = nginx.worker_pids()
            _, rates["nginx"] = measure("nginx return 200, 1 KiB", url,
                                        pids[0] if pids else nginx.proc.pid,  # type: ignore[union-attr]
                                        args.seconds)
    except subprocess.CalledProcessError as exc:
        print(f"wrk failed: {exc}")
    finally:
        procs.stop_all()
        if nginx is not None:
            nginx.stop()
    if "tornado" in rates and "fast" in rates:
        print(f"fast / tornado: {rates['fast'] / rates['tornado']:.2f}x")
    if "nginx" in rates and "fast" in rates:
        print(f"fast / nginx:   {rates['fast'] / rates['nginx']:.2f}x")


if __name__ == "__main__":
    main()
