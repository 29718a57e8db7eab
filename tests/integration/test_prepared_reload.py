"""A whole `Node` in this process (fast wire, --https with an HSTS policy, a cache, static
files; real loopback sockets, real TLS with a CA made here): prepared answers are served
over https with the policy's HSTS, and a SIGHUP that changes the policy forgets every one
of them — the cache's prepared hits and the static files' — so the next answers carry
the new value."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from integration.test_tls import client_ctx
from testkit.nodeproc import node_from
from testkit.nodetoml import loopback_listeners
from testkit.pki import make_ca, make_leaf
from testkit.procs import free_port
from testkit.rawhttp import read_answer

from cache.entry import CacheEntry
from node.config import load_config
from node.http import Headers, Request
from node.server import Node

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

LOGO = b"\x89PNG" + bytes(range(256)) * 4


def config(tmp: Path, max_age: int) -> str:
    return f"""
https = "{(tmp / 'https').read_text()}"
http_server = "fast"
cache = "memory"
access_log = false
static = ["/s={tmp / 'www'}"]
tls_cert = ["{tmp / 'a.test-v1.pem'}"]
tls_key = ["{tmp / 'a.test-v1.key'}"]
{(tmp / 'listeners').read_text()}
[https_hosts."a.test"]
hsts_max_age = {max_age}
"""


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    make_ca(tmp_path)
    make_leaf(tmp_path, "a.test", "v1")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "logo.png").write_bytes(LOGO)
    (tmp_path / "listeners").write_text(loopback_listeners("n1"))  # the same on reload
    (tmp_path / "https").write_text(f"127.0.0.1:{free_port()}")
    async with node_from(tmp_path, config(tmp_path, 600)) as n:
        n._load = lambda: load_config(str(tmp_path / "node.toml"))  # as --config gives it
        yield n


async def ask(node: Node, target: str) -> tuple[bytes, bytes]:
    ctx: ssl.SSLContext = client_ctx(Path(node.config.tls_cert[0]).parent / "ca.pem")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.https_port, ssl=ctx,
                                                   server_hostname="a.test")
    writer.write(f"GET {target} HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: r-9\r\n\r\n".encode())
    answer = await read_answer(reader)
    writer.close()
    return answer


async def test_a_reload_forgets_every_prepared_answer(node: Node, tmp_path: Path) -> None:
    statics, hits = node.static_hits, node.prepared
    assert statics is not None and hits is not None
    slow = await ask(node, "/s/logo.png")
    assert await ask(node, "/s/logo.png") == slow and statics.served == 1  # over https
    assert b"\r\nStrict-Transport-Security: max-age=600\r\n" in slow[0] and slow[1] == LOGO
    # a prepared cache hit, as a fresh HIT would have offered it (no worker here)
    request = Request("GET", "/hit", Headers([("Host", "a.test")]), scheme="https",
                      host="a.test")
    hits.offer(request, CacheEntry("https://a.test/hit", "", 200,
                                   (("Cache-Control", "max-age=60"),), b"hi", 0.0, 0.0), 60.0)
    assert len(hits) == 1 and len(statics) == 1
    (tmp_path / "node.toml").write_text(config(tmp_path, 1200))
    assert node.reload()
    assert len(hits) == 0 and len(statics) == 0  # both, at once
    for served in (1, 2):  # slow with the new policy, then prepared with it
        head, body = await ask(node, "/s/logo.png")
        assert b"\r\nStrict-Transport-Security: max-age=1200\r\n" in head and body == LOGO
        assert statics.served == served
