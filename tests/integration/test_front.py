"""The front door over real loopback HTTP, with an in-memory dispatcher twin behind it.

Requests are written as raw bytes so framing, repeated fields and the odd
forms (absolute-form targets, extension methods, chunked uploads) are exactly
what a client sends; responses are parsed by hand for the same reason.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import tornado.web

import node.front
from node.body import BodyChannel, read_body
from node.errors import NoCapacity
from node.front import Front, FrontLimits, TornadoAppMount
from node.http import BodyError, Headers, Request, Response
from node.pipeline import Pipeline
from node.ratelog import RateLimitedLog
from node.services import ServiceMap
from node.stage import Next
from tests.testkit.wires import serve_front

Reply = Callable[[Request], Awaitable[Response]]


@dataclass
class Twin:
    """Dispatcher twin: records what reached it, answers with `reply`."""

    reply: Reply
    seen: list[Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def dispatch(self, service: str, request: Request) -> Response:
        self.seen.append(request)
        self.bodies.append(await read_body(request.body, 1 << 30))
        return await self.reply(request)


@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return Headers(self.headers).get(name)

    def get_all(self, name: str) -> list[str]:
        return Headers(self.headers).get_all(name)


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> Raw:
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: list[tuple[str, str]] = []
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin1").partition(":")
        headers.append((name, value.strip()))
    h = Headers(headers)
    body = b""
    if head or status in (204, 304):
        return Raw(status, headers, b"")
    if (h.get("transfer-encoding") or "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif h.get("content-length") is not None:
        body = await reader.readexactly(int(h.get("content-length") or "0"))
    else:
        body = await reader.read()
    return Raw(status, headers, body)


async def echo(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain")]), b"hello")


class Harness:
    def __init__(self, reply: Reply = echo, *, routes: tuple[str, ...] = (),
                 known: tuple[str, ...] | None = None, pre: tuple[object, ...] = (),
                 stages: tuple[object, ...] = (), mount: object = None) -> None:
        self.twin = Twin(reply)
        known_fn = (lambda: known) if known is not None else None
        self.pipeline = Pipeline(list(pre), ServiceMap.from_specs(routes),  # type: ignore[arg-type]
                                 list(stages), self.twin, "test-node",  # type: ignore[arg-type]
                                 known_services=known_fn)
        self.front = Front(self.pipeline.handle, mount=mount,  # type: ignore[arg-type]
                           limits=FrontLimits(max_header_size=4096, max_body_size=100_000))
        self.port = 0
        self._stop: Callable[[], None] = lambda: None

    async def start(self, wire: str) -> None:
        self.port, self._stop = await serve_front(self.front, wire)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, head: bool = False) -> Raw:
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            await writer.drain()
            return await asyncio.wait_for(read_response(reader, head), 10)
        finally:
            writer.close()

    async def close(self) -> None:
        self._stop()
        await self.front.drain(5)


WIRES = ("fast", "tornado")


def run(scenario: Callable[[Harness], Awaitable[None]], **kw: object) -> None:
    """The scenario on each wire (node.fastwire's, with its lane for plain requests, and
    Tornado's), each with a fresh front."""

    async def main(wire: str) -> None:
        h = Harness(**kw)  # type: ignore[arg-type]
        await h.start(wire)
        try:
            await asyncio.wait_for(scenario(h), 30)
        finally:
            await h.close()

    for wire in WIRES:
        asyncio.run(main(wire))


def test_headers_pass_through_and_repeated_set_cookie_survive() -> None:
    async def reply(request: Request) -> Response:
        return Response(200, Headers([("Set-Cookie", "a=1; Path=/"), ("X-Up", "u"),
                                      ("Set-Cookie", "b=2, c=3")]), b"ok")

    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\nX-Custom: one\r\n"
                             b"X-Custom: two\r\nAccept: */*\r\n\r\n")
        assert r.status == 200 and r.body == b"ok"
        assert r.get_all("Set-Cookie") == ["a=1; Path=/", "b=2, c=3"]
        assert r.get("X-Up") == "u"
        seen = h.twin.seen[0]
        assert seen.target == "/x?y=1" and seen.method == "GET"
        assert seen.headers.get_all("X-Custom") == ["one", "two"]
        assert seen.headers.get("Host") == "a.test"

    run(scenario, reply=reply)


