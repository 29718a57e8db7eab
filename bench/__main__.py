"""`make bench`: run every benchmark in turn; each prints its own ratios.

python -m bench [NAME ...]            every benchmark, or the ones named
python -m bench NAME [OPTION ...]     one benchmark with its own options (NAME --help)
"""

from __future__ import annotations

import importlib
import sys

BENCHES = {"proxy": "bench.bench_proxy", "stores": "bench.bench_stores",
           "gossip": "bench.bench_gossip_sim",
           "overflow": "bench.bench_overflow", "cache": "bench.bench_cache",
           "processes": "bench.bench_processes", "dispatch": "bench.bench_dispatch",
           "latency": "bench.bench_latency", "floor": "bench.bench_floor",
           "replication": "bench.bench_replication",
           "https": "bench.bench_https", "request": "bench.bench_request",
           "timeline": "bench.bench_timeline", "forward": "bench.bench_forward"}


def main() -> None:
    args = sys.argv[1:]
    cut = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:cut] or list(BENCHES), args[cut:]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark {', '.join(unknown)}; "
                         f"one of: {', '.join(BENCHES)}")
    if options and len(names) != 1:
        raise SystemExit("options go to one benchmark: python -m bench NAME [OPTION ...]")
    for name in names:
        print(f"\n== {name} ==", flush=True)
        module = importlib.import_module(BENCHES[name])
        sys.argv = [module.__name__, *options]
        module.main()


if __name__ == "__main__":
    main()
