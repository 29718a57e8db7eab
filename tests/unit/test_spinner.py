"""The busy-poll spinner's decisions (SpinGovernor) and its /proc/stat decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.spinner import WINDOW, Mode, SpinGovernor, SpinPolicy, busy_ticks

POLICY = SpinPolicy()
shares = st.floats(min_value=0.0, max_value=1.0)
busy = st.floats(min_value=0.0, max_value=POLICY.busy_share, exclude_max=True)
middling = st.floats(min_value=POLICY.busy_share, max_value=POLICY.quiet_share,
                     exclude_max=True)
quiet = st.floats(min_value=POLICY.quiet_share, max_value=1.0)


@given(st.lists(shares, max_size=50), busy, st.floats(min_value=0, max_value=1e6))
def test_a_busy_window_backs_off_for_back_off_seconds(before: list[float], share: float,
                                                      start: float) -> None:
    governor = SpinGovernor(POLICY)
    now = start
    for earlier in before:  # whatever came before, as long as it was spinning
        if governor.mode is not Mode.SPIN:
            break
        now += WINDOW
        governor.spun(now, earlier)
    if governor.mode is not Mode.SPIN:
        return
    now += WINDOW
    assert governor.spun(now, share) is Mode.BACK_OFF
    assert governor.wake_at == now + POLICY.back_off
    assert governor.slept(now + POLICY.back_off - 0.001) is Mode.BACK_OFF  # woken early
    assert governor.slept(now + POLICY.back_off) is Mode.SPIN


@given(st.lists(middling, min_size=1, max_size=400))
def test_a_cpu_shared_with_traffic_keeps_spinning(windows: list[float]) -> None:
    """Neither busy nor quiet (the traffic busy-polling is for): it never stops."""
    governor = SpinGovernor(POLICY)
    for i, share in enumerate(windows):
        assert governor.spun(i * WINDOW, share) is Mode.SPIN


@given(st.lists(quiet, min_size=1, max_size=300), st.floats(min_value=0, max_value=1e6))
def test_it_rests_after_quiet_for_seconds_of_quiet_windows_and_not_before(
        windows: list[float], start: float) -> None:
    governor = SpinGovernor(POLICY)
    for i, share in enumerate(windows):
        now = start + (i + 1) * WINDOW
        first = start + WINDOW
        expected = Mode.REST if now - first >= POLICY.quiet_for else Mode.SPIN
        assert governor.spun(now, share) is expected
        if expected is Mode.REST:
            return


def expected_modes(windows: list[float], policy: SpinPolicy) -> list[Mode]:
    """The model: back-to-back periods of `quiet_for` seconds, each first window starting
    one; a period whose windows' mean share is `quiet_share` or more ends in a rest.
    (No window here is busy: those back off, as tested above.)"""
    modes: list[Mode] = []
    since: float | None = None
    shares: list[float] = []
    for i, share in enumerate(windows):
        now = (i + 1) * WINDOW
        if since is None:
            since = now
        shares.append(share)
        if now - since >= policy.quiet_for:
            if sum(shares) / len(shares) >= policy.quiet_share:
                return [*modes, Mode.REST]
            since, shares = now, []
        modes.append(Mode.SPIN)
    return modes


@given(st.lists(st.one_of(middling, quiet), min_size=1, max_size=400))
def test_it_rests_when_a_periods_mean_share_is_quiet(windows: list[float]) -> None:
    """A timer's window of work (an idle node's beats) does not start the quiet time
    again; only the period's mean decides."""
    governor = SpinGovernor(POLICY)
    got = [governor.spun((i + 1) * WINDOW, share) for i, share in enumerate(windows)]
    want = expected_modes(windows, POLICY)
    assert got[:len(want)] == want


def test_an_idle_nodes_timers_do_not_keep_it_spinning() -> None:
    """One window in twenty at 0.9 (a beat's work): the mean is 0.995, so it rests."""
    governor = SpinGovernor(POLICY)
    modes = [governor.spun((i + 1) * WINDOW, 0.9 if i % 20 == 0 else 1.0)
             for i in range(int(POLICY.quiet_for / WINDOW) + 2)]
    assert modes[-1] is Mode.REST


@given(st.lists(quiet, min_size=1, max_size=200), busy, st.lists(quiet, min_size=1,
                                                                  max_size=200))
def test_a_back_off_starts_the_quiet_time_again(first: list[float], other: float,
                                                second: list[float]) -> None:
    governor = SpinGovernor(POLICY)
    now = 0.0
    for share in first:
        now += WINDOW
        if governor.spun(now, share) is Mode.REST:
            return  # rested before the busy window came: nothing to check here
    now += WINDOW
    assert governor.spun(now, other) is Mode.BACK_OFF
    now = governor.wake_at
    governor.slept(now)
    restarted = now + WINDOW
    for share in second:
        now += WINDOW
        mode = governor.spun(now, share)
        assert mode is (Mode.REST if now - restarted >= POLICY.quiet_for else Mode.SPIN)
        if mode is Mode.REST:
            return


@given(st.floats(min_value=0.0, max_value=1.0))
def test_a_resting_spinner_wakes_when_others_use_the_cpu(others: float) -> None:
    governor = SpinGovernor(SpinPolicy(quiet_for=0.0))
    governor.spun(0.0, 1.0)
    assert governor.spun(WINDOW, 1.0) is Mode.REST
    woken = others >= governor.policy.wake_share
    assert governor.rested(others) is (Mode.SPIN if woken else Mode.REST)


LINE = "cpu{n} {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0"
ticks = st.integers(min_value=0, max_value=2**62)


@given(st.integers(min_value=0, max_value=4095),
       st.tuples(*[ticks] * 8), st.integers(min_value=0, max_value=3))
def test_busy_ticks_are_the_cpus_non_idle_ticks(cpu: int, t: tuple[int, ...],
                                               others: int) -> None:
    user, nice, system, idle, iowait, irq, softirq, steal = t
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the machine's total comes first
    lines += [LINE.format(n=cpu + 1 + k, user=9, nice=9, system=9, idle=9, iowait=9, irq=9,
                          softirq=9, steal=9) for k in range(others)]
    lines.append(LINE.format(n=cpu, user=user, nice=nice, system=system, idle=idle,
                             iowait=iowait, irq=irq, softirq=softirq, steal=steal))
    lines.append("intr 12345 0 0")
    got = busy_ticks("\n".join(lines), cpu)
    assert got == user + nice + system + irq + softirq + steal


def test_cpu1_is_not_taken_for_cpu10() -> None:
    stat = "cpu10 5 5 5 5 5 5 5 5 0 0\ncpu1 1 1 1 100 1 1 1 1 0 0\n"
    assert busy_ticks(stat, 1) == 6
    assert busy_ticks(stat, 10) == 30


@given(st.text(max_size=300), st.integers(min_value=0, max_value=64))
def test_busy_ticks_of_any_text_is_a_count_or_a_value_error(text: str, cpu: int) -> None:
    try:
        assert busy_ticks(text, cpu) >= 0
    except ValueError as exc:
        assert f"cpu{cpu}" in str(exc)


@pytest.mark.parametrize("line", ["cpu0 1 2 3", "cpu0 1 2 x 4 5", "cpu0 1 2 -3 4 5",
                                  "cpu0 \u0661 2 3 4 5"])
def test_a_malformed_line_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="malformed /proc/stat line for cpu0"):
        busy_ticks(line, 0)
