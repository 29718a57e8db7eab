"""Single flight per cache key: the first caller fetches, later ones share its result.

`begin(key)` hands out a `Flight`. The first caller for a key is its LEADER;
callers arriving while it runs are WAITERs, woken by the leader's completion
(an asyncio future, never polling), so a coalesced answer costs the leader's
latency and a task switch. The leader ends every flight one way:

- `share(value)`: the result may be given to everyone (it will be cached);
- `release()`: the result is not shareable (private, Set-Cookie, too large):
  waiters go to the origin on their own *at once, in parallel*, and for
  `hit_for_miss` seconds later callers of that key skip coalescing (SOLO) —
  Varnish's hit-for-miss, so nobody queues behind an uncacheable URL.
  `release(nothing_stored=True)` also says the store held nothing for the key:
  while the mark lasts, `nothing_stored(key)` lets callers skip the lookup as
  well, as Varnish finds its hit-for-miss object in place of one. `unmark(key)`
  ends a mark early (the key was stored after all);
- `fail(exc)`: waiters get the same exception (a failing origin is asked once);
- `abandon()`: the leader gave up (client gone): waiters go on their own.

A waiter also goes on its own after `lock_timeout` (default 5 s) counted from
the leader's start, so one slow request cannot hold the others; a flight older
than that no longer collects waiters and the next caller leads a new one.
Decisions take time from the injected `clock`; the only I/O-ish part is the
asyncio wait itself. One event loop only; generic over the shared value type.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class Role(enum.Enum):
    LEADER = "leader"  # fetches and decides whether to share
    WAITER = "waiter"  # waits for the leader's result
    SOLO = "solo"  # fetches alone: the key is marked hit-for-miss


class Shared(Generic[T]):
    """A value a leader shared (boxed, so that a shared None is still a value); read-only.

    A plain class, not a frozen slots dataclass: compiled (mypyc, `make compiled`), a
    generic dataclass fails at import."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value: Final = value

    def __repr__(self) -> str:
        return f"Shared(value={self.value!r})"


class Flight(Generic[T]):
    """One caller's part in a key's flight. Leaders and SOLOs must end it (share/release/...)."""

    __slots__ = ("_future", "_group", "_over", "deadline", "key", "role", "started")

    def __init__(
        self,
        group: Coalescer[T],
        key: str,
        role: Role,
        started: float,
        future: asyncio.Future[Shared[T] | None] | None,
    ) -> None:
        self._group = group
        self.key = key
        self.role = role
        self.started = started
        self.deadline = started + group.lock_timeout
        self._future = future
        self._over = False

    @property
    def over(self) -> bool:
        return self._over

    # -- leader side ------------------------------------------------------------
    def share(self, value: T) -> None:
        self._end(Shared(value), None)
        self._group.unmark(self.key)

    def release(self, nothing_stored: bool = False) -> None:
        self._end(None, None)
        self._group._mark(self.key, nothing_stored)

    def fail(self, exc: BaseException) -> None:
        self._end(None, exc)

    def abandon(self) -> None:
        self._end(None, None)

    def _end(self, result: Shared[T] | None, exc: BaseException | None) -> None:
        if self.role is Role.WAITER:
            raise RuntimeError("only the leader of a flight ends it")
        if self._over:
            return
        self._over = True
        fut = self._future
        if fut is not None and not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        if self._group._flights.get(self.key) is self:
            del self._group._flights[self.key]

    # -- waiter side --------------------------------------------------------------
    async def wait(self) -> Shared[T] | None:
        """The leader's shared value, or None: go to the origin on your own.

        Raises the leader's exception if it failed."""
        if self.role is not Role.WAITER or self._future is None:
            raise RuntimeError("only a waiter waits")
        shared = self._future
        remaining = self.deadline - self._group.clock()
        if not shared.done():
            if remaining <= 0:
                return None
            # A future of our own, woken by the leader's or by the timer: cancelling it (the
            # client left) leaves the shared one alone, as shield did. wait_for(shield(...))
            # ran seven interpreted asyncio functions and two futures a waiter.
            loop = asyncio.get_running_loop()
            mine: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not mine.done():
                    mine.set_result(None)

            timer = loop.call_later(remaining, wake)
            shared.add_done_callback(wake)
            try:
                await mine
            finally:
                timer.cancel()
                if not shared.done():
                    shared.remove_done_callback(wake)
            if not shared.done():
                return None  # the lock timeout: on our own
        return shared.result()  # the leader's exception, if it failed


class Coalescer(Generic[T]):
    """The table of flights in progress, one per key."""

    def __init__(
        self,
        lock_timeout: float = 5.0,
        hit_for_miss: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_marks: int = 10_000,
    ) -> None:
        if lock_timeout < 0 or hit_for_miss < 0 or max_marks < 0:
            raise ValueError("lock_timeout, hit_for_miss and max_marks must not be negative")
        self.lock_timeout = lock_timeout
        self.hit_for_miss = hit_for_miss
        self.clock = clock
        self.max_marks = max_marks
        self._flights: dict[str, Flight[T]] = {}
        # key -> (until when it is hit-for-miss, whether the store held nothing for it)
        self._marks: dict[str, tuple[float, bool]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def marked(self, key: str) -> bool:
        mark = self._marks.get(key)
        return mark is not None and mark[0] > self.clock()

    def nothing_stored(self, key: str) -> bool:
        """Whether `key` is hit-for-miss and its mark says the store held nothing for it:
        a caller may go to the origin without looking (and without a flight)."""
        mark = self._marks.get(key)
        return mark is not None and mark[1] and mark[0] > self.clock()

    def unmark(self, key: str) -> None:
        """End `key`'s hit-for-miss mark, if any: it was stored after all."""
        self._marks.pop(key, None)

    def _mark(self, key: str, nothing_stored: bool) -> None:
        if self.hit_for_miss <= 0 or self.max_marks == 0:
            return
        self._marks.pop(key, None)
        while len(self._marks) >= self.max_marks:
            del self._marks[next(iter(self._marks))]  # the oldest mark goes first
        self._marks[key] = (self.clock() + self.hit_for_miss, nothing_stored)

    def begin(self, key: str) -> Flight[T]:
        now = self.clock()
        mark = self._marks.get(key)
        if mark is not None:
            if mark[0] > now:
                return Flight(self, key, Role.SOLO, now, None)
            del self._marks[key]
        current = self._flights.get(key)
        if current is not None and current._future is not None and now < current.deadline:
            return Flight(self, key, Role.WAITER, current.started, current._future)
        future: asyncio.Future[Shared[T] | None] = asyncio.get_running_loop().create_future()
        # A failure nobody waited for is not an "exception never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        flight = Flight(self, key, Role.LEADER, now, future)
        self._flights[key] = flight  # replaces a flight older than lock_timeout
        return flight

    async def run(self, key: str, fetch: Callable[[], Awaitable[tuple[T, bool]]]) -> tuple[T, Role]:
        """Fetch through the flight: `fetch` returns (value, shareable).

        Returns the value and how this caller got it; a waiter released by the
        leader (or timed out) fetches by itself and reports SOLO."""
        flight = self.begin(key)
        if flight.role is Role.WAITER:
            got = await flight.wait()
            if got is not None:
                return got.value, Role.WAITER
            value, _ = await fetch()
            return value, Role.SOLO
        try:
            value, shareable = await fetch()
        except BaseException as exc:
            if isinstance(exc, Exception):
                flight.fail(exc)
            else:
                flight.abandon()
            raise
        if shareable:
            flight.share(value)
        else:
            flight.release()
        return value, flight.role
