"""Event rates over a sliding window, with an injected clock.

Used for forwarded-in/out requests per second (shown in the load table) and for
the share of a service's traffic sent to peers (the overflow cap). Buckets of
`bucket` seconds over `window` seconds: memory is constant, old events age out.
"""

from __future__ import annotations

import math
from collections import deque


class RateMeter:
    __slots__ = ("_bucket", "_buckets", "_size")

    def __init__(self, window: float = 10.0, bucket: float = 1.0) -> None:
        if window <= 0 or bucket <= 0 or bucket > window:
            raise ValueError("window and bucket must be positive, bucket <= window")
        self._bucket = bucket
        self._size = max(1, math.ceil(window / bucket))
        self._buckets: deque[tuple[int, float]] = deque()  # (bucket index, count)

    def add(self, now: float, count: float = 1.0) -> None:
        idx = math.floor(now / self._bucket)
        self._expire(idx)
        if self._buckets and self._buckets[-1][0] == idx:
            last_idx, last = self._buckets.pop()
            self._buckets.append((last_idx, last + count))
        else:
            self._buckets.append((idx, count))

    def total(self, now: float) -> float:
        """Events in the window ending now."""
        self._expire(math.floor(now / self._bucket))
        return sum(c for _, c in self._buckets)

    def rate(self, now: float) -> float:
        """Events per second over the window."""
        return self.total(now) / (self._size * self._bucket)

    def _expire(self, idx: int) -> None:
        while self._buckets and self._buckets[0][0] <= idx - self._size:
            self._buckets.popleft()


class ShareMeter:
    """The share of recent events that were of one kind (e.g. sent away)."""

    __slots__ = ("_all", "_some")

    def __init__(self, window: float = 10.0) -> None:
        self._all = RateMeter(window)
        self._some = RateMeter(window)

    def add(self, now: float, marked: bool) -> None:
        self._all.add(now)
        if marked:
            self._some.add(now)

    def share(self, now: float) -> float:
        total = self._all.total(now)
        return self._some.total(now) / total if total else 0.0
