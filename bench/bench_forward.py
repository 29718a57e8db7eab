"""What overflow costs: a miss forwarded to a peer against the same miss served at home,
and a node whose workers are saturated against one whose workers have room.

Two tables, each measured in this one run with wrk on loopback:

1. Forwarded: node `a` has no worker and forwards every miss over the peer socket to node
   `b`, whose HTTP-upstream worker (64 slots) asks the origin. The reference is the same
   miss sent to `b` directly. Printed: req/s, and CPU µs a request of each process, so the
   forward's price shows as a ratio (what `a` spends to hand a request on, what `b` spends
   on a forwarded request beyond a local one).
2. Saturated: one node in front of a worker of 16 slots (the worker's default) with 50
   clients, so most requests wait in the node's queue (where they also watch for a peer's
   room), against the same node in front of a 64-slot worker that never queues.

    python -m bench.bench_forward [--seconds 5] [--connections 50]
"""

from __future__ import annotations

import argparse
import time
import urllib.request

from bench.procs import Procs, free_port
from bench.tools import WrkResult, cpu_seconds, wait_http, wrk

PATH = "/bytes/1024?nocache=1"


def _forwarding(url: str, peer: str, limit: float = 60.0) -> None:
    """Wait (bounded) until `url` is answered by `peer`: the mesh has formed."""
    end = time.monotonic() + limit
    seen = ""
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                seen = answer.headers.get("X-Scale0-Node", "")
                if answer.status == 200 and seen.startswith(f"{peer};"):
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling the mesh's formation, bounded by `limit`
    raise SystemExit(f"{url} was never answered by {peer} (last X-Scale0-Node {seen!r})")


def _measured(url: str, pids: dict[str, int], seconds: float,
              connections: int) -> tuple[WrkResult, dict[str, float]]:
    """wrk at `url`; the CPU µs a request each process in `pids` spent meanwhile."""
    wrk(url, seconds=1, connections=connections)  # warm the connection pools
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = wrk(url, seconds=seconds, connections=connections)
    cpu = {name: (cpu_seconds(pid) - before[name]) / max(1, result.requests) * 1e6
           for name, pid in pids.items()}
    return result, cpu


def _row(name: str, result: WrkResult, cpu: dict[str, float]) -> None:
    spent = "  ".join(f"{who} {us:6.1f}" for who, us in cpu.items())
    print(f"{name:<34} {result.rps:9.0f} {result.p50_ms:8.2f} {result.errors:6d}   {spent}")


def forwarded(procs: Procs, origin: int, seconds: float, connections: int) -> None:
    peer = f"tcp://127.0.0.1:{free_port()}"
    common = ("--cache", "memory", "--gossip-preset", "local")
    b, bhttp, bworkers = procs.node("--id", "b", "--peer", peer, *common)
    worker = procs.worker(bworkers, "--upstream", f"http://127.0.0.1:{origin}")
    wait_http(f"http://127.0.0.1:{bhttp}{PATH}", success=True)
    a, ahttp, _ = procs.node("--id", "a", "--seed", peer, *common)
    _forwarding(f"http://127.0.0.1:{ahttp}{PATH}", "b")
    print(f"{'1. forwarded (wrk -c' + str(connections) + ')':<34} {'req/s':>9} {'p50 ms':>8} "
          f"{'errors':>6}   CPU µs a request")
    home, home_cpu = _measured(f"http://127.0.0.1:{bhttp}{PATH}",
                               {"b": b.pid, "worker": worker.pid}, seconds, connections)
    _row("b serves it (local miss)", home, home_cpu)
    away, away_cpu = _measured(f"http://127.0.0.1:{ahttp}{PATH}",
                               {"a": a.pid, "b": b.pid, "worker": worker.pid}, seconds,
                               connections)
    _row("a forwards it to b", away, away_cpu)
    print(f"forwarded / local: {away.rps / home.rps:.2f}x the requests a second; a spends "
          f"{away_cpu['a'] / home_cpu['b']:.2f}x and b {away_cpu['b'] / home_cpu['b']:.2f}x "
          "what b spends on a local miss")


def saturated(procs: Procs, origin: int, seconds: float, connections: int) -> None:
    print(f"\n{'2. saturated (wrk -c' + str(connections) + ')':<34} {'req/s':>9} {'p50 ms':>8} "
          f"{'errors':>6}   CPU µs a request")
    rows = {}
    for slots in (64, 16):
        node, http, workers = procs.node("--cache", "memory")
        worker = procs.worker(workers, "--upstream", f"http://127.0.0.1:{origin}",
                              concurrency=slots)
        wait_http(f"http://127.0.0.1:{http}{PATH}", success=True)
        result, cpu = _measured(f"http://127.0.0.1:{http}{PATH}",
                                {"node": node.pid, "worker": worker.pid}, seconds, connections)
        _row(f"worker of {slots} slots" + (" (queued)" if slots < connections else ""),
             result, cpu)
        rows[slots] = (result, cpu)
    (room, room_cpu), (full, full_cpu) = rows[64], rows[16]
    print(f"queued / not: {full.rps / room.rps:.2f}x the requests a second, the node "
          f"{full_cpu['node'] / room_cpu['node']:.2f}x the CPU a request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    procs = Procs()
    try:
        _, origin = procs.origin()
        forwarded(procs, origin, args.seconds, args.connections)
        saturated(procs, origin, args.seconds, args.connections)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
