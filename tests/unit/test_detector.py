"""The failure detector: doubt -> probe -> suspect -> dead, with an injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossip.detector import Detector, DetectorConfig

CFG = DetectorConfig()  # LAN: 1 s beats, window 1.25..3 s, probe 0.4 s, suspicion 0.4..4 s


def beating(d: Detector, member: str, until: float, gap: float = 1.0) -> float:
    t = 0.0
    while t + gap <= until:
        t += gap
        d.heard(member, t)
        assert d.due(t) == ([], [])
    return t


def test_regular_beats_never_raise_doubt() -> None:
    d = Detector(CFG)
    d.watch("a", 0.0)
    beating(d, "a", 100.0)


def test_silence_is_probed_then_suspected() -> None:
    d = Detector(CFG)
    d.watch("a", 0.0)
    last = beating(d, "a", 20.0)
    w = d.window("a")
    assert CFG.window_min <= w <= CFG.window_max
    assert d.due(last + w - 0.01) == ([], [])
    assert d.due(last + w) == (["a"], [])
    assert d.in_doubt("a")
    assert d.due(last + w + CFG.probe_timeout - 0.01) == ([], [])
    assert d.due(last + w + CFG.probe_timeout) == ([], ["a"])
    assert d.due(last + 100) == ([], []), "a suspect is reported once"


def test_a_beat_or_an_ack_ends_the_doubt() -> None:
    for clear in ("heard", "acked"):
        d = Detector(CFG)
        d.watch("a", 0.0)
        last = beating(d, "a", 10.0)
        t = last + d.window("a")
        assert d.due(t) == (["a"], [])
        nonce = d.nonce("a")
        getattr(d, clear)("a", t + 0.1)
        assert not d.in_doubt("a")
        assert d.due(t + CFG.probe_timeout + 0.1) == ([], [])
        d.due(t + 0.1 + d.window("a") + 0.01)
        assert d.nonce("a") == nonce + 1, "each doubt gets a fresh nonce"


def test_unwatched_members_are_ignored() -> None:
    d = Detector(CFG)
    d.heard("ghost", 1.0)
    d.acked("ghost", 1.0)
    assert d.due(100.0) == ([], [])
    assert d.silent_for("ghost", 5.0) is None
    d.watch("a", 0.0)
    d.unwatch("a")
    assert d.due(100.0) == ([], [])


@given(st.lists(st.floats(0.5, 1.2), min_size=1, max_size=60))
def test_jitter_within_the_minimum_window_never_doubts(gaps: list[float]) -> None:
    d = Detector(CFG)
    d.watch("a", 0.0)
    t = 0.0
    for g in gaps:
        assert d.due(t + g - 1e-9) == ([], [])
        t += g
        d.heard("a", t)


@given(st.lists(st.floats(0.01, 10.0), min_size=0, max_size=40))
def test_silence_past_the_maximum_window_always_doubts(gaps: list[float]) -> None:
    d = Detector(CFG)
    d.watch("a", 0.0)
    t = 0.0
    for g in gaps:
        d.due(t + g - 1e-9)
        t += g
        d.heard("a", t)
    assert CFG.window_min <= d.window("a") <= CFG.window_max
    probe, _ = d.due(t + CFG.window_max)
    assert probe == ["a"]


@given(st.lists(st.text(min_size=1, max_size=3), max_size=10))
def test_lifeguard_timeout_shrinks_with_confirmations(observers: list[str]) -> None:
    d = Detector(CFG)
    last = CFG.suspicion_max
    for o in observers:
        d.suspect("x", 1, o, 0.0)
        t = d.timeout("x")
        assert CFG.suspicion_min <= t <= last
        last = t
    if len(set(observers)) > CFG.confirmations:
        assert d.timeout("x") == CFG.suspicion_min
    if len(set(observers)) == 1:
        assert d.timeout("x") == CFG.suspicion_max


def test_suspicion_expires_once_and_newer_incarnation_restarts_it() -> None:
    d = Detector(CFG)
    d.suspect("x", 1, "a", 0.0)
    assert d.expired(CFG.suspicion_max - 0.01) == []
    d.suspect("x", 2, "b", 1.0)  # a newer suspicion replaces the older
    assert d.expired(CFG.suspicion_max + 0.5) == []
    assert d.expired(1.0 + CFG.suspicion_max) == [("x", 2)]
    assert d.expired(100.0) == []
    assert not d.suspected("x")


def test_confirmed_suspicion_expires_at_the_minimum() -> None:
    d = Detector(CFG)
    for o in "abcd":
        d.suspect("x", 1, o, 0.0)
    assert d.expired(CFG.suspicion_min) == [("x", 1)]


def test_clear_drops_the_timer() -> None:
    d = Detector(CFG)
    d.suspect("x", 1, "a", 0.0)
    d.clear("x")
    assert d.expired(100.0) == []


def test_a_suspect_heard_again_is_watched_again() -> None:
    """Every watch reported suspect, then heard: silence must be noticed anew."""
    d = Detector(CFG)
    d.watch("a", 0.0)
    assert d.due(CFG.window_min) == (["a"], [])
    assert d.due(CFG.window_min + CFG.probe_timeout) == ([], ["a"])
    d.heard("a", 10.0)
    assert d.due(10.0 + CFG.window_max) == (["a"], [])


def test_an_ack_ends_the_doubt_but_is_not_first_hand() -> None:
    """acked() restarts the window; silent_for() still counts from the last real message."""
    d = Detector(CFG)
    d.watch("a", 0.0)
    last = beating(d, "a", 10.0)
    t = last + d.window("a")
    assert d.due(t) == (["a"], [])
    d.acked("a", t)
    assert not d.in_doubt("a")
    assert d.due(t + d.window("a") - 0.01) == ([], []), "the window restarted at the Ack"
    assert d.silent_for("a", t + 0.01) == t + 0.01 - last, "but nothing was heard from a"
    d.heard("a", t + 0.5)
    assert d.silent_for("a", t + 0.5) == 0.0


events = st.lists(st.tuples(st.sampled_from(["heard", "acked", "due"]), st.floats(0.0, 3.0)),
                  max_size=50)


@given(events)
def test_silence_counts_only_messages_from_the_member(steps: list[tuple[str, float]]) -> None:
    """Whatever mix of beats, Acks and scans: silent_for == time since the last beat."""
    d = Detector(CFG)
    d.watch("a", 0.0)
    now = last_heard = 0.0
    for what, dt in steps:
        now += dt
        if what == "heard":
            d.heard("a", now)
            last_heard = now
        elif what == "acked":
            d.acked("a", now)
        else:
            d.due(now)
        assert d.silent_for("a", now) == now - last_heard


@given(st.lists(st.floats(0.5, 1.5), min_size=2, max_size=16), st.integers(2, 6),
       st.lists(st.floats(0.0, 0.5), min_size=6, max_size=6))
def test_observers_that_only_pass_on_first_hand_word_agree_on_a_crash(
        gaps: list[float], n: int, lags: list[float]) -> None:
    """n observers of a member that stops: however their windows differ, each one's
    doubts end in a suspicion within a bounded time, when each vouches (answers a probe)
    only while its own first-hand silence is inside its own window."""
    ds = [Detector(CFG) for _ in range(n)]
    t = 0.0
    for d in ds:
        d.watch("a", 0.0)
    for i, g in enumerate(gaps):  # a jittery history, seen a little differently by each
        t += g
        for k, d in enumerate(ds):
            d.heard("a", t + lags[k] * (i % 2))
    crash = t + max(lags)
    suspected: set[int] = set()
    now = crash
    while len(suspected) < n and now < crash + 30:
        now += 0.05
        for k, d in enumerate(ds):
            probe, suspect = d.due(now)
            if probe and any(  # any other observer vouches at once: the doubt is over
                    not o.in_doubt("a") and (o.silent_for("a", now) or 0.0) < o.window("a")
                    for j, o in enumerate(ds) if j != k):
                d.acked("a", now)
            suspected.update([k] if suspect else [])
    bound = CFG.window_max * 2 + CFG.probe_timeout + 0.2
    assert len(suspected) == n and now - crash <= bound


@given(st.lists(st.text(min_size=1, max_size=3), max_size=10), st.integers(-3, 10))
def test_k_is_capped_by_the_confirmations_a_mesh_can_give(observers: list[str],
                                                           possible: int) -> None:
    """A member with few observers reaches the minimum once all of them agree; one
    observer alone (nobody else could confirm) still waits the maximum (issue 4)."""
    d = Detector(CFG)
    last = CFG.suspicion_max
    for o in observers:
        d.suspect("x", 1, o, 0.0, possible)
        t = d.timeout("x")
        assert CFG.suspicion_min <= t <= last
        last = t
    k = max(1, min(CFG.confirmations, possible))
    distinct = len(set(observers))
    if distinct > k:
        assert d.timeout("x") == CFG.suspicion_min
    if distinct <= 1:
        assert d.timeout("x") == CFG.suspicion_max