def test_the_fast_wire_passes_field_names_and_order_as_the_client_sent_them() -> None:
    """A plain GET takes the fast wire's lane (node.fastproto.Lane), which hands the
    client's fields on untouched, as nginx does; Tornado's HTTPHeaders would normalise
    the names and group repeats."""

    async def main() -> None:
        h = Harness()
        await h.start("fast")
        try:
            r = await h.exchange(b"GET / HTTP/1.1\r\nhost: A.Test\r\nx-lower: 1\r\n"
                                 b"X-Custom: one\r\nACCEPT: */*\r\nX-Custom: two\r\n\r\n")
            assert r.status == 200
            fields = h.twin.seen[0].headers.items()[:5]
            assert fields == [("Host", "a.test"), ("x-lower", "1"), ("X-Custom", "one"),
                              ("ACCEPT", "*/*"), ("X-Custom", "two")]
        finally:
            await h.close()

    asyncio.run(main())


def test_hop_by_hop_removed_both_ways() -> None:
    async def reply(request: Request) -> Response:
        return Response(200, Headers([("Connection", "X-Internal"), ("X-Internal", "1"),
                                      ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"),
                                      ("Proxy-Authenticate", "Basic"), ("Trailer", "X-T"),
                                      ("X-Kept", "k")]), b"ok")

    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\n"
                             b"Connection: keep-alive, X-Secret\r\n"
                             b"X-Secret: s\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: ws\r\n"
                             b"Proxy-Authorization: Basic eA==\r\nX-Kept: k\r\n\r\n")
        sent = {k.lower() for k, _ in h.twin.seen[0].headers}
        assert not sent & {"connection", "x-secret", "keep-alive", "te", "upgrade",
                           "proxy-authorization"}
        assert "x-kept" in sent
        got = {k.lower() for k, _ in r.headers}
        assert not got & {"x-internal", "keep-alive", "upgrade", "proxy-authenticate", "trailer"}
        assert r.get("X-Kept") == "k"

    run(scenario, reply=reply)


def test_forwarding_headers_and_request_id() -> None:
    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: a.test:8080\r\nX-Forwarded-For: 10.0.0.9\r\n"
                             b"X-Forwarded-Proto: https\r\nX-Request-Id: abc-123\r\n\r\n")
        up = h.twin.seen[0].headers
        assert up.get("X-Forwarded-For") == "127.0.0.1"  # an untrusted client's chain is dropped
        assert up.get("X-Forwarded-Proto") == "http"  # the client cannot claim https
        assert up.get("X-Forwarded-Host") == "a.test:8080"
        assert up.get("Forwarded") == 'for=127.0.0.1;proto=http;host="a.test:8080"'
        assert up.get("Via") == "1.1 test-node"
        assert up.get("X-Request-Id") == "abc-123"
        assert r.get("X-Request-Id") == "abc-123" and r.get("Via") == "1.1 test-node"
        r2 = await h.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: bad id\r\n\r\n")
        generated = r2.get("X-Request-Id") or ""
        assert len(generated) == 32 and generated == h.twin.seen[1].request_id

    run(scenario)


