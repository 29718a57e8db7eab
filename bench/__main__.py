"""`make bench`: run every benchmark in turn; each prints its own ratios.

python -m bench [NAME ...]     (names: proxy, ...)
"""

from __future__ import annotations

import importlib
import sys

BENCHES = {"proxy": "bench.bench_proxy", "stores": "bench.bench_stores",
           "gossip": "bench.bench_gossip_sim",
           "overflow": "bench.bench_overflow", "cache": "bench.bench_cache",
           "processes": "bench.bench_processes", "dispatch": "bench.bench_dispatch",
           "latency": "bench.bench_latency", "replication": "bench.bench_replication"}


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        print(f"\n== {name} ==", flush=True)
        module = importlib.import_module(BENCHES[name])
        sys.argv = [module.__name__]
        module.main()


if __name__ == "__main__":
    main()
