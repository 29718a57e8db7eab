"""Two builds of Scale0 side by side: the p50 a miss adds at a fixed rate, interleaved.

One `bench latency` run moves by ±0.05 ms between runs here (a shared 2-core VM), more than
most changes to the request path. So this runs this checkout (A) and another one (B, say a
`git worktree` of the commit before, built with its own `make compiled`) at once, each a
node and an HTTP-upstream worker in front of the same origin, with the featureless floor
(bench.skeleton) as the reference. Then it measures them in turns, A and B alternating
which goes first, each round against the origin measured in that round. Printed: every
round, then the medians of the added p50 and of the node's CPU a miss, and B - A.

    git worktree add ../before HEAD~1 && make -C ../before compiled
    python -m bench.bench_ab --against ../before [--rounds 8] [--seconds 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.bench_latency import _measure
from bench.procs import Procs
from bench.tools import cpu_seconds, wait_http

ROOT = Path(__file__).resolve().parent.parent
MISS = "/bytes/1024?nocache=1"


def _importable(tree: Path) -> None:
    """Exit with the reason when `tree`'s node cannot start (not built, or built stale)."""
    if not (tree / "node" / "__init__.py").is_file():
        raise SystemExit(f"{tree}: not a checkout of Scale0 (no node/__init__.py)")
    done = subprocess.run([sys.executable, "-c", "import node"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"{tree}: {last}")


def _start_tree(procs: Procs, tree: Path, origin: int) -> tuple[int, int]:
    """A node and an HTTP-upstream worker from `tree`; (HTTP port, node pid)."""
    node, http, workers = procs.node("--cache", "memory", tree=tree)
    procs.worker(workers, "--upstream", f"http://127.0.0.1:{origin}", tree=tree)
    wait_http(f"http://127.0.0.1:{http}/bytes/1024", success=True)
    return http, node.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, required=True,
                        help="another checkout of Scale0, built (make compiled) or pure")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="of each measurement")
    parser.add_argument("--rate", type=int, default=1000, help="requests a second offered")
    args = parser.parse_args()
    trees = {"A": ROOT, "B": args.against.resolve()}
    for tree in trees.values():
        _importable(tree)
    procs = Procs()
    try:
        _, origin = procs.origin()
        targets = {name: _start_tree(procs, tree, origin) for name, tree in trees.items()}
        floor, floor_http, floor_workers = procs.skeleton()
        procs.skeleton_worker(floor_workers, origin)
        wait_http(f"http://127.0.0.1:{floor_http}/bytes/1024", success=True)
        targets["floor"] = (floor_http, floor.pid)
        added: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        print(f"A: {trees['A']}\nB: {trees['B']}\n{args.rounds} rounds of {args.seconds:g} s "
              f"at {args.rate}/s; added p50 (µs) / node CPU a miss (µs)")
        for n in range(args.rounds):
            order = ["A", "B", "floor"] if n % 2 == 0 else ["B", "A", "floor"]
            base = statistics.median(asyncio.run(_measure(origin, MISS, args.rate, args.seconds)))
            line = []
            for name in order:
                port, pid = targets[name]
                before = cpu_seconds(pid)
                xs = asyncio.run(_measure(port, MISS, args.rate, args.seconds))
                cpu[name].append((cpu_seconds(pid) - before) / len(xs) * 1e6)
                added[name].append(statistics.median(xs) - base)  # ms
                line.append(f"{name} {added[name][-1] * 1000:+.0f}/{cpu[name][-1]:.0f}")
            print(f"round {n}: origin {base * 1000:.0f}  " + "  ".join(line), flush=True)
        print(f"\n{'':6} {'added p50 ms':>13} {'node CPU µs':>12}   (medians)")
        for name in targets:
            print(f"{name:6} {statistics.median(added[name]):+13.3f} "
                  f"{statistics.median(cpu[name]):12.0f}")
        wins = sum(b < a for a, b in zip(added["A"], added["B"], strict=True))
        print(f"B - A: {statistics.median(added['B']) - statistics.median(added['A']):+.3f} ms, "
              f"{statistics.median(cpu['B']) - statistics.median(cpu['A']):+.0f} µs of node CPU; "
              f"B lower in {wins} of {args.rounds} rounds")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
