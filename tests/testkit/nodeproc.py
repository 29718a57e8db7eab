"""A whole `Node` run inside the test's own event loop, from a TOML file, and put back
afterwards as other tests expect the access logger (off, propagating to the root)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from node import logsetup
from node.accesslog import access_log
from node.config import from_mapping, load_config
from node.server import Node


@asynccontextmanager
async def node_from(path: Path) -> AsyncIterator[Node]:
    """Start the node `path` configures; shut it down and reset the access logger."""
    node = Node(load_config(str(path)))
    await node.start()
    try:
        yield node
    finally:
        await node.shutdown()
        logsetup.configure(from_mapping({"access_log": False}), node.node_id)
        access_log.disabled = False
        access_log.propagate = True
