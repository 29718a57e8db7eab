"""Membership under churn, with real `scale0 node` processes on loopback (brief H13).

1. Churn: twelve nodes at the `local` preset; ten times a random node is killed
   (kill -9) and started again on the same id and ports a few hundred ms later.
   Once the churn stops, every node must list the same twelve ids, each once, all
   alive (none stuck suspect), within the preset's detection bound plus a few
   intervals and the digest grace; each restarted node at a higher incarnation
   than before the churn.
2. Seeds: a node given a dead seed first and a live one second joins through the
   live one; a node whose only seed is down at its start joins once the seed
   comes up (the agent retries with backoff).
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode, unique_port
from testkit.procs import wait_until

from gossip.config import GossipConfig

pytestmark = pytest.mark.e2e

N = 12
PRESET = "local"
CFG = GossipConfig.local()
SLACK = 2.0  # twelve Python processes on two shared cores
# A restarted node is news at once; a missed beat is repaired by the digest.
CONVERGE_S = CFG.detection_bound() + 5 * CFG.interval + CFG.digest_grace + SLACK
CHURNS = 10
# The victims and pauses replay from this seed (another one: SCALE0_CHURN_SEED=N).
CHURN_SEED = int(os.environ.get("SCALE0_CHURN_SEED", "13"))


def _rows(node: MeshNode) -> list[tuple[str, str, int]]:
    return [(r["id"], r["state"], int(r["incarnation"])) for r in node.mesh().get("nodes", [])]


class Cluster:
    def __init__(self, tmp: Path, n: int) -> None:
        first = MeshNode(tmp, "c00", extra=["--cache", "off"], preset=PRESET)
        self.nodes = [first] + [
            MeshNode(tmp, f"c{i:02d}", seed=first.peer, extra=["--cache", "off"], preset=PRESET)
            for i in range(1, n)]
        self.pool = ThreadPoolExecutor(max_workers=8)

    def views(self) -> list[list[tuple[str, str, int]]]:
        return list(self.pool.map(_rows, self.nodes))

    def converged(self) -> bool:
        names = sorted(n.name for n in self.nodes)
        for rows in self.views():
            ids = sorted(r[0] for r in rows)
            if ids != names or any(state != "alive" for _, state, _ in rows):
                return False
        return True

    def none_lost(self) -> bool:
        """Every node lists everyone, nobody dead or left (a moment's suspicion of a
        starved process on a loaded machine is tolerated: it is refuted)."""
        names = sorted(n.name for n in self.nodes)
        return all(sorted(r[0] for r in rows) == names
                   and all(state in ("alive", "suspect") for _, state, _ in rows)
                   for rows in self.views())

    def odd(self) -> dict[str, list[tuple[str, str, int]]]:
        """Per node, its rows that are not alive and the ids it lacks (state 'missing')."""
        names = {n.name for n in self.nodes}
        out = {}
        for n, rows in zip(self.nodes, self.views(), strict=True):
            bad = [r for r in rows if r[1] != "alive"]
            bad += [(i, "missing", 0) for i in sorted(names - {r[0] for r in rows})]
            if bad:
                out[n.name] = bad
        return out

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        self.pool.shutdown()

    def logs(self) -> str:
        return "\n".join(n.log_tail(1500) for n in self.nodes)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, N)
    try:
        for n in c.nodes:
            n.start()
        wait_until(lambda: all(c.pool.map(lambda n: bool(n.health()), c.nodes)), timeout=60,
                   interval=0.1, what=f"{N} admin listeners")
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_churn_of_ten_kill9_restarts_converges_to_one_alive_set(cluster: Cluster) -> None:
    wait_until(cluster.converged, timeout=CONVERGE_S + 10, interval=0.1, what="initial mesh")
    before = {rid: inc for rid, _, inc in _rows(cluster.nodes[0])}
    rng = random.Random(CHURN_SEED)
    restarted: set[str] = set()
    for _ in range(CHURNS):
        # Anyone, the seed c00 too (it restarts knowing nobody: the others' digest
        # mismatch and snapshot requests teach it), maybe one still starting.
        victim = rng.choice(cluster.nodes)
        assert victim.proc is not None
        victim.proc.kill9()
        # a few hundred ms down, then a few hundred ms to the next kill: the churn's
        # own rhythm, not a wait for anything
        time.sleep(rng.uniform(0.2, 0.5))
        victim.start()
        restarted.add(victim.name)
        time.sleep(rng.uniform(0.2, 0.5))
    wait_until(lambda: all(cluster.pool.map(lambda n: bool(n.health()), cluster.nodes)),
               timeout=60, interval=0.1, what="every node listening again")
    stopped = time.monotonic()
    try:
        wait_until(cluster.converged, timeout=CONVERGE_S, interval=0.05,
                   what="the same alive set everywhere after the churn")
    except AssertionError:
        print(cluster.odd())
        raise
    print(f"\nchurn converged in {time.monotonic() - stopped:.2f}s (bound {CONVERGE_S:.2f})")
    for rows in cluster.views():
        incs = {rid: inc for rid, _, inc in rows}
        for rid in restarted:
            assert incs[rid] > before[rid], (rid, incs[rid], before[rid])
    # Stable: through a window in which a stale suspicion would surface, nobody doubts.
    watch_until = time.monotonic() + CFG.window_max + CFG.probe_timeout + CFG.suspicion_max
    rounds = 0
    while time.monotonic() < watch_until:
        assert cluster.none_lost(), cluster.odd()
        rounds += 1
    assert rounds > 0
    wait_until(cluster.converged, timeout=CONVERGE_S, interval=0.05, what="all alive at the end")


def _each_sees_both_alive(a: MeshNode, b: MeshNode) -> bool:
    both = {a.name, b.name}
    return all({k for k, (s, _) in n.views().items() if s == "alive"} == both for n in (a, b))


def test_a_dead_seed_first_and_a_live_one_second_joins_through_the_live(tmp_path: Path) -> None:
    live = MeshNode(tmp_path, "s-live", extra=["--cache", "off"], preset=PRESET)
    dead = f"tcp://127.0.0.1:{unique_port()}"  # nobody listens there
    joiner = MeshNode(tmp_path, "s-join", preset=PRESET,
                      extra=["--cache", "off", "--seed", dead, "--seed", live.peer])
    try:
        live.start()
        wait_until(live.health, timeout=30, what="the live seed")
        joiner.start()
        joined = functools.partial(_each_sees_both_alive, live, joiner)
        wait_until(joined, timeout=15, interval=0.05, what="joined through the live seed")
    finally:
        joiner.stop()
        live.stop()


def test_a_seed_down_at_start_is_joined_once_it_comes_up(tmp_path: Path) -> None:
    seed = MeshNode(tmp_path, "l-seed", extra=["--cache", "off"], preset=PRESET)
    joiner = MeshNode(tmp_path, "l-join", seed=seed.peer, extra=["--cache", "off"],
                      preset=PRESET)
    try:
        joiner.start()
        wait_until(joiner.health, timeout=30, what="the joiner")
        # Let a few retries fail (backoff 0.25, 0.5, 1 s ...): bounded, not synchronisation.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert set(joiner.views()) == {"l-join"}
            time.sleep(0.1)
        seed.start()
        joined = functools.partial(_each_sees_both_alive, seed, joiner)
        # The backoff had reached at most ~2 s (jittered x1.5 = 3 s) when the seed came up.
        wait_until(joined, timeout=15, interval=0.05, what="joined once the seed came up")
    finally:
        joiner.stop()
        seed.stop()


def test_a_node_declared_dead_then_restarted_stays_alive(cluster: Cluster) -> None:
    """Dead everywhere first (its observers keep following it: `dead_follow`), then back
    on the same ports: its first beats must not wait for ZeroMQ's reconnect backoff
    (grown to seconds while it was down), or it is suspected again moments after."""
    wait_until(cluster.converged, timeout=CONVERGE_S + 10, interval=0.1, what="initial mesh")
    victim = cluster.nodes[7]
    others = [n for n in cluster.nodes if n is not victim]
    assert victim.proc is not None
    victim.proc.kill9()
    wait_until(lambda: all(cluster.pool.map(lambda n: n.views()[victim.name][0] == "dead",
                                            others)),
               timeout=CFG.detection_bound() + SLACK, interval=0.05, what="dead everywhere")
    victim.start()
    wait_until(cluster.converged, timeout=CONVERGE_S, interval=0.05, what="back everywhere")
    watch_until = time.monotonic() + CFG.window_max + CFG.probe_timeout + CFG.suspicion_max
    while time.monotonic() < watch_until:
        assert cluster.none_lost(), cluster.odd()
    wait_until(cluster.converged, timeout=CONVERGE_S, interval=0.05, what="all alive at the end")
