"""The embedded default store: one checksummed file per entry in a sharded directory tree.

The directory is the truth; the in-memory index (file → key, variant, size, in
least-recently-used order) is a view of it used for the byte cap, eviction and
purge-by-prefix, rebuilt at open() by reading only headers and metadata. Reads
go to disk every time (list the key's small shard directory, read, verify), so
entries written by another process sharing the directory are found, and files
another process removed are simply gone. Eviction is LRU over this process's
view: access order in memory, seeded from file mtimes at open, evicting from the
cold end down to a low-water mark (90% of the cap) so puts do not evict one file
at a time. All file I/O runs in worker threads (asyncio.to_thread); the index
is touched only on the event loop.

Sharing one directory between nodes on one machine: writes are atomic renames,
a put keeps an existing newer entry (newer-wins is checked against the file on
disk), vanished files are tolerated everywhere. Each node enforces the cap over
what it has seen (its own writes, what it read, what was there at open), and a
purge removes the keys it knows; purges reach every node, so together they
remove everything. A damaged file (checksum, length, format, a name that does
not match its contents) is deleted and counted in stats().corrupt, never served.
A disk smaller than the cap: a put that finds no room (ENOSPC, EDQUOT) lowers the
cap to what this store holds, evicts as usual and tries once more (until a restart).
"""

from __future__ import annotations

import asyncio
import errno
import os
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cache import files_disk as disk
from cache.entry import CacheEntry
from cache.files_format import DIGEST_SIZE, HEADER_SIZE, MAX_BODY, MAX_META, EntryFormatError
from cache.files_format import encode_parts as _encode_parts
from cache.store import StoreStats

DEFAULT_DIRECTORY = "scale0-cache"
DEFAULT_MAX_BYTES = 1 << 30
_LOCK_STRIPES = 64
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


@dataclass(slots=True)
class _Item:
    key: str
    variant: str
    size: int


