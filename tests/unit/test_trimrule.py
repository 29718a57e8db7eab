"""node.trimrule: when memory goes back to the OS, driven by hypothesis with readings as numbers.

The properties: never while busy (a request in flight, or more CPU than `busy_cpu`), never
before `after` seconds of quiet, never without `grown` bytes above the baseline, at most
once per `interval`, never with `after = 0`; and a quiet, grown process is trimmed as soon
as all of that allows."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.trimrule import MIB, Trimmer, TrimRule

RULE = TrimRule(after=10.0, interval=60.0, grown=32 * MIB, busy_cpu=0.05)
BASE = 50 * MIB


@dataclass(frozen=True)
class Reading:
    dt: float  # seconds since the previous reading
    cpu: float  # CPU seconds spent since the previous reading
    in_flight: int
    rss: int

    def busy(self, rule: TrimRule) -> bool:
        return self.in_flight > 0 or self.cpu > rule.busy_cpu * self.dt


# Times and CPU seconds are binary fractions, so the running totals the Trimmer is given
# subtract back exactly to what each reading says (no rounding at the busy boundary).
readings = st.builds(
    Reading,
    dt=st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.0, 2.0, 7.5]),
    cpu=st.one_of(st.just(0.0), st.integers(0, 64), st.integers(0, 1536)).map(lambda n: n / 1024),
    in_flight=st.sampled_from([0, 0, 0, 1, 40]),
    rss=st.sampled_from([BASE, BASE + 31 * MIB, BASE + 32 * MIB, BASE + 700 * MIB]),
)
rules = st.builds(
    TrimRule, after=st.sampled_from([0.0, 1.0, 10.0]), interval=st.sampled_from([0.0, 5.0, 60.0]),
    grown=st.sampled_from([0, 32 * MIB]), busy_cpu=st.sampled_from([0.0, 0.0625, 0.5]))


def run(rule: TrimRule, steps: list[Reading]) -> list[tuple[float, Reading, bool]]:
    """Feed `steps` to a Trimmer started at t=0 with the baseline; (time, reading, trim?)."""
    now = cpu = 0.0
    trimmer = Trimmer(rule, now, cpu, BASE)
    out = []
    for r in steps:
        now += r.dt
        cpu += r.cpu
        out.append((now, r, trimmer.tick(now, cpu, r.in_flight, r.rss)))
    return out


@given(rules, st.lists(readings, max_size=80))
def test_never_while_busy_and_never_without_growth(rule: TrimRule, steps: list[Reading]) -> None:
    for _, r, trim in run(rule, steps):
        if trim:
            assert not r.busy(rule)
            assert r.rss >= BASE + rule.grown


@given(rules, st.lists(readings, max_size=80))
def test_only_after_enough_quiet(rule: TrimRule, steps: list[Reading]) -> None:
    last_busy = 0.0  # start-up counts as busy
    for now, r, trim in run(rule, steps):
        if r.busy(rule):
            last_busy = now
        if trim:
            assert rule.after > 0  # 0 is never
            assert now - last_busy >= rule.after


@given(rules, st.lists(readings, max_size=80))
def test_at_most_once_per_interval(rule: TrimRule, steps: list[Reading]) -> None:
    times = [now for now, _, trim in run(rule, steps) if trim]
    assert all(b - a >= rule.interval for a, b in itertools.pairwise(times))


@given(st.lists(readings, max_size=40), st.integers(0, 200))
def test_a_quiet_grown_process_is_trimmed_once_the_rule_allows(steps: list[Reading],
                                                               idle: int) -> None:
    """Whatever came before, one-second quiet readings above the threshold lead to a trim
    within `after` seconds (and one more reading), and then one every `interval`."""
    quiet = [Reading(1.0, 0.0, 0, BASE + 100 * MIB)] * (idle + 62)
    out = run(RULE, [*steps, *quiet])
    tail = out[len(steps):]
    start = out[len(steps) - 1][0] if steps else 0.0
    last = max([now for now, _, trim in out[:len(steps)] if trim], default=-math.inf)
    trims = [now for now, _, trim in tail if trim]
    assert trims, "never trimmed"
    assert trims[0] <= max(start + RULE.after, last + RULE.interval) + 1.0
    assert all(RULE.interval <= b - a <= RULE.interval + 1.0
               for a, b in itertools.pairwise(trims))


def test_after_zero_never_trims() -> None:
    steps = [Reading(1.0, 0.0, 0, BASE + 900 * MIB)] * 300
    assert not any(trim for _, _, trim in run(TrimRule(after=0.0), steps))


def test_a_table_of_days() -> None:
    q, grown = Reading(1.0, 0.0, 0, BASE + 64 * MIB), BASE + 64 * MIB
    cases = [
        ("spike, then 10 s of quiet", [q] * 10, [10.0]),
        ("9 s of quiet is not enough", [q] * 9, []),
        ("a request in flight restarts the wait",
         [q] * 5 + [Reading(1.0, 0.0, 1, grown)] + [q] * 10, [16.0]),
        ("a busy second (6% of a core) restarts it too",
         [q] * 5 + [Reading(1.0, 0.06, 0, grown)] + [q] * 10, [16.0]),
        ("a trickle (4% of a core) does not", [Reading(1.0, 0.04, 0, grown)] * 10, [10.0]),
        ("31 MiB above the baseline is not worth it", [Reading(1.0, 0.0, 0, BASE + 31 * MIB)] * 99,
         []),
        ("still grown: again a minute later, no sooner", [q] * 130, [10.0, 70.0, 130.0]),
    ]
    for what, steps, expected in cases:
        assert [now for now, _, trim in run(RULE, steps) if trim] == expected, what


def test_a_new_rule_applies_from_the_next_reading() -> None:
    trimmer = Trimmer(RULE, 0.0, 0.0, BASE)
    assert not any(trimmer.tick(t, 0.0, 0, BASE + 64 * MIB) for t in range(1, 6))
    trimmer.rule = TrimRule(after=5.0)
    assert trimmer.tick(6.0, 0.0, 0, BASE + 64 * MIB)
    assert trimmer.baseline == BASE and trimmer.last_trim == 6.0
    trimmer.rule = TrimRule(after=0.0)
    assert not any(trimmer.tick(t, 0.0, 0, BASE + 64 * MIB) for t in range(7, 200))


@pytest.mark.parametrize("bad", [{"after": -1.0}, {"after": math.nan}, {"after": math.inf},
                                 {"interval": -5.0}, {"busy_cpu": math.nan}, {"grown": -1}])
def test_nonsense_rules_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrimRule(**bad)  # type: ignore[arg-type]
