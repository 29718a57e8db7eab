"""A purge whose delete failed is never a plain success: the admin endpoint answers 202
with the count and the error, and `scale0 purge` warns; a complete purge stays 200."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.web import Application

from node.cachestage import PurgeCount, purge_answer
from node.purge import purge_route, run_purge

ROFS = "1 file(s) under /c could not be deleted (Read-only file system)"


def test_purge_answer_statuses() -> None:
    assert purge_answer(PurgeCount(3)) == (200, {})
    assert purge_answer(3) == (200, {})  # a plain int from a purger that knows no failure
    assert purge_answer(PurgeCount(0, 1, ROFS)) == (202, {"failed": 1, "error": ROFS})
    assert purge_answer(PurgeCount(2, None, "down")) == (202, {"failed": None, "error": "down"})
    assert PurgeCount(2, 1, "x") == 2 and json.dumps(PurgeCount(2, 1, "x")) == "2"


def test_the_admin_endpoint_and_the_cli_say_a_delete_failed(
        capsys: pytest.CaptureFixture[str]) -> None:
    results = {"http://a/x": PurgeCount(0, 1, ROFS), "http://a/ok": PurgeCount(2)}

    async def purge(url: str) -> int:
        return results[url]

    async def main() -> None:
        server = HTTPServer(Application([purge_route(purge)]))
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        server.add_sockets([sock])
        admin = f"127.0.0.1:{sock.getsockname()[1]}"
        client = AsyncHTTPClient()
        try:
            got = await client.fetch(f"http://{admin}/_scale0/purge", method="POST",
                                     body=b'{"url": "http://a/x"}', raise_error=False)
            assert got.code == 202
            assert json.loads(got.body) == {"url": "http://a/x", "prefix": False,
                                            "removed_here": 0, "failed_here": 1, "error": ROFS}
            got = await client.fetch(f"http://{admin}/_scale0/purge", method="POST",
                                     body=b'{"url": "http://a/ok"}')
            assert got.code == 200 and "error" not in json.loads(got.body)
            for url in ("http://a/x", "http://a/ok"):
                args = argparse.Namespace(admin=admin, admin_token_file="", timeout=5.0, url=url)
                assert await asyncio.to_thread(run_purge, args) == 0
        finally:
            client.close()
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
    out = capsys.readouterr()
    assert "purged http://a/x: 0 entries here" in out.out
    assert "purged http://a/ok: 2 entries here" in out.out
    assert out.err.count("warning") == 1
    assert "could not delete 1 entry" in out.err and "Read-only" in out.err
