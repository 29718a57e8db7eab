"""Purge tombstones: what was purged and when, so a late replica cannot bring it back.

A purge removes entries from every node's store, but a replicated put that was
already on the wire (or a large entry's announcement) can arrive afterwards and
store the purged response again. A tombstone remembers the purge — one exact key
or one key prefix, with the purge's wall-clock time — and `blocks(entry)` refuses
any replica of a matching key whose `response_time` is not newer than the purge.
A response produced after the purge is new content and passes.

Bounded both ways: at most `max_count` exact keys and `max_prefixes` prefixes
(the oldest go first), and each is kept `max_age` seconds of the injected clock
after it was noted — far longer than a replica can spend in flight. The purge
time `at` comes from the purging node's clock and is only ever compared with
response times (also peers' clocks); ageing uses our own clock so a skewed peer
cannot pin a tombstone for ever. Pure: no I/O, no clock read but the one given.
Not safe for concurrent use from threads (one event loop owns it).

`since` says how far back the record is complete: every purge done after it
is here (or was never seen by anyone we heard from). It starts at the time the
node began listening (a purge before that went to the node's previous life, or
to nobody), moves back when a peer hands over its record (`merge`), and moves
forward past any tombstone forgotten for age or count. A restarted node trusts
an entry on its disk only when the entry is newer than `since`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cache.entry import CacheEntry


@dataclass(frozen=True, slots=True)
class Tombstone:
    key: str  # an exact cache key, or a prefix of keys
    is_prefix: bool
    at: float  # wall-clock time of the purge (the purging node's clock)
    noted: float  # our clock when we learned of it (for ageing)


class Tombstones:
    """Recent purges, exact and by prefix; see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_count: int = 10_000,
        max_prefixes: int = 1_000,
        max_age: float = 600.0,
        since: float = 0.0,
    ) -> None:
        if max_count < 1 or max_prefixes < 1 or max_age <= 0:
            raise ValueError("tombstones: bounds must be positive")
        self._clock = clock
        self._since = since  # wall clock: every purge done after it is recorded here
        self.max_count, self.max_prefixes, self.max_age = max_count, max_prefixes, max_age
        self._exact: OrderedDict[str, Tombstone] = OrderedDict()
        self._prefixes: OrderedDict[str, Tombstone] = OrderedDict()

    def add(self, key: str, is_prefix: bool, at: float) -> None:
        """Note a purge of `key` (or of every key starting with it) done at `at`."""
        now = self._clock()
        table = self._prefixes if is_prefix else self._exact
        cap = self.max_prefixes if is_prefix else self.max_count
        old = table.pop(key, None)
        when = at if old is None else max(at, old.at)  # a repeated purge keeps the latest time
        table[key] = Tombstone(key, is_prefix, when, now)
        while len(table) > cap:
            self._forget(table.popitem(last=False)[1])
        self._expire(now)

    def merge(self, since: float, stones: list[tuple[str, bool, float]]) -> None:
        """Take in a peer's record (complete after its `since`): ours now reaches back
        as far as the older of the two."""
        self._since = min(self._since, since)  # before adding: what they push out counts
        for key, is_prefix, at in stones:
            self.add(key, is_prefix, at)

    def newest_first(self) -> list[Tombstone]:
        """Every live tombstone, the latest purge first (what a peer asks for)."""
        self._expire(self._clock())
        return sorted([*self._exact.values(), *self._prefixes.values()],
                      key=lambda s: s.at, reverse=True)

    @property
    def since(self) -> float:
        """The time after which every purge is recorded here (read after expiring)."""
        self._expire(self._clock())
        return self._since

    def _forget(self, stone: Tombstone) -> None:
        self._since = max(self._since, stone.at)  # purges up to it may now be unknown

    def blocks(self, entry: CacheEntry) -> bool:
        """Whether a replica of `entry` would resurrect something purged after it was made."""
        return self.blocks_key(entry.key, entry.response_time)

    def blocks_key(self, key: str, response_time: float) -> bool:
        self._expire(self._clock())
        stone = self._exact.get(key)
        if stone is not None and response_time <= stone.at:
            return True
        return any(
            response_time <= s.at and key.startswith(p) for p, s in self._prefixes.items()
        )

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefixes)

    def _expire(self, now: float) -> None:
        # Insertion order is `noted` order as long as our clock does not step back;
        # if it does, a tombstone merely lives a little longer.
        limit = now - self.max_age
        for table in (self._exact, self._prefixes):
            while table:
                first = next(iter(table.values()))
                if first.noted > limit:
                    break
                self._forget(table.popitem(last=False)[1])
