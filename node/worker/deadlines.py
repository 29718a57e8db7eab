"""Many deadlines, one timer: a task is cancelled when its deadline passes.

An `asyncio.timeout` (a loop timer) per request costs a timer handle and a heap
operation each — about 2.4 µs on uvloop, a tenth of a worker's whole round trip.
A worker has at most its concurrency in flight, so one timer armed for the
earliest deadline, scanning those few entries when it fires, costs about one
timer per deadline span instead. Used by the SDK's handler deadlines
(node.worker.sdk) and the upstream client's request deadlines (node.worker.upstream).

The timer is left armed when a deadline ends, even the last one: it fires at most
once more, finds nothing due and re-arms for the earliest deadline still running (or
not at all). Cancelling it whenever the sweep emptied and arming a new one with the
next request cost a timer a request on a worker whose requests come one at a time.
So the timer is never later than the earliest deadline in flight, which is what
keeps every deadline on time.

uvloop's timers have a millisecond's resolution and may fire up to 1 ms early, so
the scan takes as due what falls within that millisecond: re-arming for a deadline
still a hair away would spin. One loop, one thread (a sweep moved to another loop
re-arms there).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

_EARLY = 0.001  # seconds a loop timer may fire before its time (uvloop: 1 ms resolution)


class Deadline:
    """One task's deadline in a sweep; `expired` once the sweep cancelled the task for it."""

    __slots__ = ("expired", "task", "when")

    def __init__(self, task: asyncio.Task[Any] | None, when: float) -> None:
        self.task = task
        self.when = when  # loop time
        self.expired = False


class DeadlineSweep:
    """The deadlines in flight and the one timer that serves them all."""

    def __init__(self) -> None:
        self._entries: set[Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when the timer fires: never after a deadline in flight
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def __len__(self) -> int:
        return len(self._entries)

    def start(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None,
              when: float) -> Deadline:
        """Cancel `task` at loop time `when` unless `end` comes first."""
        deadline = Deadline(task, when)
        self._entries.add(deadline)
        if when < self._timer_at or loop is not self._loop:
            self._arm(loop, when)
        return deadline

    def end(self, deadline: Deadline | None) -> None:
        """The deadline no longer applies (done, answering). The timer stays: it fires
        at most once more, for nothing, unless a later deadline keeps it."""
        if deadline is not None:
            self._entries.discard(deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._loop = loop
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = loop.time() + _EARLY
        earliest = math.inf
        for deadline in list(self._entries):
            if deadline.expired:
                continue
            if deadline.when <= now:
                deadline.expired = True
                if deadline.task is not None:
                    deadline.task.cancel()
            elif deadline.when < earliest:
                earliest = deadline.when
        if earliest < math.inf:
            self._arm(loop, earliest)
