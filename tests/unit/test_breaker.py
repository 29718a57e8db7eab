"""Per-peer circuit breaking with an injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.breaker import BreakerConfig, Breakers


def test_opens_after_consecutive_failures_and_half_opens_later() -> None:
    b = Breakers(BreakerConfig(failures=3, open_for=2.0))
    for t in range(3):
        assert b.allows("p", float(t))
        b.failure("p", float(t))
    assert not b.allows("p", 3.0)
    assert b.is_open("p", 3.0)
    assert b.allows("p", 4.5)  # half-open trial
    assert not b.allows("p", 4.6)  # only one trial at a time
    b.success("p")
    assert b.allows("p", 4.7) and not b.is_open("p", 4.7)


def test_failed_trial_doubles_the_open_period() -> None:
    b = Breakers(BreakerConfig(failures=1, open_for=1.0, max_open_for=3.0))
    b.failure("p", 0.0)
    assert b.allows("p", 1.0)
    b.failure("p", 1.0)  # trial failed: open for 2 s now
    assert not b.allows("p", 2.5)
    assert b.allows("p", 3.0)
    b.failure("p", 3.0)  # 4 s capped at 3 s
    assert not b.allows("p", 5.9)
    assert b.allows("p", 6.0)


def test_success_resets_the_count() -> None:
    b = Breakers(BreakerConfig(failures=2))
    b.failure("p", 0.0)
    b.success("p")
    b.failure("p", 1.0)
    assert b.allows("p", 1.0)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 0.5)), max_size=60))
def test_never_allows_two_trials_while_open(events: list[tuple[bool, float]]) -> None:
    b = Breakers(BreakerConfig(failures=2, open_for=1.0))
    now = 0.0
    for ok, dt in events:
        now += dt
        if b.allows("p", now):
            if ok:
                b.success("p")
            else:
                b.failure("p", now)
        # while open and before the period ends nothing is let through
        s = b._peers.get("p")
        if s is not None and s.opened_at is not None and now - s.opened_at < s.open_for:
            assert not b.allows("p", now)
