"""The files store under a real node when the disk misbehaves: damaged entry files, a file
replaced by a directory, a full disk (a 2 MiB tmpfs mounted here), a byte cap.

What an operator checks: the node keeps answering (misses from the origin, never the
damaged bytes), never crashes, logs a repeated store failure once rather than per
request, and never holds more on disk than the cap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.cachemesh import CacheNode
from testkit.origin import CountingOrigin
from testkit.procs import wait_until

from cache import files_disk

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
KIB = 1024


def _answer(path: str) -> tuple[str, bytes]:
    size = 100 * KIB if path.startswith("/big") else 64
    return "max-age=600", (path.encode() + b"." * size)[:size]


@pytest.fixture
def origin() -> Iterator[CountingOrigin]:
    o = CountingOrigin(_answer, delay=0.0)
    yield o
    o.close()


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.s0c")]


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in _files(root) if p.is_file())


def _entry_file(root: Path, path: str) -> Path:
    key = f"http://www.example.test{path}"
    found = [root / rel for rel, _ in files_disk.list_key(root, files_disk.key_hash(key))]
    assert len(found) == 1, found
    return found[0]


def test_damaged_entry_files_are_misses_and_the_node_keeps_serving(
        tmp_path: Path, origin: CountingOrigin) -> None:
    root = tmp_path / "cache"
    node = CacheNode(tmp_path, "d1", origin.port, cache=f"files:{root}")
    try:
        paths = ["/trunc", "/garbled", "/dir", "/ok"]
        for p in paths:
            assert node.request("GET", p)[0] == 200
            wait_until(lambda p=p: node.cached(p), timeout=5, what=f"{p} stored")  # type: ignore[misc]
        trunc = _entry_file(root, "/trunc")
        trunc.write_bytes(trunc.read_bytes()[:-30])
        garbled = _entry_file(root, "/garbled")
        data = bytearray(garbled.read_bytes())
        data[-40] ^= 0xFF  # a flipped body byte: the digest no longer matches
        garbled.write_bytes(bytes(data))
        folder = _entry_file(root, "/dir")
        folder.unlink()
        folder.mkdir()
        for p in ("/trunc", "/garbled", "/dir"):
            assert node.cached(p) is None, p  # never the damaged bytes

        def refilled(p: str) -> bool:
            # A plain GET may be answered for up to 1 s from the bytes the fast wire
            # prepared before the damage (node.hitcache's hold), then it is a miss.
            status, _, body = node.request("GET", p)
            assert status == 200 and body == _answer(p)[1], (p, status, body[:80])
            return node.cached(p) == _answer(p)[1]

        for p in ("/trunc", "/garbled"):
            wait_until(lambda p=p: refilled(p), timeout=5, what=f"{p} stored anew")  # type: ignore[misc]
        for _ in range(50):  # a directory where the file goes: misses, every one right
            status, _, body = node.request("GET", "/dir", {"Cache-Control": "max-age=0"})
            assert status == 200 and body == _answer("/dir")[1]
        assert node.cached("/ok") == _answer("/ok")[1]
        assert node.node.alive()
        log = node.node.proc.output() if node.node.proc else ""
        assert log.count("cache store failed") <= 2, log[-3000:]  # once, not per request
    except BaseException:
        print(node.log())
        raise
    finally:
        node.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    where = tmp_path / "tmpfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True,
                   timeout=10)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)


def test_a_full_disk_is_misses_and_one_log_line_and_the_store_makes_room(
        tmp_path: Path, origin: CountingOrigin, small_disk: Path) -> None:
    root = small_disk / "cache"
    node = CacheNode(tmp_path, "d2", origin.port, cache=f"files:{root}")  # cap 1 GiB > disk
    try:
        for i in range(40):  # 4 MB of entries on a 2 MiB disk
            status, _, body = node.request("GET", f"/big/{i}")
            assert status == 200 and body == _answer(f"/big/{i}")[1]
        assert node.node.alive()
        # The newest entries are the ones worth keeping: room is made for them.
        wait_until(lambda: node.cached("/big/39") is not None, timeout=5,
                   what="the last entry stored after the disk filled up")
        log = node.node.proc.output() if node.node.proc else ""
        assert log.count("cache store failed") <= 2, log[-3000:]
    except BaseException:
        print(node.log())
        raise
    finally:
        node.stop()


def test_the_byte_cap_is_respected_on_disk(tmp_path: Path, origin: CountingOrigin) -> None:
    root = tmp_path / "cache"
    node = CacheNode(tmp_path, "d3", origin.port, cache=f"files:{root}?max=400KiB")
    try:
        for i in range(20):
            assert node.request("GET", f"/big/{i}")[0] == 200
            assert _disk_bytes(root) <= 400 * KIB
        assert node.cached("/big/19") is not None and node.cached("/big/0") is None
    except BaseException:
        print(node.log())
        raise
    finally:
        node.stop()
