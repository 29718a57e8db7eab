"""One contract, every store: memory, files (real files in a temp dir) and mongo (a real server).

The mongo rows run only when SCALE0_TEST_MONGO_URL points at a real MongoDB;
otherwise they are skipped with that reason — no mock stands in for it. The
files-only tests at the bottom damage files, restart the store, and share one
directory between two stores and two processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cache.entry import CacheEntry
from cache.files import FileStore
from cache.files_disk import relpath
from cache.files_format import MAGIC, encode_entry
from cache.memory import MemoryStore
from cache.mongo import MAX_BODY as MONGO_MAX_BODY
from cache.mongo import MongoStore
from cache.store import CacheStore

MONGO_URL = os.environ.get("SCALE0_TEST_MONGO_URL", "")
Make = Callable[..., Awaitable[CacheStore]]


def entry(key: str = "http://a.example/x", variant: str = "", body: bytes = b"hello",
          t: float = 100.0, origin: str = "n1") -> CacheEntry:
    return CacheEntry(key, variant, 200, (("content-type", "text/plain"),), body, t - 1, t, origin)


class Kit:
    """Builds stores of one kind inside one event loop and cleans them up after."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.stores: list[CacheStore] = []
        self.collections: list[str] = []

    async def make(self, max_bytes: int = 1 << 20, max_entry_bytes: int | None = None,
                   directory: Path | None = None) -> CacheStore:
        store: CacheStore
        if self.kind == "memory":
            store = MemoryStore(max_bytes, max_entry_bytes)
        elif self.kind == "files":
            store = FileStore(directory or self.tmp_path / "cache", max_bytes,
                              max_entry_bytes=max_entry_bytes, fsync=False)
        else:
            name = f"contract_{uuid.uuid4().hex}"
            self.collections.append(name)
            store = MongoStore(MONGO_URL, "scale0_test", name, max_bytes=max(max_bytes, 4096),
                               max_entry_bytes=max_entry_bytes or MONGO_MAX_BODY)
        await store.open()
        self.stores.append(store)
        return store

    def run(self, body: Callable[[Make], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await asyncio.wait_for(body(self.make), 60)
            finally:
                for store in self.stores:
                    await store.close()
                if self.collections:
                    from pymongo import AsyncMongoClient

                    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
                    for name in self.collections:
                        await client["scale0_test"][name].drop()
                    await client.close()

        asyncio.run(main())


@pytest.fixture(params=["memory", "files", "mongo"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    if request.param == "mongo" and not MONGO_URL:
        pytest.skip("SCALE0_TEST_MONGO_URL is not set")
    return Kit(request.param, tmp_path)


def test_put_get_delete(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make()
        assert await store.get("http://a.example/x") == []
        e = entry()
        assert await store.put(e)
        assert await store.get(e.key) == [e]
        assert await store.get("http://a.example/other") == []
        assert await store.delete(e.key) == 1
        assert await store.get(e.key) == []
        assert await store.delete(e.key) == 0
    kit.run(body)


def test_variants_per_key(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make()
        variants = [entry(variant=v, body=v.encode()) for v in ("", "br", "gzip")]
        for e in variants:
            assert await store.put(e)
        assert await store.get(variants[0].key) == variants
        assert await store.delete(variants[0].key, "br") == 1
        assert await store.delete(variants[0].key, "br") == 0
        assert await store.get(variants[0].key) == [variants[0], variants[2]]
        assert await store.delete(variants[0].key) == 2
        assert await store.get(variants[0].key) == []
    kit.run(body)


def test_newer_wins_in_any_order(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make()
        middle, old, new = entry(t=200, body=b"m"), entry(t=100, body=b"o"), entry(t=300, body=b"n")
        assert await store.put(middle)
        assert not await store.put(old)
        assert not await store.put(middle)  # the same version again is not newer
        assert await store.get(middle.key) == [middle]
        assert await store.put(new)
        assert await store.get(middle.key) == [new]
        tie = entry(t=300, body=b"t", origin="n2")  # same time: larger origin id wins
        assert await store.put(tie)
        assert not await store.put(new)
        assert await store.get(middle.key) == [tie]
    kit.run(body)


def test_purge_by_prefix(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make()
        keys = ["http://a.example/1", "http://a.example/2", "http://a.example.evil/1",
                "http://b.example/1", "http://a.example/.*"]
        for key in keys:
            assert await store.put(entry(key))
        await store.put(entry("http://a.example/1", variant="gzip"))
        assert await store.purge_prefix("http://a.example/") == 4
        for key in keys:
            assert bool(await store.get(key)) == (key in keys[2:4])
        assert await store.purge_prefix("http://a.example/") == 0
        assert await store.purge_prefix("") == 2
    kit.run(body)


def test_concurrent_writers(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make(max_bytes=8 << 20)
        puts = [entry(f"http://c.example/{i % 50}", body=b"%d" % i, t=float(i)) for i in range(200)]
        results = await asyncio.gather(*(store.put(e) for e in puts))
        assert sum(results) >= 50
        for k in range(50):
            (got,) = await store.get(f"http://c.example/{k}")
            assert got == puts[150 + k]  # the latest response time for that key won
    kit.run(body)


def test_eviction_at_the_cap(kit: Kit) -> None:
    async def body(make: Make) -> None:
        cap = 32 * 1024
        store = await make(max_bytes=cap)
        for i in range(100):
            assert await store.put(entry(f"http://e.example/{i}", body=bytes(1000), t=float(i)))
        assert await store.get("http://e.example/0") == []
        assert len(await store.get("http://e.example/99")) == 1
        if kit.kind != "mongo":  # a capped collection keeps its own size and counts nothing
            stats = store.stats()
            assert stats.bytes <= cap and stats.evictions > 0 and 0 < stats.entries < 100
    kit.run(body)


def test_too_large_entries_are_rejected(kit: Kit) -> None:
    async def body(make: Make) -> None:
        store = await make(max_bytes=1 << 20, max_entry_bytes=4096)
        assert not await store.put(entry(body=bytes(8000)))
        assert store.stats().rejected == 1
        assert await store.get(entry().key) == []
        assert await store.put(entry(body=bytes(1000)))
    kit.run(body)


# ---- files only ------------------------------------------------------------------------


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, 60)
    return asyncio.run(main())


async def _open(directory: Path, **kw: Any) -> FileStore:
    store = FileStore(directory, kw.pop("max_bytes", 1 << 20), fsync=kw.pop("fsync", False), **kw)
    await store.open()
    return store


def test_restart_keeps_the_cache(tmp_path: Path) -> None:
    async def body() -> None:
        first = await _open(tmp_path, fsync=True)
        written = [entry(f"http://r.example/{i}", variant=v) for i in range(20) for v in ("", "br")]
        for e in written:
            assert await first.put(e)
        await first.close()
        second = await _open(tmp_path)
        assert second.stats().entries == 40 and second.stats().bytes == first.stats().bytes
        assert await second.keys_with_prefix("http://r.example/1") == sorted(
            ["http://r.example/1", *(f"http://r.example/{i}" for i in range(10, 20))])
        for i in range(20):
            assert await second.get(f"http://r.example/{i}") == written[2 * i : 2 * i + 2]
    run(body())


def _file(root: Path, e: CacheEntry) -> Path:
    return root / relpath(e.key, e.variant)


def test_corrupt_and_truncated_files_are_discarded(tmp_path: Path) -> None:
    async def body() -> None:
        store = await _open(tmp_path)
        flipped, cut, fine = entry("http://f.example/1"), entry("http://f.example/2"), entry()
        for e in (flipped, cut, fine):
            await store.put(e)
        data = bytearray(_file(tmp_path, flipped).read_bytes())
        data[-20] ^= 0x40  # inside the body
        _file(tmp_path, flipped).write_bytes(bytes(data))
        assert await store.get(flipped.key) == []
        assert store.stats().corrupt == 1 and not _file(tmp_path, flipped).exists()
        full = _file(tmp_path, cut).read_bytes()
        _file(tmp_path, cut).write_bytes(full[: len(full) // 2])
        restarted = await _open(tmp_path)  # found by the scan at open, from the header alone
        assert restarted.stats().corrupt == 1 and restarted.stats().entries == 1
        assert await restarted.get(cut.key) == []
        assert await restarted.get(fine.key) == [fine]
    run(body())


HOSTILE = [
    b"",
    os.urandom(5000),
    MAGIC + b"\x01\x00\x00\x00" + b"\xff" * 16,  # huge lengths
    MAGIC + b"\x01\x00\x00\x00\x00\x00\x00\x10" + b"\x00" * 8 + b"\x00" * 4 + b"\x90" * 16,
    encode_entry(entry("http://someone.else/")),  # valid, but not the key its name says
    encode_entry(entry())[:-1] + b"\x00",
]


@pytest.mark.parametrize("content", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_files_never_crash(tmp_path: Path, content: bytes) -> None:
    async def body() -> None:
        target = entry()
        path = _file(tmp_path, target)
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        store = await _open(tmp_path)  # damage in the body shows only when it is read
        assert await store.get(target.key) == []
        assert store.stats().corrupt == 1 and store.stats().entries == 0
        assert not path.exists()
        path.write_bytes(content)
        assert await store.get(target.key) == []
        assert store.stats().corrupt == 2
        assert await store.put(target) and await store.get(target.key) == [target]
    run(body())


def test_links_fifos_directories_and_strangers_are_left_harmless(tmp_path: Path) -> None:
    async def body() -> None:
        victims = [entry(f"http://h.example/{i}") for i in range(3)]
        paths = [_file(tmp_path, e) for e in victims]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "outside").write_bytes(encode_entry(victims[0]))
        paths[0].symlink_to(tmp_path / "outside")
        os.mkfifo(paths[1])  # opening it blocking would hang a reader forever
        paths[2].mkdir()
        (tmp_path / "README").write_text("not ours")
        store = await _open(tmp_path)
        for e in victims:
            assert await store.get(e.key) == []
        assert (tmp_path / "README").exists() and (tmp_path / "outside").exists()
    run(body())


def test_two_stores_share_one_directory(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = await _open(tmp_path), await _open(tmp_path)
        e = entry()
        assert await a.put(e)
        assert await b.get(e.key) == [e]  # written by the other store after b opened
        assert not await b.put(entry(t=50))  # newer-wins checks the file, not b's index
        await asyncio.gather(*(s.put(entry(f"http://s/{i}", t=float(i + n)))
                               for i in range(40) for n, s in enumerate((a, b))))
        for i in range(40):
            assert await a.get(f"http://s/{i}") == await b.get(f"http://s/{i}") == [
                entry(f"http://s/{i}", t=float(i + 1))]
        assert await b.delete(e.key) == 1
        assert await a.get(e.key) == []
        assert await a.purge_prefix("http://s/") == 40
        assert await b.get("http://s/3") == []
        assert a.stats().corrupt == b.stats().corrupt == 0
    run(body())


CHILD = textwrap.dedent("""
    import asyncio, sys
    from cache.entry import CacheEntry
    from cache.files import FileStore
    async def main():
        store = FileStore(sys.argv[1], 1 << 24, fsync=False)
        await store.open()
        await store.put(CacheEntry("http://p/start", "", 200, (), b"", 0.0, 0.0))
        for i in range(int(sys.argv[2])):
            t = 2.0 if i % 2 == 0 else 1.0
            await store.put(CacheEntry(f"http://p/{i}", "", 200, (), b"child", t - 1, t, "child"))
            await store.get(f"http://p/{(i * 7) % int(sys.argv[2])}")
    asyncio.run(main())
""")


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    n = 300
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(n)])

    async def body() -> None:
        store = await _open(tmp_path, max_bytes=1 << 24)
        deadline = time.monotonic() + 30
        while not await store.get("http://p/start"):  # start together: the child is writing
            assert time.monotonic() < deadline and child.poll() is None, "child never started"
            await asyncio.sleep(0.01)
        for i in range(n):
            t = 1.0 if i % 2 == 0 else 2.0
            await store.put(CacheEntry(f"http://p/{i}", "", 200, (), b"parent", t - 1, t, "parent"))
            await store.get(f"http://p/{(i * 11) % n}")
        assert await asyncio.to_thread(child.wait, 60) == 0
        for i in range(n):
            (got,) = await store.get(f"http://p/{i}")
            assert got.body == (b"child" if i % 2 == 0 else b"parent")
        assert store.stats().corrupt == 0
        assert (await _open(tmp_path, max_bytes=1 << 24)).stats().entries == n + 1
    try:
        run(body())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
