"""Load-aware overflow (issue 5): east at 3x its capacity, with and without west.

The scenario of tests/e2e/test_overflow_e2e.py with real processes on loopback:
east-1 has one upstream worker of concurrency 4 in front of a 100 ms origin
(~40 req/s); west has two nodes with four such workers each. A closed-loop
client offers east 120 req/s (3x its capacity; open loop, at most 64 in flight).
Printed: success %,
share served remotely (X-Scale0-Node names a west node), p50/p99 — with west
up, then the same load on east alone, which must shed with 503s. East's queue
is bounded at one request per slot (`[workers] queue_limit = 4`) in both runs,
so what it cannot take is refused at once instead of waiting for its deadline.

    python -m bench overflow      (or: python -m bench.bench_overflow --requests 600)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

# The scenario's processes and load client live in the test kit, shared with the e2e test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from testkit.overflowsite import EAST_SLOTS, OverflowSite, Summary, run_load

QUEUE_TOML = "[workers]\nqueue_limit = 4\n"


def scenario(tmp: Path, *, west: bool, rate: float, requests: int) -> Summary:
    config = tmp / "east.toml"
    config.write_text(QUEUE_TOML)
    site = OverflowSite(tmp, west=west, preset="lan", east_extra=["--config", str(config)])
    try:
        return asyncio.run(run_load(site.url, concurrency=64, rate=rate, count=requests,
                                    max_s=120, request_timeout=60,
                                    sample_url=f"http://127.0.0.1:{site.east.admin}"
                                               "/_scale0/health"))
    finally:
        site.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--load", type=float, default=3.0, help="times east's capacity")
    args = parser.parse_args()
    rate = args.load * EAST_SLOTS / 0.1  # each slot serves 10 req/s of 100 ms requests
    with tempfile.TemporaryDirectory(prefix="bench-overflow-") as d:
        tmp = Path(d)
        (tmp / "mesh").mkdir()
        (tmp / "alone").mkdir()
        mesh = scenario(tmp / "mesh", west=True, rate=rate, requests=args.requests)
        alone = scenario(tmp / "alone", west=False, rate=rate, requests=args.requests)
    print(f"east: 1 worker x {EAST_SLOTS} slots, 100 ms origin; {rate:.0f} req/s offered "
          f"({args.load:g}x its capacity); west: 2 nodes x 4 workers x 4 slots")
    print(Summary.header())
    print(mesh.row("east + west (overflow)"))
    print(alone.row("east alone"))
    print(f"east saturated: {100 * mesh.saturated_share():.0f}% of samples with west, "
          f"{100 * alone.saturated_share():.0f}% alone")
    shed = alone.statuses().get(503, 0)
    print(f"success with overflow / alone: {mesh.success:.3f} / {alone.success:.3f}; "
          f"east alone shed {shed} requests with 503")


if __name__ == "__main__":
    main()
