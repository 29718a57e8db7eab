"""Cache stores: put/get ops/s of memory and files against a naive reference, and index rebuild.

The reference is what one would write in an afternoon: pickle each entry to its
own file, no temp file, no fsync, no checksum. Figures are ratios to it in the
same run (these machines are shared and noisy); nothing here asserts a speed.

    python -m bench.bench_stores [--n 2000] [--rebuild 10000] [--body 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import pickle
import tempfile
import time
from pathlib import Path

from cache.entry import CacheEntry
from cache.files import FileStore
from cache.memory import MemoryStore
from cache.store import CacheStore


class PickleFiles:
    """The naive reference: one pickle per key, written in place (not crash-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode()).hexdigest()

    async def put(self, entry: CacheEntry) -> bool:
        await asyncio.to_thread(self._path(entry.key).write_bytes, pickle.dumps([entry]))
        return True

    async def get(self, key: str) -> list[CacheEntry]:
        try:
            data = await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return []
        found: list[CacheEntry] = pickle.loads(data)
        return found


def _entries(n: int, body: int) -> list[CacheEntry]:
    now = time.time()
    headers = (("content-type", "text/html"), ("cache-control", "max-age=60"))
    return [
        CacheEntry(f"http://bench.example/page/{i}", "", 200, headers, bytes(body), now, now, "b")
        for i in range(n)
    ]


async def _rate(store: CacheStore | PickleFiles, entries: list[CacheEntry]) -> tuple[float, float]:
    start = time.perf_counter()
    for e in entries:
        await store.put(e)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    for e in entries:
        assert await store.get(e.key)
    get_s = time.perf_counter() - start
    return len(entries) / put_s, len(entries) / get_s


async def main_async(n: int, rebuild: int, body: int) -> None:
    entries = _entries(n, body)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pickle").mkdir()
        rows = {
            "naive pickle files (reference)": await _rate(PickleFiles(root / "pickle"), entries),
            "memory": await _rate(MemoryStore(1 << 30), entries),
        }
        for fsync in (False, True):
            store = FileStore(root / f"files-{fsync}", 1 << 30, fsync=fsync)
            await store.open()
            rows[f"files (fsync={'on' if fsync else 'off'})"] = await _rate(store, entries)
        ref_put, ref_get = rows["naive pickle files (reference)"]
        print(f"{n} entries, {body} B bodies, sequential awaits on one loop")
        print(f"{'store':<32} {'put/s':>10} {'get/s':>10} {'put x ref':>10} {'get x ref':>10}")
        for name, (put, get) in rows.items():
            print(f"{name:<32} {put:10.0f} {get:10.0f} {put / ref_put:10.2f} {get / ref_get:10.2f}")

        fill = FileStore(root / "rebuild", 1 << 34, fsync=False)
        await fill.open()
        await asyncio.gather(*(fill.put(e) for e in _entries(rebuild, body)))
        start = time.perf_counter()
        reopened = FileStore(root / "rebuild", 1 << 34)
        await reopened.open()
        took = time.perf_counter() - start
        count = reopened.stats().entries
        print(f"index rebuild at open(): {count} entries in {took * 1000:.0f} ms "
              f"({count / took:.0f} files/s, headers + metadata only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rebuild", type=int, default=10_000)
    parser.add_argument("--body", type=int, default=1024)
    args = parser.parse_args()
    asyncio.run(main_async(min(args.n, 100_000), min(args.rebuild, 1_000_000), args.body))


if __name__ == "__main__":
    main()