def test_head_204_304_have_no_body_and_the_connection_stays_usable() -> None:
    async def reply(request: Request) -> Response:
        status = {"/204": 204, "/304": 304}.get(request.path, 200)
        return Response(status, Headers([("Content-Length", "5"), ("ETag", '"e"')]),
                        b"" if request.method == "HEAD" or status != 200 else b"hello")

    async def scenario(h: Harness) -> None:
        reader, writer = await h.connect()
        for method, path, status in (("HEAD", "/", 200), ("GET", "/204", 204),
                                     ("GET", "/304", 304), ("GET", "/", 200)):
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
            r = await read_response(reader, head=method == "HEAD")
            assert r.status == status
            if method == "HEAD":
                assert r.get("Content-Length") == "5"
            if status == 204:
                assert r.get("Content-Length") is None and r.get("Transfer-Encoding") is None
            if path == "/" and method == "GET":
                assert r.body == b"hello"  # framing held: this is the 4th on one connection
        writer.close()

    run(scenario, reply=reply)


def test_request_bodies_chunked_small_and_large_and_extension_method() -> None:
    async def reply(request: Request) -> Response:
        return Response(201, Headers(), b"")

    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"POST /up HTTP/1.1\r\nHost: a.test\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert r.status == 201 and h.twin.bodies[-1] == b"hello world"
        assert "transfer-encoding" not in {k.lower() for k, _ in h.twin.seen[-1].headers}
        big = bytes(range(256)) * 300  # 76,800 bytes: above the buffering threshold, streamed
        r = await h.exchange(b"PUT /big HTTP/1.1\r\nHost: a.test\r\nContent-Length: "
                             + str(len(big)).encode() + b"\r\n\r\n" + big)
        assert r.status == 201 and h.twin.bodies[-1] == big
        assert isinstance(h.twin.seen[-1].body, BodyChannel)
        xml = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'
        r = await h.exchange(b"PROPFIND /dav HTTP/1.1\r\nHost: a.test\r\nDepth: 1\r\n"
                             b"Content-Length: " + str(len(xml)).encode() + b"\r\n\r\n" + xml)
        assert r.status == 201
        assert h.twin.seen[-1].method == "PROPFIND" and h.twin.bodies[-1] == xml

    run(scenario, reply=reply)


def test_body_limits_413_and_header_limit_431() -> None:
    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100001\r\n\r\n")
        assert r.status == 413 and b"larger than" in r.body
        chunk = b"x" * 40_000
        frames = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3))
        r = await h.exchange(b"POST / HTTP/1.1\r\nHost: a.test\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             + frames + b"0\r\n\r\n")
        assert r.status == 413
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: "
                             + b"b" * 5000 + b"\r\n\r\n")
        assert r.status == 431
        # only the chunked one began (streaming starts at once); no body got through whole
        assert len(h.twin.seen) == 1 and h.twin.bodies == []
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert r.status == 200  # and the node still serves

    run(scenario)


def test_absolute_form_target_replaces_host() -> None:
    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET http://API.Example.COM:8080/p?q=1 HTTP/1.1\r\n"
                             b"Host: other.test\r\n\r\n")
        assert r.status == 200
        seen = h.twin.seen[0]
        assert seen.target == "/p?q=1" and seen.host == "api.example.com:8080"
        assert seen.headers.get_all("Host") == ["api.example.com:8080"]
        assert seen.service == "api"

    run(scenario, routes=("api.example.com=api",))


