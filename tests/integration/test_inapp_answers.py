"""In-node app answers are first-class, through a whole `Node` in this process on each wire
(real loopback sockets, the documented example app, a real access-log file): one access
line with outcome `app` and the request id, counted in the metrics, stamped with
X-Request-Id and X-Scale0-Node; and Tornado's own `tornado.access` writes nothing at INFO
for them nor for the admin listener's health checks. Then a mounted app alone on a `Front`
on each wire: a streamed answer's bytes, an error of the app's, an answer the client left
in the middle of, each logged and counted once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.iostream
import tornado.web
from integration.test_front import read_response
from testkit.nodeproc import node_from, poll
from testkit.nodetoml import loopback_listeners
from testkit.wires import serve_front

from node import logsetup
from node.accesslog import AccessLog
from node.front import Front, TornadoAppMount
from node.http import Request, Response
from node.server import Node

pytestmark = pytest.mark.timeout(60)
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture(params=["fast", "tornado"])
async def node(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    async with node_from(tmp_path, f"""
http_server = "{request.param}"
dc = "east"
cache = "off"
app = "hello_app:routes"
access_log = true
access_log_file = "{tmp_path / 'access.log'}"
{loopback_listeners("n1")}
""") as n:
        yield n


async def get(port: int, target: str, *fields: str) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection; status, fields (lower-cased names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = "".join(f"{f}\r\n" for f in fields)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


def counted(node: Node, outcome: str) -> list[str]:
    exposition = node.metrics.render()[0].decode()
    return [line for line in exposition.splitlines()
            if line.startswith("scale0_requests_total{") and f'outcome="{outcome}"' in line]


async def test_an_in_node_answer_is_logged_counted_and_stamped(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    status, headers, body = await get(node.http_port, "/hello?name=ops", "X-Request-Id: r-42")
    assert (status, body) == (200, b'{"hello": "ops"}')
    assert headers["x-request-id"] == "r-42"  # a sane id of the client's is kept
    assert headers["x-scale0-node"] == "n1; dc=east"
    assert "via" not in headers  # the node is the origin of this answer, not a proxy
    assert "server" not in headers  # Tornado's default names itself and its version
    status, headers, _ = await get(node.http_port, "/echo/abc", "X-Request-Id: not a token!")
    fresh = headers["x-request-id"]
    assert status == 200 and fresh and fresh != "not a token!"  # replaced, as the pipeline does
    assert counted(node, "app") and counted(node, "app")[0].endswith(" 2.0"), counted(node, "app")
    logsetup.flush()
    text = await asyncio.to_thread(Path(node.config.access_log_file).read_text)
    hello = [line for line in text.splitlines() if "/hello?name=ops" in line]
    assert len(hello) == 1, text
    fields = hello[0].split()
    assert fields[1] == "r-42" and fields[2] == "127.0.0.1"
    assert fields[5:9] == ["200", str(len(b'{"hello": "ops"}')), fields[7], "app"]
    assert fields[7].endswith("ms") and fields[8] == "app" and fields[9] == "n1"
    echo = [line for line in text.splitlines() if "/echo/abc" in line]
    assert len(echo) == 1 and fresh in echo[0] and " app " in echo[0]
    assert not [r for r in caplog.records if r.name == "tornado.access"], caplog.text


async def test_health_checks_write_no_info_line(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    for target in ("/_scale0/health", "/_scale0/ready", "/_scale0/nowhere"):
        status, _, _ = await get(node.admin_port, target)
        assert status == (404 if target.endswith("nowhere") else 200)
    assert not [r for r in caplog.records if r.name == "tornado.access"], caplog.text
    caplog.set_level(logging.DEBUG, logger="tornado.access")  # still there for debugging
    await get(node.admin_port, "/_scale0/ready")
    debug = [r for r in caplog.records if r.name == "tornado.access"]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG
    assert "/_scale0/ready" in debug[0].getMessage()


class Streamed(tornado.web.RequestHandler):
    async def get(self) -> None:
        for _ in range(3):
            self.write(b"x" * 1000)
            await self.flush()


class Endless(tornado.web.RequestHandler):
    async def get(self) -> None:
        for _ in range(100_000):  # bounded; the client leaves long before
            self.write(b"y" * 4096)
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                return


class Teapot(tornado.web.RequestHandler):
    def get(self) -> None:
        raise tornado.web.HTTPError(418)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


Seen = list[tuple[str, int, str, float]]  # the (service, status, outcome, seconds) counted


def app_front(logger_name: str, app: tornado.web.Application,
              stamp: str = "") -> tuple[Front, Records, Seen]:
    """A Front with `app` mounted alone; its JSON access lines and its counted answers."""
    logger = logging.getLogger(logger_name)
    logger.propagate, records = False, Records()
    logger.setLevel(logging.INFO)  # whatever the root logger's level
    logger.addHandler(records)
    seen: Seen = []

    async def pipeline(request: Request) -> Response:
        raise AssertionError("the mounted app's routes never reach the pipeline")

    front = Front(pipeline, mount=TornadoAppMount(
        app, stamp=stamp, observe=lambda *a: seen.append(a)))
    front.access_log = AccessLog("json", node="t1", logger=logger)
    return front, records, seen


@pytest.mark.parametrize("wire", ["fast", "tornado"])
async def test_streamed_refused_and_abandoned_app_answers(wire: str) -> None:
    app = tornado.web.Application([(r"/stream", Streamed), (r"/endless", Endless),
                                   (r"/teapot", Teapot)])
    front, records, seen = app_front(f"test.inapp.{wire}", app, stamp="t1; dc=x")
    port, stop = await serve_front(front, wire)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: a.test\r\n\r\n"
                     b"GET /teapot HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: tea-1\r\n\r\n")
        stream = await asyncio.wait_for(read_response(reader), 10)
        teapot = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        assert stream.status == 200 and stream.body == b"x" * 3000
        assert stream.get("Transfer-Encoding") == "chunked"
        assert stream.get("X-Scale0-Node") == "t1; dc=x" and stream.get("X-Request-Id")
        assert (teapot.status, teapot.get("X-Request-Id")) == (418, "tea-1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /endless HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(reader.readexactly(10_000), 10)
        writer.transport.abort()  # the client leaves mid-answer
        await poll(lambda: len(records.lines) == 3, "the abandoned answer's access line")
    finally:
        stop()
    by_target = {str(line["target"]): line for line in records.lines}
    assert {t: (r["status"], r["outcome"], r["node"]) for t, r in by_target.items()} == {
        "/stream": (200, "app", "t1"), "/teapot": (418, "app", "t1"),
        "/endless": (200, "app", "t1")}
    assert by_target["/stream"]["bytes"] == 3000 and by_target["/teapot"]["request_id"] == "tea-1"
    assert by_target["/stream"]["request_id"] == stream.get("X-Request-Id")
    assert isinstance(sent := by_target["/endless"]["bytes"], int) and sent >= 10_000
    assert sorted((s, st, o) for s, st, o, _ in seen) == [
        ("", 200, "app"), ("", 200, "app"), ("", 418, "app")]


@pytest.mark.parametrize("wire", ["fast", "tornado"])
async def test_a_drain_waits_for_an_in_node_answer_in_flight(wire: str) -> None:
    release = asyncio.Event()

    class Slow(tornado.web.RequestHandler):
        async def get(self) -> None:
            await release.wait()  # still working when the drain begins
            self.write("done")

    async def pipeline(request: Request) -> Response:
        raise AssertionError("the mounted app's routes never reach the pipeline")

    front = Front(pipeline, mount=TornadoAppMount(tornado.web.Application([(r"/slow", Slow)])))
    port, _ = await serve_front(front, wire)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n")
    await poll(lambda: front.in_flight == 1, "the in-node answer counted in flight")
    draining = asyncio.create_task(front.drain(10))
    await poll(lambda: front.draining, "the drain begun")
    release.set()
    answer = await asyncio.wait_for(read_response(reader), 10)
    assert (answer.status, answer.body) == (200, b"done")
    assert await asyncio.wait_for(draining, 10)  # finished in time, nothing cut
    writer.close()


class FailsMidAnswer(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.write("partial")
        await self.flush()  # the head and a chunk are out
        raise RuntimeError("the handler broke mid-answer")


class FailsAfterFlush(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("partial")
        self.flush()
        raise tornado.web.HTTPError(503)  # too late for a 503: the 200 head is out


async def read_until_closed(port: int, target: str) -> bytes:
    """All a GET gets before the node closes (or resets) the connection, or up to the end
    of a complete chunked message (a keep-alive answer passed on as whole)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
    data = b""
    try:
        while not data.endswith(b"\r\n0\r\n\r\n") and (
                chunk := await asyncio.wait_for(reader.read(65536), 10)):
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return data