class FileStore:
    # Entries outlive the process and only this node's purges remove them: a purge made
    # while it was down is missed unless the node asks (node.replication's purge record).
    local_persistent = True

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        max_entry_bytes: int | None = None,
        low_water: float = 0.9,
        fsync: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"files store: max_bytes must be positive, not {max_bytes}")
        if not 0.0 < low_water <= 1.0:
            raise ValueError(f"files store: low_water must be in (0, 1], not {low_water}")
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes if max_entry_bytes is None else max_entry_bytes
        self.low_water = low_water
        self.fsync = fsync
        # A file bigger than this cannot have been written by a store like us: damaged.
        self._read_limit = min(max_bytes, MAX_BODY) + HEADER_SIZE + MAX_META + DIGEST_SIZE
        self._lru: OrderedDict[str, _Item] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self._bytes = 0
        self._evictions = 0
        self._corrupt = 0
        self._rejected = 0
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]

    @classmethod
    def from_spec(cls, location: str, options: Mapping[str, str]) -> FileStore:
        """`files`, `files:DIR`, `files:DIR?max=10GiB&max_entry=64MiB&fsync=off`."""
        from cache.stores import parse_bool, parse_size, unknown_options

        unknown_options("files", options, {"max", "max_entry", "fsync"})
        return cls(
            location or DEFAULT_DIRECTORY,
            parse_size(options["max"]) if "max" in options else DEFAULT_MAX_BYTES,
            max_entry_bytes=parse_size(options["max_entry"]) if "max_entry" in options else None,
            fsync=parse_bool("files", "fsync", options["fsync"]) if "fsync" in options else True,
        )

    async def open(self) -> None:
        """Create the directory and rebuild the index from the files already there."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        found, corrupt = await asyncio.to_thread(disk.scan, self.root, self._read_limit)
        self._corrupt += corrupt
        self._lru.clear()
        self._by_key.clear()
        self._bytes = 0
        for f in sorted(found, key=lambda f: f.mtime):  # oldest first = coldest
            self._index_set(f.rel, f.key, f.variant, f.size)
        await self._evict()

    async def close(self) -> None:
        return None  # every write is complete and durable when put() returns

    async def get(self, key: str) -> list[CacheEntry]:
        found, corrupt = await asyncio.to_thread(disk.load_key, self.root, key, self._read_limit)
        self._corrupt += corrupt
        present = {rel for rel, _, _ in found}
        for rel in self._by_key.get(key, set()) - present:
            self._index_drop(rel)  # removed by someone else, or damaged
        for rel, entry, size in found:
            self._index_set(rel, key, entry.variant, size)
        return sorted((entry for _, entry, _ in found), key=lambda e: e.variant)

    async def put(self, entry: CacheEntry) -> bool:
        if entry.size > self.max_entry_bytes:
            self._rejected += 1
            return False
        try:
            parts = _encode_parts(entry)
        except EntryFormatError:
            self._rejected += 1
            return False
        rel = disk.relpath(entry.key, entry.variant)
        try:
            written = await self._write(rel, parts, entry)
        except OSError as exc:
            if exc.errno not in _NO_ROOM or not self._lru:
                raise
            # The disk is smaller than the cap (or others filled it): what we hold is
            # what fits. Keep that as the cap, make room as eviction does, try once more,
            # so the newest entries keep being stored instead of none at all.
            self.max_bytes = max(1, self._bytes)
            await self._evict(force=True)
            written = await self._write(rel, parts, entry)
        await self._evict()
        return written

    async def _write(self, rel: str, parts: tuple[bytes, ...], entry: CacheEntry) -> bool:
        async with self._locks[zlib.crc32(rel.encode()) % _LOCK_STRIPES]:
            written, size = await asyncio.to_thread(
                disk.write_entry, self.root, rel, parts, entry,
                limit=self._read_limit, fsync=self.fsync,
            )
            self._index_set(rel, entry.key, entry.variant, size)
        return written

    async def delete(self, key: str, variant: str | None = None) -> int:
        on_disk = await asyncio.to_thread(disk.list_key, self.root, disk.key_hash(key))
        wanted = None if variant is None else disk.variant_hash(variant)
        rels = [rel for rel, vh in on_disk if wanted is None or vh == wanted]
        if variant is None:
            for rel in list(self._by_key.get(key, ())):
                self._index_drop(rel)
        else:
            self._index_drop(disk.relpath(key, variant))
        return await asyncio.to_thread(disk.unlink_all, self.root, rels)

    async def purge_prefix(self, prefix: str) -> int:
        removed = 0
        for key in await self.keys_with_prefix(prefix):
            removed += await self.delete(key)
        return removed

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys this store's index knows that start with `prefix` (sorted)."""
        return sorted(key for key in self._by_key if key.startswith(prefix))

    def stats(self) -> StoreStats:
        return StoreStats(
            entries=len(self._lru), bytes=self._bytes, evictions=self._evictions,
            corrupt=self._corrupt, rejected=self._rejected,
        )

    async def _evict(self, force: bool = False) -> None:
        """Bring the bytes under the cap: coldest first, down to the low-water mark."""
        if self._bytes <= self.max_bytes and not force:
            return
        target = int(self.max_bytes * self.low_water)
        victims = []
        while self._bytes > target and self._lru:
            rel = next(iter(self._lru))
            self._index_drop(rel)
            victims.append(rel)
        self._evictions += len(victims)
        await asyncio.to_thread(disk.unlink_all, self.root, victims)

    def _index_set(self, rel: str, key: str, variant: str, size: int) -> None:
        old = self._lru.get(rel)
        if old is not None:
            self._bytes -= old.size
            self._lru.move_to_end(rel)
        self._lru[rel] = _Item(key, variant, size)
        self._bytes += size
        self._by_key.setdefault(key, set()).add(rel)

    def _index_drop(self, rel: str) -> None:
        item = self._lru.pop(rel, None)
        if item is None:
            return
        self._bytes -= item.size
        rels = self._by_key.get(item.key)
        if rels is not None:
            rels.discard(rel)
            if not rels:
                del self._by_key[item.key]