def test_bad_requests_get_400_with_a_reason() -> None:
    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET / HTTP/1.1\r\n\r\n")
        assert r.status == 400 and b"Host" in r.body
        r = await h.exchange(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert r.status == 400
        r = await h.exchange(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        assert r.status == 400
        assert not h.twin.seen

    run(scenario)


def test_errors_map_to_status_no_route_and_no_capacity() -> None:
    async def reply(request: Request) -> Response:
        raise NoCapacity("all 2 workers busy", retry_after=3)

    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        assert r.status == 404 and b"no route for host 'nowhere.test'" in r.body
        r = await h.exchange(b"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n")
        assert r.status == 503 and r.get("Retry-After") == "3"

    run(scenario, reply=reply, routes=("www.test=www",), known=("www",))


class Ticker:
    """A BodyStream that produces chunks until cancelled, and says when it was."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.sent = 0

    async def read(self) -> bytes:
        if self.cancelled.is_set():
            return b""
        await asyncio.sleep(0)
        self.sent += 1
        return b"t" * 1024 if self.sent < 10_000 else b""

    def cancel(self) -> None:
        self.cancelled.set()


def test_streamed_response_is_chunked_and_cancelled_when_the_client_leaves(
        caplog: pytest.LogCaptureFixture) -> None:
    tickers: list[Ticker] = []

    async def reply(request: Request) -> Response:
        if request.path == "/short":
            channel = BodyChannel()
            for part in (b"ab", b"cd"):
                channel.put_nowait(part)
            channel.finish()
            return Response(200, Headers(), channel)
        tickers.append(Ticker())
        return Response(200, Headers(), tickers[-1])

    async def scenario(h: Harness) -> None:
        r = await h.exchange(b"GET /short HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert r.get("Transfer-Encoding") == "chunked" and r.body == b"abcd"
        reader, writer = await h.connect()
        writer.write(b"GET /endless HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await reader.readuntil(b"tttt")
        writer.close()
        await asyncio.wait_for(tickers[0].cancelled.wait(), 10)
        assert tickers[0].sent < 10_000
        await asyncio.wait_for(h.front.wait_idle(), 10)  # the exchange was let go

    run(scenario, reply=reply)
    # A client leaving is ordinary: an info line, never "failed to answer" with a trace.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


class FailingBody:
    """An upstream body that breaks off at its first read."""

    async def read(self) -> bytes:
        raise BodyError("the origin cut it")

    def cancel(self) -> None:
        pass


def test_an_http10_client_gets_a_502_when_the_streamed_body_fails_before_its_head() -> None:
    """HTTP/1.0 has no chunked encoding, so the body is read whole before the head; when
    it breaks off, nothing is out yet and the client gets a clear 502, not a cut
    connection (the compiled front once lost this to a mistyped exception variable)."""
    async def reply(request: Request) -> Response:
        return Response(200, Headers(), FailingBody())

    async def scenario(h: Harness) -> None:
        reader, writer = await h.connect()
        writer.write(b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # HTTP/1.0: closed after it
        writer.close()
        assert answer.startswith(b"HTTP/1.1 502 "), answer
        assert answer.endswith(b"upstream body failed: the origin cut it\n")

    run(scenario, reply=reply)


def test_client_leaving_while_waiting_cancels_the_dispatch() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def reply(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def scenario(h: Harness) -> None:
        _reader, writer = await h.connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await asyncio.wait_for(started.wait(), 10)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 10)

    run(scenario, reply=reply)


def test_stage_order_and_mounted_app() -> None:
    order: list[str] = []

    async def in_node(request: Request, call_next: Next) -> Response:
        order.append(f"pre:{request.service or '-'}")
        if request.path == "/static":
            return Response(200, Headers(), b"from a pre-stage", outcome="static")
        return await call_next(request)

    async def after_mapping(request: Request, call_next: Next) -> Response:
        order.append(f"stage:{request.service}")
        response = await call_next(request)
        response.headers.add("X-Stage", "seen")
        return response

    class Mounted(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish("from the mounted app")

    app = tornado.web.Application([(r"/app", Mounted)])

    async def scenario(h: Harness) -> None:
        order.clear()  # one run per wire
        r = await h.exchange(b"GET /static HTTP/1.1\r\nHost: w.test\r\n\r\n")
        assert r.body == b"from a pre-stage" and order == ["pre:-"]
        r = await h.exchange(b"GET /x HTTP/1.1\r\nHost: w.test\r\n\r\n")
        assert r.body == b"hello" and r.get("X-Stage") == "seen"
        assert order[1:] == ["pre:-", "stage:www"]
        r = await h.exchange(b"GET /app HTTP/1.1\r\nHost: w.test\r\n\r\n")
        assert r.status == 200 and r.body == b"from the mounted app"
        assert len(order) == 3 and len(h.twin.seen) == 1  # the pipeline never saw /app

    run(scenario, routes=("w.test=www",), pre=(in_node,), stages=(after_mapping,),
        mount=TornadoAppMount(app))


@pytest.mark.parametrize("wire", ["fast", "tornado"])
@pytest.mark.parametrize("field", [("X-Up", "bell\x07"), ("X Up", "v"), ("X-Up", "\u0101")])
def test_an_unwritable_field_from_upstream_is_a_502_not_a_cut_connection(
        wire: str, field: tuple[str, str]) -> None:
    """Such a field would corrupt or split the head; the client gets a clear answer and
    the connection stays usable."""
    async def reply(request: Request) -> Response:
        if request.target == "/bad":
            return Response(200, Headers([field, ("Content-Type", "text/plain")]), b"never")
        return Response(200, Headers([("Content-Type", "text/plain")]), b"fine")

    async def main() -> None:
        pipeline = Pipeline([], ServiceMap.from_specs(()), [], Twin(reply), "test-node")
        front = Front(pipeline.handle)
        port, stop = await serve_front(front, wire)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /bad HTTP/1.1\r\nHost: a.test\r\n\r\n")
            bad = await asyncio.wait_for(read_response(reader), 10)
            assert bad.status == 502 and b"unwritable field" in bad.body
            assert b"never" not in bad.body
            writer.write(b"GET /ok HTTP/1.1\r\nHost: a.test\r\n\r\n")
            ok = await asyncio.wait_for(read_response(reader), 10)
            assert (ok.status, ok.body) == (200, b"fine")
        finally:
            writer.close()
            stop()

    asyncio.run(main())


@pytest.mark.parametrize("wire", ["fast", "tornado"])
def test_log_lines_quoting_a_target_hide_its_secret_query_values(
        wire: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warnings the front and the pipeline write about one request (an internal error,
    an answer refused) quote its target as the access log does: `password=***`."""
    # the refusal warning is rate-limited per process: a fresh limiter for each wire's run
    monkeypatch.setattr(node.front, "_refused", RateLimitedLog(logging.getLogger("t")))
    async def reply(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("a bug in a stage")
        return Response(200, Headers([("X-Up", "bell\x07")]), b"never")

    async def main() -> None:
        pipeline = Pipeline([], ServiceMap.from_specs(()), [], Twin(reply), "test-node")
        port, stop = await serve_front(Front(pipeline.handle), wire)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /boom?user=ann&password=hunter2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert (await asyncio.wait_for(read_response(reader), 10)).status == 500
            writer.write(b"GET /bad?token=s3cr3t&page=2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert (await asyncio.wait_for(read_response(reader), 10)).status == 502
        finally:
            writer.close()
            stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    text = caplog.text
    assert "/boom?user=ann&password=***" in text and "/bad?token=***&page=2" in text, text
    assert "hunter2" not in text and "s3cr3t" not in text


def test_an_answered_request_leaves_no_garbage_for_the_collector() -> None:
    """On the fast wire a finished exchange is freed by reference counting: kept in a
    cycle (the exchange, its connection and the connection's close callback, a bound
    method of the exchange), each request's objects and bodies stayed in memory until a
    collection, and the collector ran for them."""
    async def reply(request: Request) -> Response:
        return Response(200, Headers([("Content-Type", "text/plain")]), b"x" * 1000)

    async def main() -> int:
        pipeline = Pipeline([], ServiceMap.from_specs(()), [], Twin(reply), "test-node")
        port, stop = await serve_front(Front(pipeline.handle), "fast")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            gc.collect()
            for _ in range(50):
                writer.write(b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n")
                assert (await asyncio.wait_for(read_response(reader), 10)).status == 200
            return gc.collect()  # the connection is still open: only requests' garbage
        finally:
            writer.close()
            stop()

    gc.disable()
    try:
        unreachable = asyncio.run(main())
    finally:
        gc.enable()
    assert unreachable < 50, f"{unreachable} objects left to the collector by 50 requests"
