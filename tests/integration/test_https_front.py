"""The https policy on every answer, through a whole `Node` in this process over real
loopback sockets and real TLS (a CA made here): in-node app answers, the pipeline's
503, the front's own 431 carry Strict-Transport-Security; plain http to a redirect
host gets the 308 for in-node routes too, and never an HSTS field.

No worker ever connects, so a request for the `www` service waits in the broker's
queue until its service timeout (0.3 s) and gets the pipeline's 503.
"""

from __future__ import annotations

import asyncio
import http.client
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from testkit.nodetoml import loopback_listeners
from testkit.pki import make_ca, make_leaf
from testkit.procs import free_port

from node.config import load_config
from node.front import Front
from node.hitcache import HitCache
from node.http import Request, Response
from node.server import Node

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

HSTS = "max-age=600; includeSubDomains"
Answer = tuple[int, dict[str, str], bytes]


def _config(tmp: Path, wire: str, app: bool = True) -> Path:
    make_ca(tmp)
    cert, key = make_leaf(tmp, "a.test", "v1")
    path = tmp / "node.toml"
    path.write_text(f"""
https = "127.0.0.1:{free_port()}"
http_server = "{wire}"
cache = "off"
access_log = false
{'app = "node.demo:demo_app"' if app else ""}
tls_cert = ["{cert}"]
tls_key = ["{key}"]
{loopback_listeners("h")}
[services.www]
routes = ["a.test", "b.test"]
timeout = 0.3
[https_hosts."a.test"]
redirect = true
hsts_max_age = 600
include_subdomains = true
""")
    return path


@pytest.fixture(params=["fast", "tornado"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(load_config(str(_config(tmp_path, request.param))))
    await n.start()
    try:
        yield n
    finally:
        await n.shutdown()


def _port(node: Node, flag: str) -> int:
    return int(getattr(node.config, flag).rsplit(":", 1)[1])


def _ask(conn: http.client.HTTPConnection, path: str, host: str,
         extra: dict[str, str] | None = None) -> Answer:
    try:
        conn.request("GET", path, headers={"Host": host, **(extra or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _https(node: Node) -> Callable[..., Answer]:
    ctx = ssl.create_default_context(cafile=str(Path(node.config.tls_cert[0]).parent / "ca.pem"))
    ctx.check_hostname = False  # dialled by address: no SNI, the only site answers

    def ask(path: str, host: str, extra: dict[str, str] | None = None) -> Answer:
        conn = http.client.HTTPSConnection("127.0.0.1", _port(node, "https"), timeout=10,
                                           context=ctx)
        return _ask(conn, path, host, extra)
    return ask


def _http(node: Node) -> Callable[..., Answer]:
    def ask(path: str, host: str, extra: dict[str, str] | None = None) -> Answer:
        return _ask(http.client.HTTPConnection("127.0.0.1", _port(node, "http"), timeout=10),
                    path, host, extra)
    return ask


async def test_every_https_answer_of_a_policy_host_carries_hsts(node: Node) -> None:
    ask = _https(node)
    run = asyncio.get_running_loop().run_in_executor
    status, headers, body = await run(None, ask, "/inapp", "a.test")
    assert (status, headers.get("strict-transport-security")) == (200, HSTS)  # in-node app
    assert b"in-node" in body
    status, headers, body = await run(None, ask, "/nobody-serves-this", "a.test")
    assert status == 503, body  # the pipeline's own answer: no worker before the deadline
    assert headers.get("strict-transport-security") == HSTS
    # The front's own refusals: a body over the limit, a host it cannot parse.
    status, headers, _ = await run(None, ask, "/x", "a.test", {"Content-Length": str(1 << 31)})
    assert (status, headers.get("strict-transport-security")) == (413, HSTS)
    status, headers, _ = await run(None, ask, "/x", "a.test:80x")
    assert (status, headers.get("strict-transport-security")) == (400, HSTS)
    if node.config.http_server == "tornado":  # the fast wire refuses a large head itself
        status, headers, _ = await run(None, ask, "/x", "a.test", {"X-Big": "y" * 40_000})
        assert (status, headers.get("strict-transport-security")) == (431, HSTS)
    status, headers, _ = await run(None, ask, "/inapp", "b.test")  # no policy for b.test
    assert status == 200 and "strict-transport-security" not in headers


async def test_plain_http_to_a_redirect_host_is_redirected_in_node_routes_too(node: Node) -> None:
    ask = _http(node)
    run = asyncio.get_running_loop().run_in_executor
    https = _port(node, "https")
    status, headers, _ = await run(None, ask, "/inapp?q=1", "a.test")
    assert status == 308 and headers["location"] == f"https://a.test:{https}/inapp?q=1"
    # absolute-form naming https over a plain connection is still plain http
    status, headers, _ = await run(None, ask, "https://a.test/inapp", "a.test")
    assert status == 308 and "strict-transport-security" not in headers
    status, headers, _ = await run(None, ask, "/.well-known/acme-challenge/t", "a.test")
    assert status != 308  # a certificate authority must reach these over http
    status, headers, body = await run(None, ask, "/inapp", "b.test")
    assert status == 200 and b"in-node" in body
    assert "strict-transport-security" not in headers


@pytest.mark.parametrize("wire", ["fast", "tornado"])
async def test_without_an_app_the_pipeline_s_answers_follow_the_host_rules(
        tmp_path: Path, wire: str) -> None:
    """No mounted app: plain GETs take the fast wire's lane (node.fastproto.Lane), which
    must apply the same per-host rules: HSTS on https, the 308 on http."""
    n = Node(load_config(str(_config(tmp_path, wire, app=False))))
    await n.start()
    try:
        run = asyncio.get_running_loop().run_in_executor
        status, headers, _ = await run(None, _https(n), "/nobody-serves-this", "a.test")
        assert (status, headers.get("strict-transport-security")) == (503, HSTS)
        status, headers, _ = await run(None, _https(n), "/nobody-serves-this", "b.test")
        assert status == 503 and "strict-transport-security" not in headers
        status, headers, _ = await run(None, _http(n), "/x?q=1", "a.test")
        assert status == 308 and headers["location"] == f"https://a.test:{_port(n, 'https')}/x?q=1"
        status, headers, _ = await run(None, _http(n), "/x", "b.test")
        assert status == 503 and "strict-transport-security" not in headers
    finally:
        await n.shutdown()


def test_prepared_answers_on_https_are_offered_by_the_front() -> None:
    """Prepared answers carry the HSTS this front would add (node.hitcache.https_fields;
    tests/integration/test_prepared_tls.py), so an https front offers them too."""
    async def handle(_request: Request) -> Response:
        raise AssertionError("not called")

    plain, secure = Front(handle), Front(handle, scheme="https")
    plain.shortcut = secure.shortcut = hits = HitCache("test")
    assert plain.shortcut is hits and secure.shortcut is hits

