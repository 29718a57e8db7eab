"""The files store (and the cache stage over it) on a disk that fails for real.

A tmpfs is mounted by the test in a temp dir: remounted read-only, a purge cannot
delete (EROFS, as QA saw); small, it fills up (ENOSPC). Tests skip when mounting is
not permitted (not root, no mount(8), a container without CAP_SYS_ADMIN). What is
checked: a purge the disk refuses is never a silent success and the purged entry is
never served again; a full disk lowers the cap only for a while, says so, and the
store grows back when room is freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from cache.entry import CacheEntry
from cache.files import DeleteFailed, FileStore
from cache.files_disk import relpath
from node.cacheconfig import CacheConfig
from node.cachestage import CacheStage
from node.http import Headers, Request, Response
from node.metrics import Metrics

T0 = 1_700_000_000.0
KIB = 1024
HOST = "example.com"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Tmpfs:
    def __init__(self, where: Path) -> None:
        self.where = where

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.where)], check=True,
                       timeout=10)


@pytest.fixture
def tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Tmpfs]:
    size = getattr(request, "param", "4m")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a tmpfs")
    where = tmp_path / "tmpfs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr!r}")
    try:
        yield Tmpfs(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)


def entry(path: str, t: float = T0, size: int = 64) -> CacheEntry:
    body = (path.encode() + b"." * size)[:size]
    headers = (("cache-control", "max-age=600"), ("content-type", "text/plain"))
    return CacheEntry(f"http://{HOST}{path}", "", 200, headers, body, t - 1, t, "n1")


def request(target: str, method: str = "GET") -> Request:
    return Request(method, target, Headers([]), host=HOST, client="127.0.0.1", service="www")


class Origin:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, req: Request) -> Response:
        self.calls += 1
        return Response(200, Headers([("Cache-Control", "max-age=600")]),
                        f"fresh {req.target} {self.calls}".encode())


def test_a_delete_on_a_read_only_disk_fails_loudly_and_hides_the_entry(tmpfs: Tmpfs) -> None:
    async def main() -> None:
        clock = Clock(0.0)
        store = FileStore(tmpfs.where / "cache", fsync=False, clock=clock)
        await store.open()
        for path in ("/one", "/dir/a", "/dir/b", "/kept"):
            assert await store.put(entry(path))
        tmpfs.remount("ro")
        with pytest.raises(DeleteFailed) as one:
            await store.delete(f"http://{HOST}/one")
        assert (one.value.removed, one.value.failed) == (0, 1)
        assert "Read-only" in str(one.value) and str(store.root) in str(one.value)
        with pytest.raises(DeleteFailed) as many:
            await store.purge_prefix(f"http://{HOST}/dir/")
        assert (many.value.removed, many.value.failed) == (0, 2)
        for path in ("/one", "/dir/a", "/dir/b"):  # still on disk, never served
            assert (store.root / relpath(f"http://{HOST}{path}", "")).exists()
            assert await store.get(f"http://{HOST}{path}") == []
        assert [e.body for e in await store.get(f"http://{HOST}/kept")] == [entry("/kept").body]
        assert store.stats().errors == {"delete": 3}
        assert await store.keys_with_prefix(f"http://{HOST}/") == [f"http://{HOST}/kept"]

        tmpfs.remount("rw")
        clock.now += store.room_retry  # the hidden files' deletion is retried...
        assert await store.get(f"http://{HOST}/one") == []
        for path in ("/one", "/dir/a", "/dir/b"):  # ...and now it succeeds
            assert not (store.root / relpath(f"http://{HOST}{path}", "")).exists()
        # A newer entry written after the purge is new content: served.
        assert await store.put(entry("/one", T0 + 5))
        assert [e.response_time for e in await store.get(f"http://{HOST}/one")] == [T0 + 5]

    run(main())


def test_a_newer_write_over_a_hidden_file_is_served(tmpfs: Tmpfs) -> None:
    async def main() -> None:
        store = FileStore(tmpfs.where / "cache", fsync=False, clock=Clock(0.0))
        await store.open()
        assert await store.put(entry("/x"))
        tmpfs.remount("ro")
        with pytest.raises(DeleteFailed):
            await store.delete(f"http://{HOST}/x")
        tmpfs.remount("rw")  # no retry yet: the old file is still there, hidden
        assert await store.get(f"http://{HOST}/x") == []
        assert not await store.put(entry("/x", T0))  # not newer: the purged one stays hidden
        assert await store.get(f"http://{HOST}/x") == []
        assert await store.put(entry("/x", T0 + 1))
        assert [e.response_time for e in await store.get(f"http://{HOST}/x")] == [T0 + 1]

    run(main())


def test_purge_on_a_read_only_disk_answers_202_logs_it_and_is_never_served_again(
        tmpfs: Tmpfs, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        wall = Clock(T0)
        store = FileStore(tmpfs.where / "cache", fsync=False)
        await store.open()
        stage = CacheStage(store, CacheConfig(), node_id="n1", wall_clock=wall)
        origin = Origin()
        for target in ("/p", "/q/1"):
            await stage(request(target), origin)
            wall.now += 1
            assert (await stage(request(target), origin)).headers.get("X-Cache") == "HIT"
        tmpfs.remount("ro")
        # A failed cache write first: its log must not hide the purge's failure.
        await stage(request("/new"), origin)
        assert any("(put)" in r.getMessage() for r in caplog.records)
        done = await stage(request("/p", "PURGE"), origin)
        assert isinstance(done.body, bytes)
        doc = json.loads(done.body)
        assert done.status == 202, doc
        assert doc["purged"] == 0 and doc["failed"] == 1 and "Read-only" in doc["error"]
        purge_logs = [r.getMessage() for r in caplog.records if "cache purge of" in r.getMessage()]
        assert len(purge_logs) == 1 and f"http://{HOST}/p" in purge_logs[0], purge_logs
        prefix = await stage.purge(f"http://{HOST}/q/*")
        assert (int(prefix), prefix.failed) == (0, 1)
        assert stage.counts["purge_failed"] == 2
        calls = origin.calls
        for target in ("/p", "/q/1"):  # never a HIT of the purged bytes
            got = await stage(request(target), origin)
            assert got.headers.get("X-Cache") == "MISS", target
            assert got.body == f"fresh {target} {origin.calls}".encode()
        assert origin.calls == calls + 2
        # Even with the store's own mark gone (another node, a store that cannot hide),
        # the stage's mark keeps what was stored before the purge out.
        store._undeleted.clear()
        assert (await stage(request("/p"), origin)).headers.get("X-Cache") == "MISS"
        scraped = _scrape(store)
        assert scraped['scale0_cache_store_errors_total{op="delete"}'] == 2
        assert scraped['scale0_cache_store_errors_total{op="put"}'] >= 1

    with caplog.at_level(logging.WARNING):
        run(main())


def test_a_miss_the_disk_refuses_is_not_said_to_be_stored(tmpfs: Tmpfs) -> None:
    """QA, a cache folder the node cannot write: every answer said `Cache-Status: ...;
    stored` and the next request was a MISS again, so nothing pointed at the disk."""
    async def main() -> None:
        store = FileStore(tmpfs.where / "cache", fsync=False)
        await store.open()
        stage = CacheStage(store, CacheConfig(), node_id="n1", wall_clock=Clock(T0))
        origin = Origin()
        stored = await stage(request("/ok"), origin)
        assert "; stored" in (stored.headers.get("Cache-Status") or "")
        tmpfs.remount("ro")
        for _ in range(2):
            got = await stage(request("/new"), origin)
            assert got.status == 200 and got.headers.get("X-Cache") == "MISS"
            status = got.headers.get("Cache-Status") or ""
            assert "stored" not in status.split("; ") and 'detail="store failed"' in status, \
                status
        assert origin.calls == 3

    run(main())


def _scrape(store: FileStore) -> dict[str, float]:
    m = Metrics()
    m.set_sources(cache_stats=store.stats)
    text, _ = m.render()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("tmpfs", ["1m"], indirect=True)
def test_a_full_disk_lowers_the_cap_for_a_while_says_so_and_recovers(
        tmpfs: Tmpfs, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock = Clock(0.0)
        filler = tmpfs.where / "filler"
        filler.write_bytes(b"\0" * (400 * KIB))  # someone else's file takes 40% of the disk
        store = FileStore(tmpfs.where / "cache", fsync=False, clock=clock, room_retry=60.0)
        await store.open()
        for i in range(12):  # 1.2 MB of entries on a 1 MiB disk
            assert await store.put(entry(f"/big/{i}", T0 + i, 100 * KIB))
        lowered = store.stats().capacity
        assert lowered < 700 * KIB, lowered
        warned = [r.getMessage() for r in caplog.records if "no room on the disk" in r.getMessage()]
        assert len(warned) == 1 and str(store.root) in warned[0], warned
        assert _scrape(store)["scale0_cache_capacity_bytes"] == lowered
        assert await store.get(f"http://{HOST}/big/11") != []  # the newest are kept

        filler.unlink()  # room again: once the while is over, the store grows back
        clock.now += 61.0
        assert store.stats().capacity == store.max_bytes == 1 << 30
        for i in range(12, 20):
            await store.put(entry(f"/big/{i}", T0 + i, 100 * KIB))
        assert store.stats().bytes > lowered + 200 * KIB, (store.stats().bytes, lowered)

    with caplog.at_level(logging.WARNING):
        run(main())
