"""When a process should hand the memory of a traffic spike back to the OS: a pure rule.

A burst of large bodies leaves a Python server's RSS near its peak after the load is
gone (node.heaptrim says why and what measured it). Giving that memory back costs a
full garbage collection and a walk of the allocator's free lists — milliseconds with
the loop stopped, nothing a quiet process notices, a stall a busy one would. So the
`Trimmer` waits for quiet and for a reason:

- quiet: for `TrimRule.after` seconds, every reading found no request in flight and
  the process spending at most `busy_cpu` of one core (idle beats and a trickle of
  requests stay below it; a load that matters does not);
- a reason: RSS at least `grown` bytes above what it was when the process had just
  started (its baseline, the first reading);
- at most one trim per `interval`, so a process whose live data legitimately grew
  (a full memory cache) costs one collection a minute while idle, not one a second.

The shell (node.heaptrim) reads the clock, the process's CPU time, its requests in
flight and its RSS once a second and passes them in; `tick` says whether to trim now.
Pure: the clock and every reading are arguments, so tests drive it with numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrimRule:
    """How long to wait, for how much growth, and how often at most."""

    after: float = 10.0  # seconds of quiet before a trim; 0 = never (jemalloc's decay: 10 s)
    interval: float = 60.0  # seconds from one trim to the next, at least
    grown: int = 32 * MIB  # RSS above the post-start baseline that makes a trim worth it
    busy_cpu: float = 0.05  # share of one core above which a reading counts as busy

    def __post_init__(self) -> None:
        for name in ("after", "interval", "busy_cpu"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):  # refuses nan too
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.grown < 0:
            raise ValueError(f"grown must be >= 0, not {self.grown!r}")


class Trimmer:
    """The rule's state: the baseline, when the process was last busy, the last trim.

    Created with the first reading (its RSS is the baseline); then `tick` with each
    reading. `cpu` is the process's CPU seconds so far (all threads), a running total."""

    __slots__ = ("_cpu", "_now", "baseline", "last_trim", "quiet_since", "rule")

    def __init__(self, rule: TrimRule, now: float, cpu: float, rss: int) -> None:
        self.rule = rule  # replaceable (a reload): the next tick reads the new one
        self.baseline = rss
        self.quiet_since = now
        self.last_trim: float | None = None
        self._now = now
        self._cpu = cpu

    def tick(self, now: float, cpu: float, in_flight: int, rss: int) -> bool:
        """Take a reading; True when the caller should trim now (counted as done)."""
        rule = self.rule
        spent = cpu - self._cpu
        elapsed = max(0.0, now - self._now)
        self._now, self._cpu = now, cpu
        if in_flight > 0 or spent > rule.busy_cpu * elapsed:
            self.quiet_since = now
            return False
        if (rule.after <= 0 or now - self.quiet_since < rule.after
                or rss < self.baseline + rule.grown):
            return False
        if self.last_trim is not None and now - self.last_trim < rule.interval:
            return False
        self.last_trim = now
        return True
