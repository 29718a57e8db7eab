"""`--processes N`: one node process vs two sharing the HTTP port, hit and miss paths.

In one invocation, for N = 1 and N = 2: `scale0 node --processes N` with the
file cache (shared by the processes), one HTTP-upstream worker per process
(process i's workers port is the base + 100·i, node.processes.STRIDE), the same
origin. wrk -c50 runs on a cached 1 KiB object (hits) and on a no-store 1 KiB
object (misses). Prints req/s, p50/p99, CPU µs per request of every node and worker process, and the
ratios 2 / 1 per path. Every process is stopped by its PID; runs are bounded.

    python -m bench.bench_processes [--seconds 5] [--connections 50]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request

from bench.procs import BIN, Procs, free_port
from bench.tools import HEADER, WrkResult, children, cpu_seconds, have, wait_http, wrk
from node.processes import STRIDE


def _two_free() -> int:
    """A port p with p and p + STRIDE both free (process i binds base + STRIDE·i),
    below the ephemeral range so a client socket does not take p + STRIDE meanwhile."""
    for _ in range(500):
        p = random.randrange(20000, 32000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + STRIDE))
            return p
        except OSError:
            continue
    raise RuntimeError("no two free ports STRIDE apart")


class Group:
    """`scale0 node --processes n` + one upstream worker per process."""

    def __init__(self, procs: Procs, n: int, origin: int, cache_dir: str) -> None:
        self.n = n
        self.http = free_port()
        admin, workers = _two_free(), _two_free()
        gossip, peer = _two_free(), _two_free()
        self.node = procs.start([
            str(BIN / "scale0"), "node", "--processes", str(n),
            "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{admin}",
            "--workers", f"tcp://127.0.0.1:{workers}", "--gossip", f"tcp://127.0.0.1:{gossip}",
            "--peer", f"tcp://127.0.0.1:{peer}", "--cache", f"files:{cache_dir}"])
        for i in range(n):
            wait_http(f"http://127.0.0.1:{admin + STRIDE * i}/_scale0/health", timeout=30)
        self.workers = [
            procs.worker(f"tcp://127.0.0.1:{workers + STRIDE * i}", "--upstream",
                         f"http://127.0.0.1:{origin}") for i in range(n)]

    def pids(self) -> list[int]:
        return [self.node.pid, *children(self.node.pid), *(w.pid for w in self.workers)]

    def measure(self, path: str, seconds: float, connections: int) -> tuple[WrkResult, float]:
        url = f"http://127.0.0.1:{self.http}{path}"
        wrk(url, seconds=1, connections=connections)  # warm: pools, caches, prepared hits
        pids = self.pids()
        c0 = sum(cpu_seconds(p) for p in pids)
        r = wrk(url, seconds=seconds, connections=connections)
        return r, (sum(cpu_seconds(p) for p in pids) - c0) / max(1, r.requests) * 1e6


def _ready(url: str) -> None:
    """Until every process has a worker, some answers are 503: poll for a 200 run."""
    ok = 0
    end = time.monotonic() + 30
    while ok < 20 and time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            ok += 1
        except (urllib.error.HTTPError, OSError):
            ok = 0
            time.sleep(0.05)  # poll a real condition, bounded


def run(seconds: float, connections: int) -> dict[str, float]:
    if not have("wrk"):
        raise SystemExit("bench_processes needs wrk (apt-get install wrk)")
    results: dict[str, float] = {}
    print(HEADER)
    procs = Procs()
    try:
        _, oport = procs.origin()
        for n in (1, 2):
            cache_dir = tempfile.mkdtemp(prefix="scale0-bench-proc-")
            group_procs = Procs()
            try:
                g = Group(group_procs, n, oport, cache_dir)
                for name, path in (("hit", "/bytes/1024"), ("miss", "/bytes/1024?nocache=1")):
                    _ready(f"http://127.0.0.1:{g.http}{path}")
                    r, cpu = g.measure(path, seconds, connections)
                    print(r.row(f"{n} process{'es' if n > 1 else ''}, {name}", cpu))
                    results[f"{name}_{n}_rps"] = r.rps
                    results[f"{name}_{n}_cpu_us"] = cpu
            finally:
                group_procs.stop_all()
                shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        procs.stop_all()
    print()
    for name in ("hit", "miss"):
        if results.get(f"{name}_1_rps"):
            ratio = results[f"{name}_2_rps"] / results[f"{name}_1_rps"]
            results[f"{name}_ratio"] = ratio
            print(f"{name}: 2 processes / 1 = {ratio:.2f}")
    cores = os.cpu_count() or 1
    print(f"({cores} cores here, shared by wrk, the origin, the workers and the nodes.)")
    # Processes share nothing on the request path (own loop, own sockets, the kernel
    # spreads connections), so on a big machine the bound is CPU µs per request.
    for name in ("hit", "miss"):
        cpu = results.get(f"{name}_2_cpu_us")
        if cpu:
            print(f"expected on 16 cores ({name}, node + worker CPU {cpu:.0f} µs/request, "
                  f"load generator elsewhere): ≈ {16e6 / cpu * 0.8:,.0f} req/s "
                  "(linear in cores, 80 % for the kernel's share and imbalance)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    run(args.seconds, args.connections)


if __name__ == "__main__":
    main()
