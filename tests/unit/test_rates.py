"""Sliding-window rates with a manual clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.rates import RateMeter, ShareMeter


def test_rate_counts_events_in_the_window_and_forgets_old_ones() -> None:
    m = RateMeter(window=10, bucket=1)
    for t in range(10):
        m.add(t + 0.5, 2)
    assert m.total(9.9) == 20
    assert m.rate(9.9) == 2.0
    assert m.total(15.0) == 8  # buckets 0..5 aged out
    assert m.total(100.0) == 0


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 10)), max_size=50))
def test_total_never_exceeds_what_was_added_nor_goes_negative(
    events: list[tuple[float, int]],
) -> None:
    m = RateMeter(window=3, bucket=0.5)
    now, added = 0.0, 0
    for dt, n in events:
        now += dt
        m.add(now, n)
        added += n
        assert 0 <= m.total(now) <= added


def test_share_meter() -> None:
    s = ShareMeter(window=10)
    for i in range(10):
        s.add(float(i), marked=i % 4 == 0)
    assert abs(s.share(9.0) - 0.3) < 1e-9
    assert s.share(50.0) == 0.0
