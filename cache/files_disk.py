"""Blocking file operations of the `files` store (run in worker threads, never on the loop).

Layout: ROOT/ab/cd/<sha256(key)>-<blake2b-64(variant)>.s0c, where "abcd" are the
first four hex digits of the key hash, so a key's variants share one small
directory and a lookup lists just that directory. Files appear only by
rename(2) of a fully written and fsynced temp file from the same directory, so
a reader sees a whole old file or a whole new one — also when several processes
share the tree; writers of one shard take its `.lock` (flock) so that the
newer-wins check and the rename are one step across processes. Everything here
tolerates files vanishing between list and open (another process evicted or
purged them), and treats every file as untrusted:
no symlinks, no FIFOs (opened non-blocking), sizes checked before reading, and
the entry inside must hash to the file's own name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cache.entry import CacheEntry
from cache.files_format import (
    HEADER_SIZE,
    EntryFormatError,
    decode_entry,
    decode_header,
    decode_meta,
)

SUFFIX = ".s0c"
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
STALE_TMP_SECONDS = 600.0  # a temp file this old belongs to a writer that died
_NAME = re.compile(r"([0-9a-f]{64})-([0-9a-f]{16})\.s0c")
_SHARD = re.compile(r"[0-9a-f]{2}")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

StrPath = str | os.PathLike[str]
SETTLED_NS = 2_000_000_000  # see settled_mtime
_FIRST_READ = 4096  # header + metadata of almost every entry in one read(2)
FileId = tuple[int, int, int]  # (device, inode, mtime_ns): "the same file I read"


@dataclass(frozen=True, slots=True)
class Found:
    """One valid entry file: where, whose, how big (bytes on disk), when written."""

    rel: str
    key: str
    variant: str
    size: int
    mtime: float


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def variant_hash(variant: str) -> str:
    return hashlib.blake2b(variant.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def relpath(key: str, variant: str) -> str:
    kh = key_hash(key)
    return f"{kh[:2]}/{kh[2:4]}/{kh}-{variant_hash(variant)}{SUFFIX}"


def read_entry(path: StrPath, limit: int) -> tuple[CacheEntry, int, FileId]:
    """The verified entry in `path`, its size and identity (FileNotFoundError if gone)."""
    data, ident = _read(path, limit, whole=True)
    return decode_entry(data), len(data), ident


def read_meta(path: StrPath, limit: int) -> tuple[CacheEntry, int, FileId]:
    """Like read_entry but reads only header + metadata (body empty, checksum unchecked)."""
    data, ident = _read(path, limit, whole=False)
    return decode_meta(data[HEADER_SIZE:]), decode_header(data).file_size, ident


def _read(path: StrPath, limit: int, whole: bool) -> tuple[bytes, FileId]:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EntryFormatError("entry file is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EntryFormatError("entry file is not a regular file")
        if st.st_size > limit:
            raise EntryFormatError(f"entry file of {st.st_size} bytes exceeds {limit}")
        # Whole reads ask one byte more: a file that grew under us is not trusted.
        data = os.read(fd, st.st_size + 1 if whole else _FIRST_READ)
        header = decode_header(data)
        if header.file_size != st.st_size:
            raise EntryFormatError(
                f"file is {st.st_size} bytes, header says {header.file_size} (truncated?)"
            )
        want = st.st_size + 1 if whole else HEADER_SIZE + header.meta_len
        while len(data) < want:
            chunk = os.read(fd, want - len(data))
            if not chunk:
                break
            data += chunk
        if (len(data) != st.st_size) if whole else (len(data) < want):
            raise EntryFormatError("entry file changed size while being read")
        return (data if whole else data[:want]), (st.st_dev, st.st_ino, st.st_mtime_ns)
    finally:
        os.close(fd)


def discard(path: StrPath, ident: FileId | None) -> None:
    """Remove a damaged file, unless someone replaced it since we read it."""
    try:
        st = os.lstat(path)
        if ident is not None and (st.st_dev, st.st_ino, st.st_mtime_ns) != ident:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
    except OSError:
        pass


def load_key(
    root: Path, key: str, limit: int
) -> tuple[list[tuple[str, CacheEntry, int, FileId]], int, int | None]:
    """Every valid variant file of `key` as (rel, entry, size, identity), how many were
    corrupt, and the key's shard directory's mtime (ns) if it had settled before the
    listing (`settled_mtime`; None otherwise, or when there is no such directory)."""
    kh = key_hash(key)
    found: list[tuple[str, CacheEntry, int, FileId]] = []
    corrupt = 0
    settled = settled_mtime(root, kh)
    for rel, vh in list_key(root, kh):
        path = root / rel
        ident: FileId | None = None
        try:
            entry, size, got = read_entry(path, limit)
            ident = got
            if entry.key != key or variant_hash(entry.variant) != vh:
                raise EntryFormatError("entry does not belong under this file name")
        except FileNotFoundError:
            continue
        except (EntryFormatError, OSError):
            corrupt += 1
            discard(path, ident)
            continue
        found.append((rel, entry, size, got))
    return found, corrupt, settled


def shard_dir(root: StrPath, kh: str) -> str:
    """The directory a key hash's files live in."""
    return f"{os.fspath(root)}/{kh[:2]}/{kh[2:4]}"


def shard_mtime(root: StrPath, kh: str) -> int | None:
    """The mtime (ns) of key hash `kh`'s shard directory; None when there is none (so no
    file of the key can exist). OSError for anything else (permission, I/O)."""
    try:
        return os.stat(shard_dir(root, kh)).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return None


