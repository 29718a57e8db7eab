"""A whole `Node` run inside the test's own event loop, from a TOML file, and put back
afterwards as other tests expect the access logger (off, propagating to the root); and
polling a condition without blocking that loop (procs.wait_until sleeps the thread)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from node import logsetup
from node.accesslog import access_log
from node.config import from_mapping, load_config
from node.server import Node


@asynccontextmanager
async def node_from(folder: Path, toml: str) -> AsyncIterator[Node]:
    """Start the node the TOML text configures (written to `folder`/node.toml); shut it
    down and reset the access logger."""
    path = folder / "node.toml"
    path.write_text(toml)
    node = Node(load_config(str(path)))
    await node.start()
    try:
        yield node
    finally:
        await node.shutdown()
        logsetup.configure(from_mapping({"access_log": False}), node.node_id)
        access_log.disabled = False
        access_log.propagate = True


async def poll(check: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Wait, yielding to the loop, until `check()` is truthy; fail after `within` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)  # a polling interval, not a synchronisation
