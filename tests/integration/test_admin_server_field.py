"""The admin listener names no server, as the main listener does not: no
`Server: TornadoServer/<version>` (Tornado's default, with its version) on any of its
answers — every page, Tornado's own 404 and redirect, HEAD, the token guard's 401 and
the token-free probes — over real HTTP to a whole `Node` on loopback, with and without
an admin token (off loopback the node demands one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from testkit.nodeproc import node_from
from testkit.nodetoml import loopback_listeners

from node.server import Node

pytestmark = pytest.mark.timeout(60)
TOKEN = "0123456789abcdef-admin-token"
PAGES = [("GET", "/_scale0/health", 200), ("HEAD", "/_scale0/health", 200),
         ("GET", "/_scale0/ready", 200), ("GET", "/_scale0/metrics", 200),
         ("GET", "/_scale0/mesh", 200), ("GET", "/_scale0/", 200),
         ("GET", "/_scale0", 301), ("GET", "/_scale0/nowhere", 404),
         ("PUT", "/_scale0/health", 405)]


@pytest.fixture(params=["loopback", "token"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    listeners = loopback_listeners("n1")
    token = ""
    if request.param == "token":
        (tmp_path / "admin-token").write_text(TOKEN + "\n")
        (tmp_path / "admin-token").chmod(0o600)
        token = f'admin_token_file = "{tmp_path / "admin-token"}"\n'
        listeners = listeners.replace('\nadmin = "127.0.0.1:', '\nadmin = "0.0.0.0:')
    async with node_from(tmp_path, f'dc = "east"\ncache = "memory"\n{token}{listeners}') as n:
        yield n


async def head_of(port: int, method: str, path: str, token: str = "") -> tuple[int, str]:
    """One request on its own connection; the status and the head as text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: a.test\r\n{auth}"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    text = head.decode("latin1")
    return int(text.split()[1]), text


async def test_no_admin_answer_names_a_server(node: Node) -> None:
    token = TOKEN if node.security is not None and node.security.admin_token else ""
    answers = [(method, path, *await head_of(node.admin_port, method, path, token))
               for method, path, _ in PAGES]
    if token:  # the guard's refusal and the probes a checker without the token gets
        answers += [("GET", "/_scale0/mesh (no token)",
                     *await head_of(node.admin_port, "GET", "/_scale0/mesh"))]
        answers += [("GET", f"{path} (no token)", *await head_of(node.admin_port, "GET", path))
                    for path in ("/_scale0/health", "/_scale0/ready")]
    expected = [status for *_, status in PAGES] + ([401, 200, 200] if token else [])
    assert [status for _, _, status, _ in answers] == expected, answers
    named = [(method, path, line) for method, path, _, head in answers
             for line in head.split("\r\n") if line.lower().startswith("server:")]
    assert named == []
