"""The miss path: origin directly vs through a Scale0 node + HTTP-upstream worker vs nginx
vs the design's floor (bench.skeleton: a featureless node in front of the same worker)
vs proxy.py (the Python reverse proxy a user might pick; only when it is installed —
`pip install proxy.py` into the venv for the bench, never a project dependency).

Prints req/s, p50/p99, CPU µs per request of the proxy process(es), and the
ratios node/origin, node/floor, node/nginx, floor/nginx and node/proxy.py, all
measured in this one run.

    python -m bench.bench_proxy [--seconds 5] [--connections 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from bench.procs import Procs, free_port
from bench.tools import (
    HEADER,
    KEEPALIVE_PROXYING,
    Nginx,
    children,
    cpu_seconds,
    have,
    origin_upstream,
    wait_http,
    wrk,
)

# proxy.py's reverse proxy takes its routes from a plugin class: one static route
# to our origin, written to a temp dir at run time (proxy.py is no dependency).
_PLUGIN = """
import os
from proxy.http.server import ReverseProxyBasePlugin

class Route(ReverseProxyBasePlugin):
    def routes(self):
        return [(r"/.*", [os.environ["SCALE0_BENCH_UPSTREAM"].encode()])]
"""


def _proxypy(procs: Procs, upstream: str) -> tuple[int, int, str] | None:
    """Start proxy.py as a reverse proxy to `upstream`; (pid, port, plugin dir) or None."""
    exe = Path(sys.executable).parent / "proxy"
    if not exe.exists():
        return None
    tmp = tempfile.mkdtemp(prefix="scale0-bench-proxypy-")
    Path(tmp, "scale0_bench_route.py").write_text(_PLUGIN)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH"))
                                               if p)
    os.environ["SCALE0_BENCH_UPSTREAM"] = upstream
    port = free_port()
    p = procs.start([str(exe), "--hostname", "127.0.0.1", "--port", str(port),
                     # --threaded: in its default threadless mode (2.4.10) proxy.py answers
                     # the first request of a keep-alive connection and then stalls.
                     "--threaded", "--num-acceptors", "1", "--log-level", "e",
                     "--enable-reverse-proxy", "--plugins", "scale0_bench_route.Route"])
    return p.pid, port, tmp


def _count(url: str) -> int:
    return int(urllib.request.urlopen(url, timeout=5).read())


def run(seconds: float, connections: int) -> dict[str, float]:
    if not have("wrk"):
        raise SystemExit("bench_proxy needs wrk (apt-get install wrk)")
    procs = Procs()
    nginx: Nginx | None = None
    results: dict[str, float] = {}
    try:
        _, oport = procs.origin()
        path = "/bytes/1024?nocache=1"
        print(HEADER)
        direct = wrk(f"http://127.0.0.1:{oport}{path}", seconds=seconds, connections=connections)
        print(direct.row("origin directly"))

        node, http, workers = procs.node("--cache", "memory")
        worker = procs.worker(workers, "--upstream", f"http://127.0.0.1:{oport}")
        url = f"http://127.0.0.1:{http}{path}"
        wait_http(url)
        wrk(url, seconds=1, connections=connections)  # warm the connection pools
        c0 = cpu_seconds(node.pid) + cpu_seconds(worker.pid)
        through = wrk(url, seconds=seconds, connections=connections)
        cpu = (cpu_seconds(node.pid) + cpu_seconds(worker.pid) - c0) / max(1, through.requests)
        print(through.row("scale0 node + upstream worker", cpu * 1e6))
        floors = {}
        for label, ours in (("floor: featureless node + worker", False),
                            ("featureless node + our worker", True)):
            skel, shttp, sworkers = procs.skeleton()
            sworker = (procs.worker(sworkers, "--upstream", f"http://127.0.0.1:{oport}") if ours
                       else procs.skeleton_worker(sworkers, oport))
            surl = f"http://127.0.0.1:{shttp}{path}"
            wait_http(surl, success=True)
            wrk(surl, seconds=1, connections=connections)
            c0 = cpu_seconds(skel.pid) + cpu_seconds(sworker.pid)
            floors[ours] = wrk(surl, seconds=seconds, connections=connections)
            cpu = ((cpu_seconds(skel.pid) + cpu_seconds(sworker.pid) - c0)
                   / max(1, floors[ours].requests))
            print(floors[ours].row(label, cpu * 1e6))
        floor = floors[False]
        results |= {
            "floor_rps": floor.rps,
            "direct_rps": direct.rps,
            "node_rps": through.rps,
            "node_p50_ms": through.p50_ms,
            "node_p99_ms": through.p99_ms,
        }

        if have("nginx"):
            nport = free_port()
            nginx = Nginx(f"""{origin_upstream(oport)} server {{ listen 127.0.0.1:{nport};
              location / {{ proxy_pass http://origin; {KEEPALIVE_PROXYING} }} }}""")
            nginx.start()
            wait_http(f"http://127.0.0.1:{nport}/_count")
            pids = nginx.worker_pids()
            c0 = sum(cpu_seconds(p) for p in pids)
            ng = wrk(f"http://127.0.0.1:{nport}{path}", seconds=seconds, connections=connections)
            cpu = (sum(cpu_seconds(p) for p in pids) - c0) / max(1, ng.requests)
            print(ng.row("nginx proxy_pass", cpu * 1e6))
            results["nginx_rps"] = ng.rps

        pp = _proxypy(procs, f"http://127.0.0.1:{oport}{path}")
        if pp is not None:
            pid, pport, tmp = pp
            try:
                wait_http(f"http://127.0.0.1:{pport}{path}")
                pids = [pid, *children(pid)]
                c0 = sum(cpu_seconds(p) for p in pids)
                px = wrk(f"http://127.0.0.1:{pport}{path}", seconds=seconds,
                         connections=connections)
                cpu = (sum(cpu_seconds(p) for p in pids) - c0) / max(1, px.requests)
                print(px.row("proxy.py reverse proxy", cpu * 1e6))
                results["proxypy_rps"] = px.rps
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        print()
        print(f"node / origin = {through.rps / direct.rps:.3f}")
        print(f"node / floor  = {through.rps / floor.rps:.3f}  (what our features cost)")
        print(f"node / (featureless node + our worker) = {through.rps / floors[True].rps:.3f}"
              "  (what the node's features cost)")
        if "nginx_rps" in results:
            print(f"node / nginx  = {through.rps / results['nginx_rps']:.3f}")
            print(f"floor / nginx = {floor.rps / results['nginx_rps']:.3f}  "
                  "(the most this design can reach here)")
        if results.get("proxypy_rps"):
            print(f"node / proxy.py = {through.rps / results['proxypy_rps']:.2f}")
        return results
    finally:
        if nginx is not None:
            nginx.stop()
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    results = run(args.seconds, args.connections)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
