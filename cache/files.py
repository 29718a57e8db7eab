"""The embedded default store: one checksummed file per entry in a sharded directory tree.

The directory is the truth; the in-memory index (file → key, variant, size, in
least-recently-used order) is a view of it used for the byte cap, eviction and
purge-by-prefix, rebuilt at open() by reading only headers and metadata. The cap
counts what files take on disk, in whole 4 KiB blocks (`on_disk`). Reads
go to disk every time (list the key's small shard directory, read, verify), so
entries written by another process sharing the directory are found, and files
another process removed are simply gone. Eviction is LRU over this process's
view: access order in memory, seeded from file mtimes at open, evicting from the
cold end down to a low-water mark (90% of the cap) so puts do not evict one file
at a time. All file I/O runs in worker threads (asyncio.to_thread); the index
is touched only on the event loop. The one exception is a miss: a key whose shard
directory does not exist, or has not changed since a listing found none of its
files, is answered absent after one stat(2) on the loop (`_surely_absent`), because
a thread hop would cost a miss more than everything else the store does for it.

Sharing one directory between nodes on one machine: writes are atomic renames,
a put keeps an existing newer entry (newer-wins is checked against the file on
disk), vanished files are tolerated everywhere. Each node enforces the cap over
what it has seen (its own writes, what it read, what was there at open), and a
purge removes the keys it knows; purges reach every node, so together they
remove everything. A damaged file (checksum, length, format, a name that does
not match its contents) is deleted and counted in stats().corrupt, never served.
A disk smaller than the cap (or filled by others): a put that finds no room (ENOSPC,
EDQUOT) logs a warning (at most once a minute) naming the directory, lowers the
*effective* cap to what this store holds, evicts down to the low-water mark of that
and tries once more, so the newest entries keep being stored. The lowered cap is
temporary: after `room_retry` seconds (default 60) the configured cap applies again,
and if the disk is still full the next put lowers it again (one failed write per
period). So the store follows the room the disk really has, grows back when space is
freed by anyone, and never stays shrunk until a restart. stats().capacity is the
cap in force; stats().errors counts failures by operation (get, put, delete, evict).

A delete or purge the disk refuses (read-only filesystem, a shard directory without
write permission, an I/O error) is never a silent success: the files that could not
be removed are remembered in memory by identity (device, inode, mtime) and treated
as absent by get(), so a purged entry is not served again although its bytes are
still there; the unlink is retried at most every `room_retry` seconds (and the mark
is dropped once the file is gone or replaced by a newer write), and the delete
raises DeleteFailed (an OSError) after doing all it could, with the counts. The mark
lives as long as this process (one small record per undeletable file, so bounded by
what the store held); a restarted node relies on the mesh's purge record instead.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
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
_ABSENT_REMEMBERED = 16384  # key hashes known absent (cleared when full)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_WARN_EVERY = 60.0  # seconds between two warnings of one kind
log = logging.getLogger("scale0.cache.files")


class DeleteFailed(OSError):
    """A delete or purge that could not remove every file: `removed` were removed,
    `failed` could not be (they are hidden from get() and retried later). The errno and
    text are those of the first failure."""

    def __init__(self, root: Path, removed: int, failed: int, first: OSError) -> None:
        why = first.strerror or str(first)
        super().__init__(
            first.errno,
            f"{failed} file(s) under {root} could not be deleted ({why}); they are not "
            "served and are deleted when the disk allows",
        )
        self.removed, self.failed = removed, failed


@dataclass(slots=True)
class _Item:
    key: str
    variant: str
    size: int


# What a file takes on disk: whole blocks of the usual filesystem (ext4, XFS, tmpfs pages).
BLOCK = 4096


def on_disk(size: int) -> int:
    """The bytes a file of `size` occupies, as the cap counts them (`du`, not `ls`): a
    400-byte answer charged 400 let the cap hold ten times as many files, so the folder
    took ten times the cap on disk and the index as much memory."""
    return -(-max(size, 1) // BLOCK) * BLOCK


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
        room_retry: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
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
        self.room_retry = room_retry
        self._clock = clock
        self._room_cap: int | None = None  # the lowered cap after ENOSPC, until _room_until
        self._room_until = 0.0
        self._errors: Counter[str] = Counter()
        # key → {rel: identity} of files a delete could not remove: hidden from get().
        self._undeleted: dict[str, dict[str, disk.FileId | None]] = {}
        self._next_retry = 0.0
        self._warned: dict[str, float] = {}
        # key hash → its shard directory's settled mtime when a listing found none of its
        # files: until the directory changes, a lookup of that key needs no thread.
        self._absent: dict[str, int] = {}

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
        await self._retry_deletes()
        kh = disk.key_hash(key)
        if key not in self._by_key and self._surely_absent(kh):
            return []
        try:
            found, corrupt, settled = await asyncio.to_thread(
                disk.load_key, self.root, key, self._read_limit)
        except OSError:
            self._errors["get"] += 1
            raise
        self._corrupt += corrupt
        if found or settled is None:
            self._absent.pop(kh, None)
        else:
            if len(self._absent) >= _ABSENT_REMEMBERED:
                self._absent.clear()  # bounded; the next lookups simply list again
            self._absent[kh] = settled
        hidden = self._undeleted.get(key)
        if hidden:
            found = [f for f in found if not self._hides(key, hidden, f[0], f[3])]
        present = {rel for rel, _, _, _ in found}
        for rel in self._by_key.get(key, set()) - present:
            self._index_drop(rel)  # removed by someone else, or damaged
        for rel, entry, size, _ in found:
            self._index_set(rel, key, entry.variant, size)
        return sorted((entry for _, entry, _, _ in found), key=lambda e: e.variant)

    def _surely_absent(self, kh: str) -> bool:
        """No file of key hash `kh` can be on disk, known without a thread: its shard
        directory does not exist, or has not changed since a listing found none of its
        files (disk.settled_mtime). One stat(2) on the loop, answered from the kernel's
        dentry cache, where a thread hop costs a miss ~50 µs (nginx, too, looks its
        cache files up on its event loop). Anything unusual (EACCES, EIO) says no: the
        thread's listing then reports it."""
        try:
            mtime = disk.shard_mtime(self.root, kh)
        except OSError:
            return False
        if mtime is None:
            self._absent.pop(kh, None)
            return True
        return self._absent.get(kh) == mtime

    def _hides(self, key: str, hidden: dict[str, disk.FileId | None], rel: str,
               ident: disk.FileId) -> bool:
        """Whether the file at `rel` is one a delete could not remove (so: absent)."""
        if rel not in hidden:
            return False
        want = hidden[rel]
        if want is None or want == ident:
            return True
        del hidden[rel]  # replaced since by a newer write: that one is not purged
        if not hidden:
            del self._undeleted[key]
        return False

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
        await self._retry_deletes()
        try:
            try:
                written = await self._write(rel, parts, entry)
            except OSError as exc:
                if exc.errno not in _NO_ROOM or not self._lru:
                    raise
                # The disk is smaller than the cap (or others filled it): what we hold is
                # what fits for now. Make room as eviction does and try once more, so the
                # newest entries keep being stored instead of none at all.
                self._lower_cap(exc)
                await self._evict(force=True)
                written = await self._write(rel, parts, entry)
        except OSError:
            self._errors["put"] += 1
            raise
        if written:
            self._forget_undeleted(entry.key, rel)  # the rename replaced that file
        await self._evict()
        return written

    @property
    def capacity(self) -> int:
        """The byte cap in force: max_bytes, or less for a while after the disk was full."""
        if self._room_cap is None:
            return self.max_bytes
        if self._clock() >= self._room_until:
            log.info("files store %s: trying the configured cap of %d bytes again "
                     "(it was lowered to %d because the disk was full)",
                     self.root, self.max_bytes, self._room_cap)
            self._room_cap = None
            return self.max_bytes
        return min(self.max_bytes, self._room_cap)

    def _lower_cap(self, exc: OSError) -> None:
        held = max(1, self._bytes)
        self._room_cap = held
        self._room_until = self._clock() + self.room_retry
        self._warn("room", "files store %s: no room on the disk (%s) with %d bytes held; "
                   "storing at most that (configured cap %d) for %gs, evicting the coldest "
                   "entries first, then the configured cap is tried again",
                   self.root, exc.strerror or exc, held, self.max_bytes, self.room_retry)

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        now = self._clock()
        last = self._warned.get(kind)
        if last is None or now - last >= _WARN_EVERY:
            self._warned[kind] = now
            log.warning(msg, *args)

    async def _write(self, rel: str, parts: tuple[bytes, ...], entry: CacheEntry) -> bool:
        async with self._locks[zlib.crc32(rel.encode()) % _LOCK_STRIPES]:
            written, size = await asyncio.to_thread(
                disk.write_entry, self.root, rel, parts, entry,
                limit=self._read_limit, fsync=self.fsync,
            )
            self._index_set(rel, entry.key, entry.variant, size)
        return written

    async def delete(self, key: str, variant: str | None = None) -> int:
        """Remove the key's files (one variant, or all): how many. If the disk refuses
        some, those are hidden from get() and DeleteFailed is raised after the rest."""
        failed: list[disk.Undeleted] = []
        try:
            on_disk = await asyncio.to_thread(disk.list_key, self.root, disk.key_hash(key))
        except OSError as exc:  # the shard cannot even be listed: hide what we know of
            known = (set(self._by_key.get(key, ())) if variant is None
                     else {disk.relpath(key, variant)})
            if not known:  # nothing to hide, but never a silent success (the stage marks it)
                self._errors["delete"] += 1
                raise
            failed = [disk.Undeleted(rel, None, exc) for rel in sorted(known)]
            on_disk = []
        wanted = None if variant is None else disk.variant_hash(variant)
        rels = [rel for rel, vh in on_disk if wanted is None or vh == wanted]
        if variant is None:
            for rel in list(self._by_key.get(key, ())):
                self._index_drop(rel)
        else:
            self._index_drop(disk.relpath(key, variant))
        removed, refused = await asyncio.to_thread(disk.unlink_all, self.root, rels)
        failed += refused
        if not failed:
            self._forget_undeleted(key, *rels)
            return removed
        self._errors["delete"] += len(failed)
        if not self._undeleted:  # the first retry comes room_retry seconds from now
            self._next_retry = self._clock() + self.room_retry
        hidden = self._undeleted.setdefault(key, {})
        for f in failed:
            hidden[f.rel] = f.ident
        self._forget_undeleted(key, *(set(rels) - {f.rel for f in failed}))
        raise DeleteFailed(self.root, removed, len(failed), failed[0].error)

    async def purge_prefix(self, prefix: str) -> int:
        removed = failed = 0
        first: DeleteFailed | None = None
        for key in await self.keys_with_prefix(prefix):
            try:
                removed += await self.delete(key)
            except DeleteFailed as exc:  # go on: every key the disk lets us remove goes
                removed += exc.removed
                failed += exc.failed
                first = first or exc
        if first is not None:
            raise DeleteFailed(self.root, removed, failed, first)
        return removed

    def _forget_undeleted(self, key: str, *rels: str) -> None:
        hidden = self._undeleted.get(key)
        if hidden is None:
            return
        for rel in rels:
            hidden.pop(rel, None)
        if not hidden:
            del self._undeleted[key]

    async def _retry_deletes(self) -> None:
        """Try again (at most every room_retry seconds) to remove the files hidden
        because a delete could not remove them."""
        if not self._undeleted or self._clock() < self._next_retry:
            return
        self._next_retry = self._clock() + self.room_retry
        todo = [(key, rel, ident) for key, hidden in self._undeleted.items()
                for rel, ident in hidden.items()]
        gone = await asyncio.to_thread(disk.unlink_same, self.root,
                                       [(rel, ident) for _, rel, ident in todo])
        for key, rel, _ in todo:
            if rel in gone:
                self._forget_undeleted(key, rel)

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys this store's index knows that start with `prefix` (sorted)."""
        return sorted(key for key in self._by_key if key.startswith(prefix))

    def stats(self) -> StoreStats:
        return StoreStats(
            entries=len(self._lru), bytes=self._bytes, evictions=self._evictions,
            corrupt=self._corrupt, rejected=self._rejected, capacity=self.capacity,
            errors=dict(self._errors),
        )

    async def _evict(self, force: bool = False) -> None:
        """Bring the bytes under the cap: coldest first, down to the low-water mark."""
        cap = self.capacity
        if self._bytes <= cap and not force:
            return
        target = int(cap * self.low_water)
        victims = []
        while self._bytes > target and self._lru:
            rel = next(iter(self._lru))
            self._index_drop(rel)
            victims.append(rel)
        self._evictions += len(victims)
        _, failed = await asyncio.to_thread(disk.unlink_all, self.root, victims)
        if failed:  # not hidden (an evicted entry may be served); the disk holds on to it
            self._errors["evict"] += len(failed)
            self._warn("evict", "files store %s: %d evicted file(s) could not be deleted: %s",
                       self.root, len(failed), failed[0].error)

    def _index_set(self, rel: str, key: str, variant: str, size: int) -> None:
        size = on_disk(size)
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
