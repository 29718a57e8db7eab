"""The simulator at small sizes: convergence, detection, no false deaths at 1% loss.

Every time here is simulated (the manual clock), never wall-clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

from gossip.config import GossipConfig
from gossip.sim import NetConfig, Sim, scenario

LOSSY = NetConfig(loss=0.01)


def test_figures_at_40_nodes_meet_the_targets() -> None:
    rep = scenario(40, seed=7, loss=0.01, steady=60.0)
    assert rep.join_s is not None and rep.join_s <= 2.0
    assert rep.dead_s is not None and rep.dead_s <= 3.0
    assert rep.suspect_s is not None and rep.suspect_s <= rep.dead_s
    assert rep.false_suspicions == 0 and rep.false_deaths == 0
    assert 0 < rep.kbit_in_max <= 328


def test_same_seed_same_run() -> None:
    assert scenario(20, seed=3, steady=5.0) == scenario(20, seed=3, steady=5.0)


def test_same_seed_same_run_whatever_the_hash_seed() -> None:
    """A seed names one run, in any process: string hashing (PYTHONHASHSEED, random per
    process) must not pick the order of anything that draws from the rng. It did, and
    the 40-node figures above failed in one CI run in a few dozen."""
    code = ("from gossip.sim import scenario; "
            "print(repr(scenario(20, seed=3, loss=0.05, steady=5.0)))")
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=60).stdout
        for hash_seed in ("1", "2", "3")
    }
    assert len(runs) == 1, runs


def test_two_datacenters_know_each_other_through_summaries() -> None:
    sim = Sim(11, net=LOSSY)
    sim.bootstrap(30, dcs=2)
    sim.run(5.0)
    for nid in sim.up_ids():
        core = sim.nodes[nid].core
        other = "dc2" if core.me.dc == "dc1" else "dc1"
        summary = core.dc_summaries().get(other)
        assert summary is not None and summary.alive == 15
        assert len(summary.load) == 3


def test_joiner_is_followed_and_its_crash_detected() -> None:
    sim = Sim(5, net=LOSSY)
    sim.bootstrap(30)
    sim.run(3.0)
    sim.join("late", "n0007")
    assert sim.run(2.0, lambda: sim.all_see("late", ("alive",)))
    sim.run(3.0)
    observers = [nid for nid in sim.up_ids()
                 if "late" in sim.nodes[nid].core.publishers_to_follow()]
    assert len(observers) >= GossipConfig.lan().successors
    t0 = sim.now
    sim.crash("late")
    assert sim.run(3.0, lambda: sim.all_see("late", ("dead",)))
    assert sim.now - t0 <= 3.0


def test_restart_comes_back_with_a_higher_incarnation() -> None:
    sim = Sim(6, net=LOSSY)
    sim.bootstrap(25)
    sim.run(3.0)
    sim.crash("n0003")
    assert sim.run(5.0, lambda: sim.all_see("n0003", ("dead",)))
    sim.join("n0003", "n0010", incarnation=1)
    assert sim.run(3.0, lambda: sim.all_see("n0003", ("alive",), incarnation=1))


def test_leave_is_seen_everywhere_within_an_interval() -> None:
    sim = Sim(8, net=LOSSY)
    sim.bootstrap(30)
    sim.run(3.0)
    sim.leave("n0012")
    assert sim.run(1.0, lambda: sim.all_see("n0012", ("left",)))
    sim.crash("n0012")  # the process exits after its goodbye
    sim.run(10.0)
    assert sim.all_see("n0012", ("left",)), "left stays left, not dead"


def test_partition_heals() -> None:
    sim = Sim(9, net=LOSSY)
    sim.bootstrap(30)
    sim.run(3.0)
    ids = sorted(sim.nodes)
    a, b = set(ids[:15]), set(ids[15:])
    sim.partition(a, b)
    assert sim.run(10.0, lambda: all(sim.state_of(x, ids[-1]) == "dead" for x in a))
    sim.heal()
    assert sim.run(20.0, lambda: all(sim.all_see(x, ("alive",)) for x in ids))


def test_no_false_death_under_heavy_jitter() -> None:
    """Latency of 2..150 ms with 1% loss: slow links are doubted but never buried."""
    sim = Sim(12, net=NetConfig(latency=0.002, jitter=0.15, loss=0.01))
    sim.bootstrap(30)
    sim.run(60.0)
    assert all(sim.all_see(x, ("alive",)) for x in sim.up_ids())
    assert sum(n.core.stats["suspected"] for n in sim.nodes.values()) == 0
    assert sum(n.core.stats["probes"] for n in sim.nodes.values()) > 0, "doubts did happen"


def test_a_crash_is_detected_despite_cpu_stalls_and_bursty_delivery() -> None:
    """Issue 4 replayed: 4 nodes, the loopback preset, nodes freezing for up to 0.1 s.

    Observers' windows then expire at different times; when an Ack let a node vouch
    for the crashed member in turn, about half of these seeds never declared it dead.
    """
    net = NetConfig(latency=0.001, jitter=0.005, tick=0.02, stall=0.1, stall_every=0.3)
    missed = []
    for seed in range(12):
        sim = Sim(seed, GossipConfig.local(), net)
        sim.bootstrap(4)
        sim.run(3.0)
        sim.crash("n0003")
        if not sim.run(8.0, partial(sim.all_see, "n0003", ("dead",))):
            missed.append(seed)
    assert missed == []


def test_stalled_nodes_catch_up_on_what_arrived() -> None:
    """A stall delays reading, it loses nothing: everyone still converges and agrees."""
    sim = Sim(4, GossipConfig.local(), NetConfig(tick=0.02, stall=0.1, stall_every=0.5))
    sim.bootstrap(8)
    sim.join("late", "n0002")
    assert sim.run(5.0, lambda: sim.all_see("late", ("alive",)))
    assert len({sim.nodes[x].core.digest() for x in sim.up_ids()}) == 1


def test_sixteen_nodes_see_a_crash_dead_within_the_detection_bound() -> None:
    """Issue 4's real-socket figure, simulated: observers tick at their own phases, so
    the first suspicion floods before the others' probes time out; their own failed
    probes must still count as confirmations, or the lone first observer's
    ``suspicion_max`` decides (5-6 s instead of about 2)."""
    bound = GossipConfig.lan().detection_bound()
    for seed in range(4):
        rep = scenario(16, seed=seed, loss=0.01, steady=5.0, trials=2)
        assert rep.dead_s is not None and rep.dead_s <= bound, (seed, rep)
        assert rep.false_deaths == 0

