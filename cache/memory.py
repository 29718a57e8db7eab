"""An in-process LRU store with a byte cap, for tests and small deployments.

One OrderedDict of (key, variant) → entry in least-recently-used order; a get
touches every variant it returns. Entries are charged what they cost this process
(`cost`: their bytes plus the objects that hold them, measured with tracemalloc:
a small answer costs four to five times its `CacheEntry.size`, so charging that let
`max` small answers take five times `max` of memory); a put that takes the total
over `max_bytes` evicts from the cold end until the total fits again. An entry
whose `CacheEntry.size` is bigger than `max_entry_bytes` (default: the whole cap)
is refused and counted. Not thread-safe: it belongs to one event loop, and
its coroutines never await, so each call is atomic on that loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from cache.entry import CacheEntry
from cache.store import StoreStats

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Beyond its bytes, what one entry holds in CPython (3.11, 64-bit): the entry, its key,
# variant and body objects, its LRU slot and its key's variant set; and each header
# field, a tuple and two str objects. Rounded up from tracemalloc's figures.
ENTRY_OVERHEAD = 640
FIELD_OVERHEAD = 176


def cost(entry: CacheEntry) -> int:
    """The bytes `entry` takes in this process's memory, as the cap counts them."""
    return (len(entry.body) + len(entry.key) + len(entry.variant) + ENTRY_OVERHEAD
            + sum(len(k) + len(v) + FIELD_OVERHEAD for k, v in entry.headers))


class MemoryStore:
    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_entry_bytes: int | None = None
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"memory store: max_bytes must be positive, not {max_bytes}")
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes if max_entry_bytes is None else max_entry_bytes
        self._lru: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self._variants: dict[str, set[str]] = {}
        self._bytes = 0
        self._evictions = 0
        self._rejected = 0

    @classmethod
    def from_spec(cls, location: str, options: Mapping[str, str]) -> MemoryStore:
        """`memory`, `memory:512MiB`, `memory?max=512MiB` (see cache.stores)."""
        from cache.stores import parse_size, unknown_options

        unknown_options("memory", options, {"max", "max_entry"})
        size = options.get("max") or location or None
        return cls(
            parse_size(size) if size else DEFAULT_MAX_BYTES,
            parse_size(options["max_entry"]) if "max_entry" in options else None,
        )

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> list[CacheEntry]:
        found = []
        for variant in sorted(self._variants.get(key, ())):
            self._lru.move_to_end((key, variant))
            found.append(self._lru[(key, variant)])
        return found

    async def put(self, entry: CacheEntry) -> bool:
        if entry.size > self.max_entry_bytes:
            self._rejected += 1
            return False
        size = cost(entry)
        slot = (entry.key, entry.variant)
        old = self._lru.get(slot)
        if old is not None:
            if not entry.newer_than(old):
                return False
            self._remove(slot)
        self._lru[slot] = entry
        self._variants.setdefault(entry.key, set()).add(entry.variant)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._remove(next(iter(self._lru)))
            self._evictions += 1
        return True

    async def delete(self, key: str, variant: str | None = None) -> int:
        variants = self._variants.get(key, set())
        chosen = list(variants) if variant is None else [variant] if variant in variants else []
        for v in chosen:
            self._remove((key, v))
        return len(chosen)

    async def purge_prefix(self, prefix: str) -> int:
        return sum([await self.delete(key) for key in await self.keys_with_prefix(prefix)])

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        return sorted(key for key in self._variants if key.startswith(prefix))

    def stats(self) -> StoreStats:
        return StoreStats(
            entries=len(self._lru), bytes=self._bytes, evictions=self._evictions,
            rejected=self._rejected, capacity=self.max_bytes,
        )

    def _remove(self, slot: tuple[str, str]) -> None:
        entry = self._lru.pop(slot)
        self._bytes -= cost(entry)
        variants = self._variants[slot[0]]
        variants.discard(slot[1])
        if not variants:
            del self._variants[slot[0]]
