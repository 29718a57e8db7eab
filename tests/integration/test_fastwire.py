"""The fast wire serving a plain tornado.web.Application over real loopback sockets.

Requests are raw bytes and responses are parsed by hand, so framing is checked
exactly; the loop is uvloop, as in the node.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Awaitable, Callable

import pytest
import tornado.web

from node.fastwire import FastHTTPServer, WireLimits, new_event_loop

CHUNK = 64 * 1024
CHUNKS = 400  # 25 MiB: far more than socket buffers plus our high-water mark


class Echo(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello " + self.request.version)

    def head(self) -> None:
        self.set_header("Content-Length", "5")

    def post(self) -> None:
        self.write(b"got " + self.request.body)


class Stream(tornado.web.RequestHandler):
    produced = 0
    finished = False

    async def get(self) -> None:
        for _ in range(CHUNKS):
            self.write(b"x" * CHUNK)
            await self.flush()  # the wire's write future: resolves under the high-water mark
            Stream.produced += CHUNK
        Stream.finished = True


@tornado.web.stream_request_body
class Limited(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.request.connection.set_max_body_size(10)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        pass

    def post(self) -> None:
        self.write("small")


@tornado.web.stream_request_body
class Early(tornado.web.RequestHandler):
    """Answers before reading the body, as a node does with 503 (no capacity) or 413."""

    def prepare(self) -> None:
        self.set_status(503)
        self.finish("busy\n")

    def data_received(self, chunk: bytes) -> None:
        raise AssertionError("the body arrives after the answer")


LIMITS = WireLimits(max_header_size=2048, max_body_size=50_000, idle_timeout=0.5,
                    header_timeout=2.0, high_water=64 * 1024, low_water=16 * 1024)


def run(scenario: Callable[[FastHTTPServer, int], Awaitable[None]]) -> None:
    async def main() -> None:
        app = tornado.web.Application([(r"/", Echo), (r"/stream", Stream),
                                       (r"/limited", Limited), (r"/early", Early)])
        server = FastHTTPServer(app, limits=LIMITS)
        port = await server.listen("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(server, port), 30)
        finally:
            server.stop()
            await server.close_all_connections()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


async def read_response(reader: asyncio.StreamReader, head: bool = False
                        ) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    fields: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin1").partition(":")
        fields[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if head or status in (204, 304):
        return status, fields, b""
    if fields.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
        return status, fields, body
    if "content-length" in fields:
        return status, fields, await reader.readexactly(int(fields["content-length"]))
    return status, fields, await reader.read()


def test_get_post_head_and_keep_alive_on_one_connection() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(5):
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, fields, body = await read_response(reader)
            assert (status, body) == (200, b"hello HTTP/1.1") and "connection" not in fields
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nn=%d" % i)
            assert (await read_response(reader))[2] == b"got n=%d" % i
        writer.write(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, fields, _ = await read_response(reader, head=True)
        assert status == 200 and fields["content-length"] == "5"
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, fields, body = await read_response(reader)
        assert fields["connection"] == "close"
        assert await reader.read() == b""  # closed after the answer
        assert server.connections <= 1
        writer.close()

    run(scenario)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n%02d" % i
                              for i in range(20)))
        for i in range(20):
            assert (await read_response(reader))[2] == b"got %02d" % i
        writer.close()

    run(scenario)


def test_chunked_request_body() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n")
        await writer.drain()
        writer.write(b"4;ext=1\r\ndefg\r\n0\r\n\r\n")
        assert (await read_response(reader))[2] == b"got abcdefg"
        writer.close()

    run(scenario)


def test_a_slow_reader_holds_the_writer_back() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        Stream.produced, Stream.finished = 0, False
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        # Nobody reads: the handler must end up waiting on a write future.
        deadline = asyncio.get_running_loop().time() + 10
        while not any(w.write_paused for w in server._wires):
            assert asyncio.get_running_loop().time() < deadline, "writer never held back"
            await asyncio.sleep(0.01)  # polling a real condition, with a deadline
        assert not Stream.finished and Stream.produced < CHUNK * CHUNKS // 4
        # What we buffer is bounded by the high-water mark plus one chunk (+ framing).
        assert server.buffered_bytes() <= LIMITS.high_water + CHUNK + 64
        status, _fields, body = await read_response(reader)  # now read it all
        assert status == 200 and len(body) == CHUNK * CHUNKS and Stream.finished
        writer.close()

    run(scenario)


@pytest.mark.parametrize(("raw", "status"), [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n" + b"x" * 100, 413),
    (b"POST /limited HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world", 413),
    (b"POST /limited HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"b\r\nhello world\r\n0\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 3000 + b"\r\n\r\n", 431),
])
def test_limits_answer_and_close(raw: bytes, status: int) -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        got = await reader.read()  # ends when the server closes
        assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]
        writer.close()

    run(scenario)


def test_header_limit_counts_a_head_that_never_ends() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(10):  # each write may be its own read on the server
            writer.write(b"z" * 1000)
            await writer.drain()
        got = await reader.read()
        assert got.startswith(b"HTTP/1.1 431 "), got[:200]
        writer.close()

    run(scenario)


def test_idle_keep_alive_connection_is_closed() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await reader.read() == b""  # idle timeout (0.5 s) closes it
        assert server.connections == 0 or await_closed(server)
        writer.close()

    run(scenario)


def await_closed(server: FastHTTPServer) -> bool:
    return server.busy_connections == 0


def test_http_1_0_closes_unless_keep_alive() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        _, fields, body = await read_response(reader)
        assert body == b"hello HTTP/1.0" and fields["connection"] == "Keep-Alive"
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        _status, fields, body = await read_response(reader)
        assert body == b"hello HTTP/1.0" and "transfer-encoding" not in fields
        assert await reader.read() == b""
        writer.close()

    run(scenario)


def test_stop_closes_idle_connections_and_refuses_new_ones() -> None:
    async def scenario(server: FastHTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        server.stop()
        assert await reader.read() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    run(scenario)


def test_an_answer_before_the_body_reaches_a_client_still_sending_it() -> None:
    """A client that sends its whole body before reading (http.client, requests) must get
    the early answer: closing with its bytes unread would reset the connection under it."""
    async def main() -> None:
        server = FastHTTPServer(tornado.web.Application([(r"/early", Early)]),
                                limits=WireLimits(max_body_size=64 << 20))
        port = await server.listen("127.0.0.1", 0)

        def post() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:  # far more than the socket buffers hold: still sending when answered
                conn.request("POST", "/early", body=b"x" * (16 << 20), headers={"Host": "a"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        try:
            assert await asyncio.to_thread(post) == (503, b"busy\n")
            while server.connections:  # noqa: ASYNC110 - and the connection does end
                await asyncio.sleep(0.01)  # polling a real condition, bounded by wait_for
        finally:
            server.stop()
            await server.close_all_connections()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 30))
