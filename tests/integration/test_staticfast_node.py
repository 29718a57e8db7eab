"""Prepared static files through a whole `Node` in this process (fast wire, real loopback
sockets, real files), with and without a cache: the wire's one shortcut answers them,
and they are counted in the metrics and written to the access log like slow answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from testkit.nodetoml import loopback_listeners

from node import logsetup
from node.accesslog import access_log
from node.config import from_mapping, load_config
from node.server import Node

pytestmark = pytest.mark.timeout(60)

LOGO = b"\x89PNG" + bytes(range(256)) * 4


@pytest.fixture(params=["off", "memory"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    www = tmp_path / "www"
    www.mkdir()
    (www / "logo.png").write_bytes(LOGO)
    path = tmp_path / "node.toml"
    path.write_text(f"""
http_server = "fast"
cache = "{request.param}"
access_log = true
access_log_file = "{tmp_path / 'access.log'}"
static = ["/s={www}"]
{loopback_listeners("n1")}
""")
    n = Node(load_config(str(path)), reload=lambda: load_config(str(path)))
    await n.start()
    try:
        yield n
    finally:
        await n.shutdown()
        logsetup.configure(from_mapping({"access_log": False}), "n1")  # as other tests expect
        access_log.disabled = False
        access_log.propagate = True


async def exchange(port: int, target: str) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: r-7\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    writer.close()
    return head, body


async def test_static_files_are_prepared_with_or_without_a_cache(node: Node) -> None:
    statics = node.static_hits
    assert statics is not None
    slow = await exchange(node.http_port, "/s/logo.png")
    fast = await exchange(node.http_port, "/s/logo.png")
    assert statics.served == 1 and fast == slow and fast[1] == LOGO
    assert b"\r\nX-Scale0-Node: n1; dc=" in fast[0]
    exposition = node.metrics.render()[0].decode()
    counted = [line for line in exposition.splitlines()
               if line.startswith("scale0_requests_total{") and 'outcome="static"' in line]
    assert counted and counted[0].endswith(" 2.0"), counted  # the slow one and the prepared
    logsetup.flush()
    text = await asyncio.to_thread(Path(node.config.access_log_file).read_text)
    lines = [line for line in text.splitlines() if "/s/logo.png" in line]
    assert len(lines) == 2 and all("static" in line and "r-7" in line for line in lines)
    assert node.reload() and len(statics) == 0  # a reload drops what it prepared
    assert await exchange(node.http_port, "/s/logo.png") == slow
    assert statics.served == 1 and len(statics) == 1