@pytest.mark.parametrize("wire", ["fast", "tornado"])
async def test_a_handler_failing_after_its_head_aborts_the_answer(
        wire: str, caplog: pytest.LogCaptureFixture) -> None:
    app = tornado.web.Application([(r"/broken", FailsMidAnswer), (r"/late", FailsAfterFlush),
                                   (r"/teapot", Teapot)])
    front, records, seen = app_front(f"test.inapp.failing.{wire}", app)
    caplog.set_level(logging.WARNING, logger="scale0.inapp")
    port, stop = await serve_front(front, wire)
    try:
        for target in ("/broken", "/late"):
            data = await read_until_closed(port, target)
            # Never a complete chunked message: the client must see the answer broken.
            assert not data.endswith(b"0\r\n\r\n"), (target, data)
            assert b"\r\n0\r\n\r\n" not in data, (target, data)
            assert not data or data.startswith(b"HTTP/1.1 200 "), (target, data)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /teapot HTTP/1.1\r\nHost: a.test\r\n\r\n")
        teapot = await asyncio.wait_for(read_response(reader), 10)  # failed before its head
        writer.close()
        assert teapot.status == 418 and teapot.get("Connection") != "close"
        await poll(lambda: len(records.lines) == 3, "an access line per answer")
    finally:
        stop()
    by_target = {str(line["target"]): line for line in records.lines}
    assert {t: (r["status"], r["outcome"]) for t, r in by_target.items()} == {
        "/broken": (200, "error"), "/late": (200, "error"), "/teapot": (418, "app")}
    assert sorted((st, o) for _, st, o, _ in seen) == [(200, "error"), (200, "error"),
                                                       (418, "app")]
    aborted = [r for r in caplog.records if r.name == "scale0.inapp"]
    assert len(aborted) == 2 and "failed after its head" in aborted[0].getMessage()
