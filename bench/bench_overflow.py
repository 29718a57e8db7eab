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

With `--netns` the same table is measured across two network namespaces 40 ms
apart each way with 1% loss (tests/testkit/netns.py; every process inside its
datacenter, each datacenter with its own origin, the client inside east, the
wan gossip preset): forwarded requests pay the 80 ms round trip. Where
namespaces are not permitted (not root, no `ip`/iptables) it says why and exits 0.

    python -m bench overflow      (or: python -m bench.bench_overflow --requests 600)
    python -m bench.bench_overflow --netns
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

# The scenario's processes and load client live in the test kit, shared with the e2e test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from testkit.netns import TwoDatacenters, two_datacenters, unavailable_reason
from testkit.overflownetns import NetnsOverflowSite
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


def netns_scenario(topo: TwoDatacenters, tmp: Path, *, west: bool, rate: float,
                   requests: int) -> Summary:
    """`scenario` with every process in its datacenter's namespace, 40 ms apart."""
    config = tmp / "east.toml"
    config.write_text(QUEUE_TOML)
    site = NetnsOverflowSite(topo, tmp, west=west, preset="wan",
                             east_extra=["--config", str(config)])
    try:
        return site.load(concurrency=64, rate=rate, count=requests, max_s=120,
                         request_timeout=60, sample_url=site.sample_url)
    finally:
        site.stop()


def by_place(s: Summary) -> str:
    """p50/p99 of the answers served in east and in west, apart."""
    parts = []
    for where in ("east", "west"):
        part = Summary([r for r in s.results if r.status == 200 and r.served_in(where)])
        if part.results:
            parts.append(f"served in {where}: {len(part.results)}, p50/p99 "
                         f"{part.percentile(0.5):.0f}/{part.percentile(0.99):.0f} ms")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--load", type=float, default=3.0, help="times east's capacity")
    parser.add_argument("--netns", action="store_true",
                        help="east and west in network namespaces, 40 ms apart, 1%% loss")
    args = parser.parse_args()
    rate = args.load * EAST_SLOTS / 0.1  # each slot serves 10 req/s of 100 ms requests
    if args.netns and (reason := unavailable_reason()):
        print(f"bench_overflow --netns skipped: {reason}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-overflow-") as d:
        tmp = Path(d)
        (tmp / "mesh").mkdir()
        (tmp / "alone").mkdir()
        if args.netns:
            with two_datacenters(log_dir=tmp) as topo:
                mesh = netns_scenario(topo, tmp / "mesh", west=True, rate=rate,
                                      requests=args.requests)
                alone = netns_scenario(topo, tmp / "alone", west=False, rate=rate,
                                       requests=args.requests)
        else:
            mesh = scenario(tmp / "mesh", west=True, rate=rate, requests=args.requests)
            alone = scenario(tmp / "alone", west=False, rate=rate, requests=args.requests)
    where = ("east and west in network namespaces, 40 ms apart each way, 1% loss, wan preset"
             if args.netns else "loopback, lan preset")
    print(f"east: 1 worker x {EAST_SLOTS} slots, 100 ms origin; {rate:.0f} req/s offered "
          f"({args.load:g}x its capacity); west: 2 nodes x 4 workers x 4 slots; {where}")
    print(Summary.header())
    print(mesh.row("east + west (overflow)"))
    print(f"  {by_place(mesh)}")
    print(alone.row("east alone"))
    print(f"east saturated: {100 * mesh.saturated_share():.0f}% of samples with west, "
          f"{100 * alone.saturated_share():.0f}% alone")
    shed = alone.statuses().get(503, 0)
    print(f"success with overflow / alone: {mesh.success:.3f} / {alone.success:.3f}; "
          f"east alone shed {shed} requests with 503")


if __name__ == "__main__":
    main()
