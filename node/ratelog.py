"""A logger wrapper that says a repeated problem at most once per interval.

Malformed frames from a broken or hostile peer can arrive by the thousand; the
log gets one line per interval per key with how many were suppressed, and the
counters (kept by the caller) carry the full numbers. Callers must never pass
header values or bodies (they may hold secrets): reasons and sizes only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """`warn(key, msg)` logs at most once per `interval` seconds per key."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 256) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` was logged less than `interval` ago. True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()  # bounded memory under a flood of distinct keys
            self._suppressed.clear()
        self._last[key] = now
        dropped = self._suppressed.pop(key, 0)
        if dropped:
            self._logger.warning(msg + " (%d more suppressed)", *args, dropped)
        else:
            self._logger.warning(msg, *args)
        return True
