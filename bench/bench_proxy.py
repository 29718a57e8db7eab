"""The miss path: origin directly vs through a Scale0 node + HTTP-upstream worker vs nginx.

Prints req/s, p50/p99, CPU µs per request of the proxy process(es), and the
ratios node/origin and node/nginx, all measured in this one run.

    python -m bench.bench_proxy [--seconds 5] [--connections 50]
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from bench.procs import Procs, free_port
from bench.tools import HEADER, Nginx, cpu_seconds, have, wait_http, wrk


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
        results |= {
            "direct_rps": direct.rps,
            "node_rps": through.rps,
            "node_p50_ms": through.p50_ms,
            "node_p99_ms": through.p99_ms,
        }

        if have("nginx"):
            nport = free_port()
            nginx = Nginx(f"""server {{ listen 127.0.0.1:{nport};
              location / {{ proxy_pass http://127.0.0.1:{oport}; proxy_http_version 1.1;
                            proxy_set_header Connection ""; }} }}""")
            nginx.start()
            wait_http(f"http://127.0.0.1:{nport}/_count")
            pids = nginx.worker_pids()
            c0 = sum(cpu_seconds(p) for p in pids)
            ng = wrk(f"http://127.0.0.1:{nport}{path}", seconds=seconds, connections=connections)
            cpu = (sum(cpu_seconds(p) for p in pids) - c0) / max(1, ng.requests)
            print(ng.row("nginx proxy_pass", cpu * 1e6))
            results["nginx_rps"] = ng.rps
        print()
        print(f"node / origin = {through.rps / direct.rps:.3f}")
        if "nginx_rps" in results:
            print(f"node / nginx  = {through.rps / results['nginx_rps']:.3f}")
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