def settled_mtime(root: StrPath, kh: str, now_ns: int | None = None) -> int | None:
    """The shard directory's mtime if it is at least SETTLED_NS older than now, else None.

    A directory's mtime changes whenever a file is renamed into it or removed, but it
    is stamped from the kernel's coarse clock (a few ms) and some filesystems keep
    whole seconds: a change in the same tick as the mtime we saw could leave it equal.
    Once it is this old, any later change stamps a visibly newer value ("racy git"'s
    rule), so an unchanged mtime then means an unchanged directory."""
    now = time.time_ns() if now_ns is None else now_ns
    try:
        mtime = shard_mtime(root, kh)
    except OSError:
        return None
    return mtime if mtime is not None and now - mtime >= SETTLED_NS else None


def list_key(root: Path, kh: str) -> list[tuple[str, str]]:
    """(rel, variant hash) of every entry file named for key hash `kh`."""
    shard = f"{kh[:2]}/{kh[2:4]}"
    try:
        names = os.listdir(root / shard)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match and match.group(1) == kh:
            out.append((f"{shard}/{name}", match.group(2)))
    return out


def write_entry(
    root: Path, rel: str, parts: tuple[bytes, ...], entry: CacheEntry, *, limit: int, fsync: bool
) -> tuple[bool, int]:
    """Write `entry` at `rel` unless a newer one is there: (written?, size now on disk)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # The shard's lock file serialises writers of all processes sharing the tree, so
    # the newer-wins check and the rename are one step (readers never lock).
    lock_fd = os.open(path.parent / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return _write_locked(path, parts, entry, limit, fsync)
    finally:
        os.close(lock_fd)


def _write_locked(
    path: Path, parts: tuple[bytes, ...], entry: CacheEntry, limit: int, fsync: bool
) -> tuple[bool, int]:
    try:
        old, old_size, _ = read_meta(path, limit)
        if old.key == entry.key and old.variant == entry.variant and not entry.newer_than(old):
            return False, old_size
    except (FileNotFoundError, EntryFormatError):
        pass  # nothing there, or a damaged file that we are about to replace anyway
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return True, sum(len(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Undeleted:
    """A file that unlink(2) refused (read-only filesystem, no write permission on its
    shard directory, I/O error): where, which file (None when even lstat failed), why."""

    rel: str
    ident: FileId | None
    error: OSError


def unlink_all(root: Path, rels: list[str]) -> tuple[int, list[Undeleted]]:
    """Remove these files: how many this call removed (vanished ones do not count) and
    the ones the disk refused to remove. Never raises for a file's own failure."""
    removed = 0
    failed: list[Undeleted] = []
    for rel in rels:
        try:
            os.unlink(root / rel)
            removed += 1
        except (FileNotFoundError, IsADirectoryError):
            pass  # gone already, or not a file of ours (load_key counts it as damaged)
        except OSError as exc:
            failed.append(Undeleted(rel, identity(root / rel), exc))
    return removed, failed


def unlink_same(root: Path, files: list[tuple[str, FileId | None]]) -> set[str]:
    """Retry removing files a delete could not remove; the rels that are now gone, or
    were replaced by another file since (identity differs), so no longer to be hidden."""
    gone = set()
    for rel, ident in files:
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            gone.add(rel)
            continue
        except OSError:
            continue  # cannot even look: stays hidden
        if ident is not None and (st.st_dev, st.st_ino, st.st_mtime_ns) != ident:
            gone.add(rel)
            continue
        try:
            os.unlink(root / rel)
            gone.add(rel)
        except FileNotFoundError:
            gone.add(rel)
        except OSError:
            pass  # still refused: stays hidden
    return gone


def identity(path: StrPath) -> FileId | None:
    """The (device, inode, mtime) of `path`, or None if it cannot be had."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def scan(root: Path, limit: int, now: float | None = None) -> tuple[list[Found], int]:
    """Every valid entry file under `root` (header + metadata read only), and the corrupt count.

    Damaged files are discarded, stale temp files of dead writers removed, and
    anything not named like ours left alone."""
    now = time.time() if now is None else now
    found: list[Found] = []
    corrupt = 0
    for top in _subdirs(str(root)):
        for shard in _subdirs(top):
            try:
                names = os.listdir(shard)
            except OSError:
                continue
            rel_dir = shard[len(str(root)) + 1 :]
            for name in names:
                path = f"{shard}/{name}"
                if name.startswith(TMP_PREFIX):
                    _drop_stale_tmp(path, now)
                    continue
                match = _NAME.fullmatch(name)
                if not match:
                    continue
                ident: FileId | None = None
                try:
                    meta, size, ident = read_meta(path, limit)
                    mtime = ident[2] / 1e9
                    if key_hash(meta.key) != match.group(1) or variant_hash(
                        meta.variant
                    ) != match.group(2):
                        raise EntryFormatError("entry does not belong under this file name")
                except FileNotFoundError:
                    continue
                except (EntryFormatError, OSError):
                    corrupt += 1
                    discard(path, ident)
                    continue
                found.append(Found(f"{rel_dir}/{name}", meta.key, meta.variant, size, mtime))
    return found, corrupt


def _subdirs(parent: str) -> list[str]:
    try:
        with os.scandir(parent) as it:
            return [
                d.path for d in it if _SHARD.fullmatch(d.name) and d.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return []


def _drop_stale_tmp(path: str, now: float) -> None:
    try:
        if now - os.lstat(path).st_mtime > STALE_TMP_SECONDS:
            os.unlink(path)
    except OSError:
        pass
