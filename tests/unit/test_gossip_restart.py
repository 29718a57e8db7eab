"""A member back from a restart (higher incarnation after missed beats) gets a fresh
silence window and a redialled subscription (brief H13, churn with real processes)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.detector import Detector, DetectorConfig
from gossip.membership import Membership, SelfInfo, Subscribe, Unsubscribe
from gossip.messages import Addresses, Alive, Dead, Push

CFG = DetectorConfig()


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


@given(gaps=st.lists(st.floats(0.5, 2.0), min_size=0, max_size=20),
       silence=st.floats(0.0, 30.0))
def test_a_restart_after_a_missed_beat_gets_a_full_window(gaps: list[float],
                                                          silence: float) -> None:
    d = Detector(CFG)
    d.watch("a", 0.0)
    t = 0.0
    for g in gaps:
        t += g
        d.heard("a", t)
        d.due(t)
    now = t + silence
    d.due(now)  # a doubt may have begun (or timed out into a suspicion)
    # `now - t`, not `silence`: the detector sees the silence as the clock's difference,
    # which can round above the interval when `silence` is exactly it.
    was_quiet = now - t > CFG.interval or d.in_doubt("a")
    assert d.restarted("a", now) == was_quiet
    if was_quiet:
        assert not d.in_doubt("a")
        assert d.due(now + CFG.window_min - 1e-6) == ([], [])
        assert d.silent_for("a", now) == 0.0
    assert not d.restarted("b", now), "nobody watched: nothing to restart"


def _follower() -> tuple[Membership, float]:
    m = Membership(SelfInfo("me", "east", addr("me"), 1), GossipConfig.lan(), random.Random(1))
    m.on_message(Push("x", 1, (Alive("x", 5, "east", addr("x")),)), 0.0)
    assert Subscribe(addr("x").gossip) in m.tick(0.1)
    return m, 0.1


def test_alive_at_a_higher_incarnation_after_silence_redials_the_publisher() -> None:
    m, _ = _follower()
    out = m.on_message(Push("y", 1, (Alive("x", 9, "east", addr("x")),)), 2.5)
    g = addr("x").gossip
    assert out.index(Unsubscribe(g)) < out.index(Subscribe(g))
    assert not m.detector.in_doubt("x") and m.detector.silent_for("x", 2.5) == 0.0


def test_alive_at_a_higher_incarnation_while_beating_keeps_the_subscription() -> None:
    m, _ = _follower()
    out = m.on_message(Push("y", 1, (Alive("x", 6, "east", addr("x")),)), 0.5)
    assert not [a for a in out if isinstance(a, Subscribe | Unsubscribe)]


def test_a_dead_member_still_followed_that_comes_back_is_redialled() -> None:
    """`dead_follow` keeps the subscription of a member we declared dead; its return at a
    higher incarnation must redial it, or its first beats wait for ZeroMQ's backoff."""
    m, _ = _follower()
    m.on_message(Push("y", 1, (Dead("x", 5, "y"),)), 0.2)
    m.tick(0.3)
    assert m.follows("x") and m.member("x") is not None
    out = m.on_message(Push("y", 2, (Alive("x", 9, "east", addr("x")),)), 0.4)
    g = addr("x").gossip
    assert out.index(Unsubscribe(g)) < out.index(Subscribe(g))
    m.tick(0.5)
    assert "x" in m.detector.watched() and not m.detector.in_doubt("x")
