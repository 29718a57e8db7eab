"""The admin bearer token on a real loopback listener, in front of the real admin app."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

from node.admin import AdminState, make_admin_app
from node.admintoken import (
    AdminTokenError,
    check_bearer,
    guard,
    is_loopback,
    load_token,
    require_token,
)
from node.purge import purge_route

pytestmark = pytest.mark.timeout(60)
TOKEN = "s3cret-token-0123456789abcdef"


def test_the_admin_app_needs_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    token = require_token("0.0.0.0", str(path))
    assert token is not None
    app = make_admin_app(AdminState("n1", "east", dict), extra_routes=[purge_route(None)])

    async def main() -> None:
        gate = guard(app, token)
        server = HTTPServer(gate)
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        server.add_sockets([sock])
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        url = f"{base}/_scale0/purge"
        client = AsyncHTTPClient()
        try:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}):
                with pytest.raises(HTTPClientError) as err:
                    await client.fetch(url, headers=headers)
                assert err.value.code == 401
                assert err.value.response is not None
                assert err.value.response.headers["WWW-Authenticate"].startswith("Bearer")
            with pytest.raises(HTTPClientError) as err:  # a body is not read, just refused
                await client.fetch(url, method="POST", body=b"x" * 100_000,
                                   headers={"Authorization": "Bearer no"})
            assert err.value.code == 401
            ok = await client.fetch(url, method="POST", body=b'{"url": "http://a/"}',
                                    headers={"Authorization": f"Bearer {TOKEN}"},
                                    raise_error=False)
            assert ok.code == 409  # let in: this node has no cache
            ok = await client.fetch(f"{base}/_scale0/health",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.code == 200 and b'"id": "n1"' in ok.body
            assert getattr(gate, "refused", 0) == 5
        finally:
            client.close()
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
    assert TOKEN not in caplog.text


def test_the_probes_answer_a_checker_without_the_token_status_only(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    state = AdminState("n1", "east", dict)
    app = make_admin_app(state, extra_routes=[purge_route(None)])

    async def main() -> None:
        gate = guard(app, TOKEN.encode())
        server = HTTPServer(gate)
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        server.add_sockets([sock])
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = AsyncHTTPClient()

        async def fetch(path: str, method: str = "GET", token: str = "") -> tuple[int, bytes]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = await client.fetch(base + path, method=method, headers=headers,
                                   raise_error=False, body=b"" if method == "POST" else None)
            return r.code, r.body

        try:
            assert await fetch("/_scale0/ready") == (
                503, b'{"ready": false, "reason": "starting"}\n')
            state.ready = True
            assert await fetch("/_scale0/ready") == (200, b'{"ready": true, "reason": "ready"}\n')
            assert await fetch("/_scale0/ready", "HEAD") == (200, b"")
            assert await fetch("/_scale0/health?full=1") == (200, b'{"status": "ok"}\n')
            assert await fetch("/_scale0/health", token="wrong-token-0123456789") == (
                200, b'{"status": "ok"}\n')  # a wrong token gets what no token gets
            code, body = await fetch("/_scale0/health", token=TOKEN)
            assert code == 200 and b'"id": "n1"' in body and b'"workers"' in body
            code, body = await fetch("/_scale0/ready", token=TOKEN)
            assert code == 200 and b'"id": "n1"' in body
            state.draining = True
            assert await fetch("/_scale0/ready") == (
                503, b'{"ready": false, "reason": "draining"}\n')
            assert await fetch("/_scale0/health") == (200, b'{"status": "draining"}\n')
            for path, method in (("/_scale0/ready", "POST"), ("/_scale0/health/", "GET"),
                                 ("/_scale0/healthz", "GET"), ("/_scale0/%68ealth", "GET"),
                                 ("/_scale0/purge", "POST"), ("/_scale0/ready/../purge", "GET")):
                assert (await fetch(path, method))[0] == 401, (path, method)
            assert getattr(gate, "refused", 0) == 6
        finally:
            client.close()
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
    assert TOKEN not in caplog.text


def test_off_loopback_a_token_file_is_mandatory(tmp_path: Path) -> None:
    assert require_token("127.0.0.1", None) is None
    assert require_token("[::1]", None) is None
    assert require_token("localhost", None) is None
    assert require_token("127.0.0.2", None) is None  # all of 127/8 is loopback
    for host in ("0.0.0.0", "", "10.0.0.5", "admin.example", "[::]"):
        with pytest.raises(AdminTokenError, match="--admin-token-file"):
            require_token(host, None)
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(AdminTokenError, match="at least"):
        load_token(short)
    with pytest.raises(AdminTokenError, match="missing"):
        load_token(tmp_path / "missing")
    assert not is_loopback("127.0.0.1.evil.example")


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_only_the_exact_token_passes(header: str | None) -> None:
    assert check_bearer(header, TOKEN.encode()) == (
        header is not None and header.strip().partition(" ")[0].lower() == "bearer"
        and header.strip().partition(" ")[2].strip() == TOKEN)
    assert check_bearer(f"Bearer {TOKEN}", TOKEN.encode())
    assert check_bearer(f"bearer   {TOKEN} ", TOKEN.encode())
