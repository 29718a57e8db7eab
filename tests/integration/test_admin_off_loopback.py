"""An admin listener off loopback, through a whole `Node` in this process: bound to every
interface (0.0.0.0 is not loopback, so the node demands its token; 127.0.0.2 would be,
all of 127/8 is), reached on 127.0.0.1. The health probes answer a checker without the
token, status only; every other page wants it; the real `scale0 purge` command (a
subprocess) sends it from --admin-token-file, takes --admin as HOST:PORT or as a URL,
and says "1 entry"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from testkit.nodeproc import node_from, poll
from testkit.nodetoml import loopback_listeners

from node.http import Headers, Request, Response
from node.purge import entries, purge_url
from node.server import Node
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef-admin-token"


async def cacheable(request: Request) -> Response:
    return Response(200, Headers([("Cache-Control", "max-age=600")]),
                    b"page " + request.target.encode())


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    listeners = loopback_listeners("n1").replace('\nadmin = "127.0.0.1:', '\nadmin = "0.0.0.0:')
    assert 'admin = "0.0.0.0:' in listeners  # every interface: not loopback
    async with node_from(tmp_path, f"""
dc = "east"
cache = "memory"
access_log = false
admin_token_file = "{token}"
{listeners}""") as n:
        yield n


async def get(port: int, path: str, token: str = "") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: a.test\r\n{auth}Connection: close\r\n\r\n"
                     .encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def purge(*args: str) -> tuple[int, str, str]:
    """`scale0 purge ARGS` as an operator runs it; exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "purge", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probes_without_the_token_everything_else_with_it(node: Node) -> None:
    port = node.admin_port
    assert await get(port, "/_scale0/ready") == (200, b'{"ready": true, "reason": "ready"}\n')
    assert await get(port, "/_scale0/health") == (200, b'{"status": "ok"}\n')
    status, body = await get(port, "/_scale0/health", TOKEN)
    full = json.loads(body)
    assert status == 200 and full["id"] == "n1" and full["dc"] == "east" and "workers" in full
    for page in ("/_scale0/mesh", "/_scale0/metrics", "/_scale0/"):
        assert (await get(port, page))[0] == 401, page
        assert (await get(port, page, TOKEN))[0] == 200, page


async def test_scale0_purge_sends_the_token_and_takes_host_port(
        node: Node, tmp_path: Path) -> None:
    assert node.broker is not None and node.cache_store is not None
    worker = Worker(node.broker.bound_endpoint, ["default"], 2, cacheable, heartbeat_interval=0.2)
    task = asyncio.create_task(worker.run())
    try:
        await poll(lambda: node.broker and node.broker.service_loads(), "the worker")
        assert (await get(node.http_port, "/news"))[0] == 200
        store = node.cache_store
        await poll(lambda: store.stats().entries == 1, "the page in the cache")
    finally:
        await worker.stop(0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    hostport = f"127.0.0.1:{node.admin_port}"
    code, out, err = await purge("--admin", hostport, "http://a.test/news")
    assert code == 1 and out == ""
    assert err == (f"scale0 purge: http://{hostport}/_scale0/purge answered 401: this admin "
                   "listener wants its token: give --admin-token-file\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token-at-all\n")
    code, _, err = await purge("--admin", hostport, "--admin-token-file", str(wrong),
                               "http://a.test/news")
    assert code == 1 and err.endswith("answered 401: the token was refused\n")
    assert store.stats().entries == 1
    token = str(tmp_path / "admin-token")
    code, out, err = await purge("--admin", hostport, "--admin-token-file", token,
                                 "http://a.test/news")
    assert (code, err) == (0, "")
    assert out == "purged http://a.test/news: 1 entry here; the purge is on its way to every node\n"
    assert store.stats().entries == 0
    code, out, _ = await purge("--admin", f"http://{hostport}/", "--admin-token-file", token,
                               "http://a.test/*")
    assert code == 0 and ": 0 entries here;" in out


def test_admin_address_forms_and_counts() -> None:
    assert purge_url("10.0.0.11:8081") == "http://10.0.0.11:8081/_scale0/purge"
    assert purge_url(" https://admin.example/ ") == "https://admin.example/_scale0/purge"
    with pytest.raises(ValueError, match="HOST:PORT"):
        purge_url("ftp://admin.example")
    assert [entries(n) for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]
