"""Gossip membership at full size: 1,000 simulated nodes, figures against the targets.

python -m bench.bench_gossip_sim [--nodes 1000] [--steady 30] [--trials 3] [--seed 1]

Runs gossip.sim.scenario (real membership cores, real codec sizes, simulated
network with 1% loss) and prints the figures next to the targets of issue 4 and
next to the reference measured in the same run: the bandwidth every node would
need if it followed every other node (mean beat size x (N-1) per second).
All times are simulated seconds; the run is bounded (simulated time is fixed,
wall time is printed).
"""

from __future__ import annotations

import argparse
import time

from gossip.sim import NetConfig, scenario

TARGETS = {"join_s": 2.0, "dead_s": 3.0, "kbit": 328.0}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_gossip_sim")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--steady", type=float, default=30.0, help="simulated seconds at 1%% loss")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency", type=float, default=0.002)
    p.add_argument("--jitter", type=float, default=0.001)
    p.add_argument("--dcs", type=int, default=1)
    args = p.parse_args()
    started = time.monotonic()
    rep = scenario(args.nodes, seed=args.seed, loss=0.01, steady=args.steady, dcs=args.dcs,
                   net=NetConfig(latency=args.latency, jitter=args.jitter), trials=args.trials)
    wall = time.monotonic() - started
    print("\n".join(rep.lines()))
    naive = rep.beat_bytes * 8 * (rep.nodes - 1) / 1000
    print(f"bandwidth vs follow-everyone reference: {rep.kbit_in_max / naive:.2f}x "
          f"({rep.kbit_in_max:.0f} / {naive:.0f} kbit/s)")
    ok = (rep.join_s is not None and rep.join_s <= TARGETS["join_s"]
          and rep.dead_s is not None and rep.dead_s <= TARGETS["dead_s"]
          and rep.false_suspicions == 0 and rep.kbit_in_max <= TARGETS["kbit"])
    print(f"targets {'MET' if ok else 'MISSED'}; wall time {wall:.0f} s "
          f"(seed {args.seed}, latency {args.latency * 1000:.0f} ms + up to "
          f"{args.jitter * 1000:.0f} ms jitter, {args.dcs} dc)")


if __name__ == "__main__":
    main()
