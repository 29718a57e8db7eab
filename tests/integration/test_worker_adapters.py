"""The worker adapters against real things: a Tornado origin on loopback for the
upstream client, a small WSGI app in its thread pool, and one trip through a broker."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
import tornado.web

from node.body import BodyChannel, BytesStream, read_body
from node.broker import Broker, BrokerConfig
from node.freeport import free_port
from node.http import BodyError, Headers, Request
from node.worker.sdk import Worker
from node.worker.upstream import UpstreamClient
from node.worker.wsgi import build_environ, wsgi_handler

pytestmark = pytest.mark.timeout(60)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 45))  # type: ignore[arg-type]


class Cookies(tornado.web.RequestHandler):
    def get(self) -> None:
        self.add_header("Set-Cookie", "a=1; Path=/")
        self.add_header("Set-Cookie", "b=2; Path=/")
        self.set_header("X-Seen-Host", self.request.host)
        self.set_header("X-Seen-Conn", self.request.headers.get("Connection", ""))
        self.write(f"{self.request.method} {self.request.uri}")

    def head(self) -> None:
        self.set_header("Content-Length", "12345")


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.h = hashlib.sha256()
        self.n = 0

    def data_received(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.n += len(chunk)

    def post(self) -> None:
        self.write(f"{self.n} {self.h.hexdigest()}")

    put = post


class Big(tornado.web.RequestHandler):
    async def get(self) -> None:
        block = b"z" * 65536
        for _ in range(int(self.get_argument("blocks", "160"))):
            self.write(block)
            await self.flush()


class Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(5)  # longer than the test's deadline: the origin is "slow"
        self.write("late")


class Broken(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Length", "1000000")
        self.write(b"x" * 1000)
        await self.flush()
        assert self.request.connection is not None
        self.request.connection.detach().close()  # type: ignore[attr-defined]


def origin() -> tuple[Any, str]:
    port = free_port()
    app = tornado.web.Application([(r"/cookies.*", Cookies), (r"/upload", Upload),
                                   (r"/big", Big), (r"/slow", Slow), (r"/broken", Broken)])
    server = app.listen(port, address="127.0.0.1")
    return server, f"http://127.0.0.1:{port}"


def req(method: str = "GET", target: str = "/", body: Any = b"", deadline: float = 0.0,
        headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, target, Headers(headers or []), body, deadline=deadline)


def test_upstream_preserves_repeated_headers_and_reuses_connections() -> None:
    async def main() -> None:
        server, url = origin()
        client = UpstreamClient(url, 4)
        try:
            for i in range(5):
                r = await client(req("GET", f"/cookies?i={i}",
                                     headers=[("Host", "www.example"), ("Connection", "close")]))
                assert r.status == 200 and r.body == f"GET /cookies?i={i}".encode()
                assert r.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
                assert r.headers.get("X-Seen-Host") == "www.example"
                assert r.headers.get("X-Seen-Conn") == ""  # hop-by-hop not forwarded
            assert len(client._idle) == 1  # one keep-alive connection served all five
            head = await client(req("HEAD", "/cookies"))
            assert head.status == 200 and head.body == b""
            assert head.headers.get("Content-Length") == "12345"
        finally:
            await client.close()
            server.stop()
    run(main())


def test_upstream_streams_bodies_both_ways() -> None:
    async def main() -> None:
        server, url = origin()
        client = UpstreamClient(url, 4)
        try:
            data = bytes(range(256)) * 40_000  # ~10 MB
            r = await client(req("PUT", "/upload", BytesStream(data, 100_000)))
            assert r.body == f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
            r = await client(req("POST", "/upload", b"small"))
            assert r.body == f"5 {hashlib.sha256(b'small').hexdigest()}".encode()
            big = await client(req("GET", "/big?blocks=160"))
            assert isinstance(big.body, BodyChannel)
            assert await read_body(big.body, 1 << 30) == b"z" * 65536 * 160
            again = await client(req("GET", "/cookies"))  # the connection went back to the pool
            assert again.status == 200
        finally:
            await client.close()
            server.stop()
    run(main())


def test_upstream_faults_become_502_and_504_with_reasons(
        caplog: pytest.LogCaptureFixture) -> None:
    """The client learns what went wrong, never where: an internal address in an error
    page maps the network behind the proxy (nginx and Varnish name no backend). The
    worker's log says where, at most once a second per kind of failure."""
    dead = free_port()

    async def main() -> None:
        server, url = origin()
        refused = UpstreamClient(f"http://127.0.0.1:{dead}", 2)
        client = UpstreamClient(url, 2)
        try:
            r = await refused(req())
            assert r.status == 502 and r.body == b"upstream refused the connection\n"
            assert (await refused(req())).status == 502  # the same failure: not logged again
            r = await client(req("GET", "/slow", deadline=time.monotonic() + 0.3))
            assert r.status == 504 and r.body == b"upstream did not answer in time\n"
            broken = await client(req("GET", "/broken"))
            assert isinstance(broken.body, BodyChannel)
            with pytest.raises(BodyError):
                await read_body(broken.body, 1 << 30)
            assert (await client(req("GET", "/cookies"))).status == 200  # still serving
        finally:
            await client.close()
            server.stop()

    with caplog.at_level(logging.WARNING, logger="scale0.worker.upstream"):
        run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count(f"upstream 127.0.0.1:{dead} refused the connection") == 1, lines
    assert any(line.startswith("upstream 127.0.0.1:") and line.endswith("did not answer in time")
               and f":{dead} " not in line for line in lines), lines


