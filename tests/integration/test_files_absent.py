"""The files store answers a miss without a thread, and never hides an entry by it.

A lookup of a key with no file costs one stat(2) on the loop when the key's shard
directory does not exist, or has not changed since a listing found none of the key's
files (cache.files_disk.settled_mtime). These tests count the loop's executor
submissions (real threads, real files) and share one directory between two stores,
one of them standing for another process writing behind the first one's back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.files import FileStore
from cache.files_disk import SETTLED_NS, key_hash, list_key, relpath, shard_dir


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting what asyncio.to_thread hands it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def run(body: Callable[[CountingExecutor], Awaitable[None]]) -> None:
    async def main() -> None:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        await asyncio.wait_for(body(executor), 30)

    asyncio.run(main())


def entry(key: str, variant: str = "", t: float = 100.0) -> CacheEntry:
    return CacheEntry(key, variant, 200, (("content-type", "text/plain"),), b"x", t - 1, t, "n")


def same_shard_keys(n: int, prefix: str = "http://a.test/") -> list[str]:
    """`n` keys whose files share one shard directory (the first four hex digits)."""
    first = prefix + "0"
    want = key_hash(first)[:4]
    found = [first]
    i = 1
    while len(found) < n:
        key = f"{prefix}{i}"
        if key_hash(key)[:4] == want:
            found.append(key)
        i += 1
    return found


def age(root: Path, key: str, seconds: float) -> None:
    """Make the key's shard directory look last changed `seconds` ago (if it exists)."""
    where = shard_dir(root, key_hash(key))
    if os.path.isdir(where):
        when = time.time_ns() - int(seconds * 1e9)
        os.utime(where, ns=(when, when))


async def stores(root: Path) -> tuple[FileStore, FileStore]:
    a, b = FileStore(root, 1 << 22, fsync=False), FileStore(root, 1 << 22, fsync=False)
    await a.open()
    await b.open()
    return a, b


def test_a_key_whose_shard_directory_does_not_exist_is_a_miss_without_a_thread(
        tmp_path: Path) -> None:
    async def body(executor: CountingExecutor) -> None:
        store = FileStore(tmp_path, 1 << 20, fsync=False)
        await store.open()
        before = executor.submitted
        for i in range(20):
            assert await store.get(f"http://a.test/never/{i}") == []
        assert executor.submitted == before

    run(body)


def test_a_settled_shard_is_listed_once_then_trusted_until_it_changes(tmp_path: Path) -> None:
    stored, asked = same_shard_keys(2)

    async def body(executor: CountingExecutor) -> None:
        a, b = await stores(tmp_path)
        await b.put(entry(stored))  # the shard exists, with another key's file in it
        age(tmp_path, stored, 10)
        n = executor.submitted
        assert await a.get(asked) == []
        assert executor.submitted == n + 1  # listed once
        for _ in range(5):
            assert await a.get(asked) == []
        assert executor.submitted == n + 1  # then trusted
        await b.put(entry(asked, t=7.0))  # another process writes it: the directory changes
        assert [e.response_time for e in await a.get(asked)] == [7.0]
        assert (await a.get(stored))[0].key == stored

    run(body)


def test_a_shard_changed_within_the_settling_time_is_listed_every_time(tmp_path: Path) -> None:
    stored, asked = same_shard_keys(2)

    async def body(executor: CountingExecutor) -> None:
        a, b = await stores(tmp_path)
        await b.put(entry(stored))  # just now: its mtime may not have settled
        age(tmp_path, stored, SETTLED_NS / 1e9 / 4)
        n = executor.submitted
        for _ in range(3):
            assert await a.get(asked) == []
        assert executor.submitted == n + 3

    run(body)


KEYS = same_shard_keys(3, "http://p.test/")
Op = tuple[str, int, int]
ops = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "age", "get"]),
              st.integers(0, len(KEYS) - 1), st.integers(0, 5)),
    max_size=25)


@given(ops)
def test_another_writer_is_always_seen(tmp_path_factory: Any, script: list[Op]) -> None:
    """Whatever another store writes, deletes or how old the directory looks, a lookup
    returns exactly the variants on disk."""
    root = tmp_path_factory.mktemp("shared")

    def on_disk(key: str) -> set[str]:
        return {rel for rel, _ in list_key(root, key_hash(key))}

    def variants(entries: list[CacheEntry]) -> Iterator[str]:
        return (relpath(e.key, e.variant) for e in entries)

    async def body(executor: CountingExecutor) -> None:
        a, b = await stores(root)
        t = 1.0
        for op, k, n in script:
            key = KEYS[k]
            if op == "put":
                t += 1
                await b.put(entry(key, variant=f"v{n % 2}", t=t))
            elif op == "delete":
                await b.delete(key)
            elif op == "age":
                age(root, key, n)
            elif op == "get":
                assert set(variants(await a.get(key))) == on_disk(key)

    run(body)
