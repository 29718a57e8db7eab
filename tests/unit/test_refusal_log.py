"""Which refused CurveZMQ handshakes get a log line: bounded under any flood, each
line saying how many were left out before it, none lost from the count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.curve import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_client_per_interval_then_the_count_of_the_rest() -> None:
    clock = Clock()
    rl = RefusalLog(interval=60.0, burst=10, clock=clock)
    assert rl.refused("10.0.0.7", "KEY") == 0
    for _ in range(500):  # a worker retrying fast
        clock.now += 0.1
        assert rl.refused("10.0.0.7", "KEY") is None
    clock.now += 10.5  # a minute since its line
    assert rl.refused("10.0.0.7", "KEY") == 500


def test_another_worker_gets_its_own_line() -> None:
    rl = RefusalLog(clock=Clock())
    assert rl.refused("10.0.0.7", "KEY-A") == 0
    assert rl.refused("10.0.0.7", "KEY-B") == 0
    assert rl.refused("10.0.0.8", "KEY-A") == 0


def test_a_flood_of_distinct_keys_gets_burst_lines_per_interval() -> None:
    clock = Clock()
    rl = RefusalLog(interval=60.0, burst=10, clock=clock)
    logged = sum(rl.refused("10.6.6.6", f"K{i}") is not None for i in range(10_000))
    assert logged == 10
    assert len(rl._last) <= 4 * rl.burst  # memory stays bounded as well


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RefusalLog(interval=0)
    with pytest.raises(ValueError):
        RefusalLog(burst=0)


events = st.lists(st.tuples(st.floats(0, 30), st.sampled_from(["a1", "a2", "a3"]),
                            st.integers(0, 30).map(lambda i: f"K{i}")), max_size=300)


@given(events, st.integers(1, 5))
def test_lines_are_bounded_and_every_refusal_is_accounted_for(
        evs: list[tuple[float, str, str]], burst: int) -> None:
    clock = Clock()
    interval = 60.0
    rl = RefusalLog(interval=interval, burst=burst, clock=clock)
    lines: list[tuple[float, str, str]] = []
    reported = 0
    for step, address, key in evs:
        clock.now += step
        said = rl.refused(address, key)
        if said is not None:
            lines.append((clock.now, address, key))
            reported += said
    # Each refusal is either a line or counted in a later line or still pending.
    assert len(lines) + reported + rl.unlogged == len(evs)
    for i, (t, address, key) in enumerate(lines):
        recent = [x for x in lines[:i] if t - x[0] < interval]
        assert len(recent) < 2 * burst  # never more than two windows' budgets in an interval
        assert (address, key) not in {(a, k) for _, a, k in recent}
    assert len(rl._last) <= 4 * burst
