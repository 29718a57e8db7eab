"""Failure detection, pure: who has been silent too long, and when a suspect is dead.

Choice: an *adaptive window*, not phi-accrual. Beats are periodic with a known
interval, so the only unknown is jitter; a window of ``mean + 4·stddev`` of the
recent gaps, clamped to ``[window_min, window_max]``, says the same thing as a phi
threshold but with two numbers an operator can read, no distribution assumption,
and a hard upper bound on detection time (phi grows without bound after one slow
burst of gaps, and needs many samples before it is meaningful).

Three stages, each a decision the membership core acts on:

1. *doubt* (private): a followed publisher is silent past its window. The core
   probes it (direct Ping) and asks a few other observers (Probe); any Ack clears
   the doubt. Doubts are cheap and frequent at 1% loss; they are never published.
2. *suspect* (published): the probe timed out unanswered. Every member that hears
   the suspicion starts a timer.
3. *dead*: the timer ran out. Lifeguard's rule shortens it with each independent
   observer that also suspects: ``max(min, max - (max-min)·log(c+1)/log(K+1))``,
   so one observer with a bad link waits ``max`` and K agreeing observers wait ``min``.

A refutation (the member speaks with a higher incarnation) is the core's business:
it calls ``clear``. No clock is read here; ``now`` is always an argument.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Timing of the three stages, in seconds."""

    interval: float = 1.0  # expected gap between beats
    window_min: float = 1.25  # never doubt sooner than this after the last word
    window_max: float = 3.0  # always doubt after this much silence
    probe_timeout: float = 0.4  # unanswered probe -> suspect
    suspicion_min: float = 0.4  # suspect -> dead with `confirmations` observers agreeing
    suspicion_max: float = 4.0  # suspect -> dead with a single observer
    confirmations: int = 3  # K in Lifeguard's formula
    samples: int = 16  # gaps remembered per publisher


@dataclass(slots=True)
class _Watch:
    last: float  # the silence window runs from here: last heard, or last vouched for
    gaps: deque[float]
    heard: float  # last message actually received from the member (never an Ack about it)
    probe_at: float | None = None  # when the probe for the current doubt started
    nonce: int = 0


@dataclass(slots=True)
class _Suspicion:
    incarnation: int
    since: float
    k: int  # confirmations that shorten the timer to its minimum (Lifeguard's K)
    observers: set[str] = field(default_factory=set)