def test_an_upstream_url_with_a_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as refused:
        UpstreamClient("http://scale0:s3cret@127.0.0.1:8000", 2)
    assert "s3cret" not in str(refused.value) and "user name or password" in str(refused.value)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes] | list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("app bug")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"s" * 100_000 for _ in range(50))
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    info = (f"{environ['REQUEST_METHOD']} {path} {environ['QUERY_STRING']} "
            f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']} {environ.get('HTTP_X_A')} "
            f"{len(body)} {hashlib.sha256(body).hexdigest()[:12]}")
    return [info.encode()]


def test_wsgi_adapter_environ_bodies_streaming_and_errors() -> None:
    async def main() -> None:
        handle = wsgi_handler(wsgi_app, 4)
        r = Request("PATCH", "/a%20b?x=1", Headers([("X-A", "1"), ("X-A", "2")]), b"hello",
                    host="example.org:8080")
        resp = await handle(r)
        assert resp.status == 201 and resp.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
        digest = hashlib.sha256(b"hello").hexdigest()[:12]
        assert resp.body == f"PATCH /a b x=1 example.org:8080 1, 2 5 {digest}".encode()
        data = b"u" * 3_000_000
        resp = await handle(req("POST", "/up", BytesStream(data, 65536)))
        assert resp.body.endswith(f"3000000 {hashlib.sha256(data).hexdigest()[:12]}".encode())  # type: ignore[union-attr]
        stream = await handle(req("GET", "/stream"))
        assert isinstance(stream.body, BodyChannel)
        assert await read_body(stream.body, 1 << 30) == b"s" * 5_000_000
        boom = await handle(req("GET", "/boom"))
        assert boom.status == 500
    run(main())


def test_wsgi_environ_has_a_content_length_only_for_a_body() -> None:
    """As gunicorn's: Flask's request.content_length is None for a GET without a body."""
    def length(method: str, body: bytes, headers: list[tuple[str, str]]) -> str | None:
        env = build_environ(Request(method, "/", Headers(headers), body), None)
        return env.get("CONTENT_LENGTH")

    assert length("GET", b"", []) is None
    assert length("POST", b"", [("Content-Length", "0")]) == "0"
    assert length("POST", b"abc", [("Content-Length", "3")]) == "3"


def test_upstream_worker_through_a_broker() -> None:
    async def main() -> None:
        server, url = origin()
        broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.1), "n")
        await broker.start()
        client = UpstreamClient(url, 8)
        w = Worker(broker.bound_endpoint, ["www"], 8, client, heartbeat_interval=0.1)
        task = asyncio.create_task(w.run())
        try:
            end = time.monotonic() + 10
            while not broker.has_free_slot("www"):
                assert time.monotonic() < end, "worker never joined"
                await asyncio.sleep(0.01)
            rs = await asyncio.gather(*(broker.dispatch("www", req("GET", f"/cookies?{i}"))
                                        for i in range(20)))
            assert all(r.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
                       for r in rs)
            big = await broker.dispatch("www", req("GET", "/big?blocks=200"))
            body = big.body
            assert not isinstance(body, bytes)
            assert await read_body(body, 1 << 30) == b"z" * 65536 * 200
        finally:
            w.kill()
            await task
            await broker.close()
            await client.close()
            server.stop()
    run(main())
