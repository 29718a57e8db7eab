"""`--cache files:DIR?max=N` keeps the folder's entries within about N on disk, whatever
their sizes. Each file was charged its length, while the filesystem gives every file
whole 4 KiB blocks: a store of small answers (404s, redirects: some 300 bytes a file)
held ten times as many files as its cap allows, so they took more than ten times the cap
on disk (`du`) and their in-memory index grew as much. Real files in a temporary folder;
what the files occupy is read from the filesystem (st_blocks)."""

from __future__ import annotations

from pathlib import Path

from cache.entry import CacheEntry
from cache.files import FileStore
from cache.files_disk import SUFFIX

CAP = 1024 * 1024
PUTS = 2_000  # charged by length, about 4,000 of these fit the cap


def small_answer(i: int) -> CacheEntry:
    headers = (("Content-Type", "text/plain; charset=utf-8"),
               ("Date", "Sat, 28 Nov 2026 07:37:16 GMT"), ("X-Request-Id", f"{i:032x}"))
    return CacheEntry(f"GET http://www.example.com/missing/{i:09d}", "", 404, headers,
                      b"nope\n", 1.0, 1.0, "a")


def occupied(root: Path) -> int:
    """Bytes the store's entry files take on disk (as `du` counts them)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob(f"*{SUFFIX}"))


async def test_small_answers_fill_the_cap_by_what_they_take_on_disk(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=CAP, fsync=False)
    await store.open()
    try:
        for i in range(PUTS):
            await store.put(small_answer(i))
        stats = store.stats()
        on_disk = occupied(tmp_path)
        assert on_disk <= CAP, (f"{stats.entries} files take {on_disk / CAP:.1f}x the cap "
                                f"on disk, charged {stats.bytes} bytes")
        assert stats.bytes <= CAP and stats.evictions > 0
    finally:
        await store.close()