class Detector:
    """Per-publisher silence windows and per-member suspicion timers.

    Not thread-safe; the membership core owns one and feeds it every event.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._watches: dict[str, _Watch] = {}
        self._suspects: dict[str, _Suspicion] = {}
        self._earliest = math.inf  # lower bound of every watch deadline (lazy)

    # -- watching followed publishers ------------------------------------

    def watch(self, member: str, now: float) -> None:
        """Start watching ``member`` as if just heard (a fresh follow gets a full window)."""
        if member not in self._watches:
            self._watches[member] = _Watch(now, deque(maxlen=self.config.samples), now)
            self._earliest = min(self._earliest, now + self.config.window_min)

    def unwatch(self, member: str) -> None:
        self._watches.pop(member, None)

    def watched(self) -> set[str]:
        return set(self._watches)

    def heard(self, member: str, now: float) -> None:
        """A message from ``member`` arrived: one gap sample, and any doubt is over."""
        w = self._watches.get(member)
        if w is None:
            return
        gap = now - w.last
        if gap > 0:
            w.gaps.append(gap)
        w.last = max(w.last, now)
        w.heard = max(w.heard, now)
        w.probe_at = None
        # its deadline may have been infinite (reported suspect) at the last scan
        self._earliest = min(self._earliest, w.last + self.config.window_min)

    def acked(self, member: str, now: float) -> None:
        """Someone vouched for ``member``: the doubt is over, the window restarts now.

        Only the window restarts: ``heard`` stays, so second-hand word is never passed
        on as first-hand (see ``silent_for``).
        """
        w = self._watches.get(member)
        if w is not None:
            w.last = max(w.last, now)
            w.probe_at = None
            self._earliest = min(self._earliest, w.last + self.config.window_min)

    def restarted(self, member: str, now: float) -> bool:
        """``member`` spoke at a higher incarnation (a restart, or a refutation) after
        missing at least a beat: its old gaps and silence say nothing about the new
        process, whose first beats may wait for the subscriber's reconnect backoff
        (ZeroMQ's grows to seconds while a peer is down). A fresh full window, as for a
        new follow; True when this happened, so the core redials its publisher. Without
        it a node back from kill -9 was suspected by everyone a moment after its
        return (tests/e2e/test_gossip_churn_e2e.py)."""
        w = self._watches.get(member)
        if w is None or (w.probe_at is None and now - w.heard <= self.config.interval):
            return False
        self._watches[member] = _Watch(now, deque(maxlen=self.config.samples), now,
                                       nonce=w.nonce)
        self._earliest = min(self._earliest, now + self.config.window_min)
        return True

    def window(self, member: str) -> float:
        """Current silence allowance for ``member``."""
        c = self.config
        w = self._watches.get(member)
        if w is None or len(w.gaps) < 2:
            return max(c.window_min, min(c.window_max, 1.25 * c.interval))
        n = len(w.gaps)
        mean = sum(w.gaps) / n
        var = sum((g - mean) ** 2 for g in w.gaps) / (n - 1)
        return max(c.window_min, min(c.window_max, mean + 4.0 * math.sqrt(var)))

    def due(self, now: float) -> tuple[list[str], list[str]]:
        """``(to_probe, to_suspect)``: fresh doubts to probe, and probes that timed out.

        A member returned in ``to_probe`` is marked as being probed; ``nonce(member)``
        gives the nonce to put in the Ping/Probe.
        """
        if now < self._earliest:
            return [], []
        to_probe: list[str] = []
        to_suspect: list[str] = []
        earliest = math.inf
        for member, w in self._watches.items():
            if w.probe_at is None:
                deadline = w.last + self.window(member)
                if now >= deadline:
                    w.probe_at = now
                    w.nonce += 1
                    to_probe.append(member)
                    deadline = now + self.config.probe_timeout
            else:
                deadline = w.probe_at + self.config.probe_timeout
                if now >= deadline:
                    to_suspect.append(member)
                    # stay quiet about it until heard again or unwatched
                    w.probe_at = math.inf
                    deadline = math.inf
            earliest = min(earliest, deadline)
        self._earliest = earliest
        return to_probe, to_suspect

    def nonce(self, member: str) -> int:
        w = self._watches.get(member)
        return w.nonce if w is not None else 0

    def silent_for(self, member: str, now: float) -> float | None:
        """Seconds since a message *from* ``member`` arrived, or None when not watched.

        This, not the window's restart time, decides whether we vouch for ``member``
        when another observer probes. Were an Ack enough to vouch, observers whose
        windows expire at different times would vouch for a crashed member to one
        another in turn, each on the strength of the last one's Ack, for ever.
        """
        w = self._watches.get(member)
        return None if w is None else now - w.heard

    def in_doubt(self, member: str) -> bool:
        w = self._watches.get(member)
        return w is not None and w.probe_at is not None

    # -- suspicion timers -------------------------------------------------

    def suspect(self, member: str, incarnation: int, by: str, now: float,
                possible: int | None = None) -> None:
        """Record that ``by`` suspects ``member`` at ``incarnation`` (idempotent).

        ``possible`` is how many confirmations the mesh can be expected to give (the
        core counts the member's other observers): a small mesh cannot produce
        ``confirmations`` of them, so K is lowered to that, but never below 1 — a lone
        observer still waits ``suspicion_max`` (memberlist cuts to K = 0 instead).
        """
        s = self._suspects.get(member)
        if s is None or incarnation > s.incarnation:
            k = self.config.confirmations
            if possible is not None:
                k = max(1, min(k, possible))
            s = self._suspects[member] = _Suspicion(incarnation, now, k)
        if incarnation == s.incarnation:
            s.observers.add(by)

    def timeout(self, member: str) -> float:
        """Suspicion time allowed for ``member`` given its confirmations so far."""
        c = self.config
        s = self._suspects.get(member)
        n = 0 if s is None else max(0, len(s.observers) - 1)  # the first is not a confirmation
        k = c.confirmations if s is None else s.k
        frac = min(1.0, math.log(n + 1) / math.log(k + 1))
        return max(c.suspicion_min, c.suspicion_max - (c.suspicion_max - c.suspicion_min) * frac)

    def expired(self, now: float) -> list[tuple[str, int]]:
        """Suspects whose timer ran out, as ``(member, incarnation)``; they are forgotten."""
        out = [(m, s.incarnation) for m, s in self._suspects.items()
               if now >= s.since + self.timeout(m)]
        for m, _ in out:
            del self._suspects[m]
        return out

    def suspected(self, member: str) -> bool:
        return member in self._suspects

    def clear(self, member: str) -> None:
        """Refuted, dead or gone: drop any suspicion timer."""
        self._suspects.pop(member, None)
