"""A node whose file store was empty at start has nothing to distrust.

After a restart a node serves none of the entries it stored before, until a peer hands
over its purge record or `sync_grace` passes alone — then it warns that it serves its
store as it is. A new node (or an emptied cache) has no such entries: it trusts at once
and does not warn. A whole Node runs in the test's loop, with a real files store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from testkit.logcapture import capture
from testkit.nodeproc import node_from, poll
from testkit.nodetoml import loopback_listeners

from cache.entry import CacheEntry
from cache.files import FileStore


def toml(cache_dir: Path) -> str:
    return (f'cache = "files:{cache_dir}"\naccess_log = false\n' + loopback_listeners("fresh")
            + "[replication]\nsync_grace = 60.0\n")


def test_a_node_with_an_empty_file_store_trusts_it_at_once_without_a_warning(
        tmp_path: Path) -> None:
    async def main() -> None:
        _, lines = capture("scale0.replication")
        async with node_from(tmp_path, toml(tmp_path / "cache")) as node:
            assert node.cache is not None
            stage = node.cache
            await poll(lambda: stage.trusted_after == 0.0, "the empty store trusted", 5.0)
        assert not [line for line in lines.lines if "purged while this node was down" in line]

    asyncio.run(main())


def test_a_node_restarted_on_a_stored_entry_still_waits_for_a_purge_record(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = FileStore(tmp_path / "cache", 1 << 20, fsync=False)
        await store.open()
        await store.put(CacheEntry("http://a.test/x", "", 200, (), b"old", 1.0, 2.0, "fresh"))
        async with node_from(tmp_path, toml(tmp_path / "cache")) as node:
            assert node.cache is not None
            assert node.cache.trusted_after > 0.0  # within the 60 s grace, alone

    asyncio.run(main())
