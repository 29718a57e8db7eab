"""A corpus of hostile HTTP/1.1, sent as raw bytes to BOTH front doors.

Each server — Tornado's HTTPServer and node.fastwire.FastHTTPServer — serves
node.front.Front over an in-memory dispatcher twin. Every hostile case must get
400 (431, 413 where that is the answer) and a closed connection; the server must
then still answer a normal request. Where the two servers legitimately differ
(Tornado accepts what llhttp refuses), the row says so and asserts both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from node.body import read_body
from node.fastwire import FastHTTPServer, WireLimits, new_event_loop
from node.front import Front, FrontLimits, bound_port
from node.http import BodyError, Headers, Request, Response

MAX_HEADER = 4096
MAX_BODY = 100_000
TIMEOUT = 1.0
IDLE = 60.0  # never reached in these tests
SERVERS = ("tornado", "fast")


@dataclass
class Twin:
    seen: list[Request] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.seen.append(request)
        try:
            body = await read_body(request.body, MAX_BODY)
        except BodyError as exc:
            return Response.error(400, f"body failed: {exc}")
        return Response(200, Headers([("Content-Type", "text/plain")]), b"ok " + body)


@dataclass
class Served:
    kind: str
    port: int
    twin: Twin
    close: object


async def serve(kind: str) -> Served:
    twin = Twin()
    # The idle timeout is far longer than the head's: a slowloris must be cut by the
    # header timeout on both wires (Tornado's one knob takes the shorter of the two).
    limits = FrontLimits(max_header_size=MAX_HEADER, max_body_size=MAX_BODY,
                         idle_timeout=IDLE, header_timeout=TIMEOUT, body_timeout=TIMEOUT)
    front = Front(twin.handle, limits=limits)
    if kind == "tornado":
        server = front.listen(0, "127.0.0.1")

        async def close_tornado() -> None:
            server.stop()
            await server.close_all_connections()
        return Served(kind, bound_port(server), twin, close_tornado)
    fast = FastHTTPServer(front, limits=WireLimits(
        max_header_size=MAX_HEADER, max_body_size=MAX_BODY, header_timeout=TIMEOUT,
        idle_timeout=IDLE, body_timeout=TIMEOUT))
    port = await fast.listen("127.0.0.1", 0)

    async def close_fast() -> None:
        fast.stop()
        await fast.close_all_connections()
    return Served(kind, port, twin, close_fast)


async def send_raw(port: int, data: bytes) -> tuple[int | None, bytes]:
    """Send `data`, read until the server closes; (status or None, everything read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = await asyncio.wait_for(reader.read(), 10)  # ends only when the server closes
    finally:
        writer.close()
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return status, got


async def normal_request_works(port: int) -> None:
    status, got = await send_raw(port, b"GET /fine HTTP/1.1\r\nHost: a.test\r\n"
                                       b"Connection: close\r\n\r\n")
    assert status == 200 and got.endswith(b"ok "), got


H = b"POST / HTTP/1.1\r\nHost: a.test\r\n"
CASES: dict[str, tuple[bytes, int | None, int | None]] = {
    # name: (bytes, status from tornado, status from fast); None = closed without answer
    "cl_and_te": (H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                  400, 400),
    "differing_cl": (H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, 400),
    "cl_list_differing": (H + b"Content-Length: 5, 6\r\n\r\nhello!", 400, 400),
    "te_gzip_chunked": (H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, 400),
    "te_xchunked": (H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, 400),
    "te_twice": (H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 400, 400),
    "chunk_size_invalid": (H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                           400, 400),
    "chunk_size_overflow": (H + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400, 400),
    "chunk_size_0x": (H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
                      400, 400),
    "chunk_unterminated": (H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                           400, 400),
    "obs_fold": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\n c\r\n\r\n", 400, 400),
    "cr_in_value": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\rc\r\n\r\n", 400, 400),
    "nul_in_value": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\x00c\r\n\r\n", 400, 400),
    "ctl_in_value": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\x01c\r\n\r\n", 400, 400),
    "space_in_name": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX A: b\r\n\r\n", 400, 400),
    "no_colon": (b"GET / HTTP/1.1\r\nHost: a.test\r\nXA\r\n\r\n", 400, 400),
    "no_host_1_1": (b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400, 400),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400, 400),
    # Tornado refuses a comma in Host only in HTTPServerRequest (tornado.web apps), which
    # Front does not use; node.proxyheaders lets it through. The fast wire refuses it.
    "host_with_comma": (b"GET / HTTP/1.1\r\nHost: a.test,b.test\r\nConnection: close\r\n\r\n",
                        200, 400),
    "invalid_method": (b"G(T / HTTP/1.1\r\nHost: a.test\r\n\r\n", 400, 400),
    "target_with_ctl": (b"GET /a\x01b HTTP/1.1\r\nHost: a.test\r\n\r\n", 400, 400),
    "http_2_0_line": (b"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", 400, 400),
    "http_0_9_line": (b"GET /\r\n\r\n", 400, 400),
    "connect": (b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", 400, 400),
    "oversized_header": (b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: " + b"x" * (MAX_HEADER * 2)
                         + b"\r\n\r\n", 431, 431),
    "oversized_body_cl": (H + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * 1000,
                          413, 413),
    "oversized_body_chunked": (H + b"Transfer-Encoding: chunked\r\n\r\n"
                               + b"%x\r\n" % (MAX_BODY + 10) + b"x" * (MAX_BODY + 10)
                               + b"\r\n0\r\n\r\n", 413, 413),
    # Where llhttp is stricter than Tornado 6.6: Tornado accepts these (and frames them
    # unambiguously); the fast wire refuses them. Neither reads a body two ways.
    "bare_lf": (b"GET / HTTP/1.1\nHost: a.test\nConnection: close\n\n", 200, 400),
    "duplicate_identical_cl": (H + b"Content-Length: 5\r\nContent-Length: 5\r\n"
                               b"Connection: close\r\n\r\nhello", 200, 400),
}


def run(kind: str, scenario: Callable[[Served], Awaitable[None]]) -> None:
    """Serve `kind` on uvloop (as the node does), run `scenario`, stop, within 30 s."""
    async def main() -> None:
        served = await serve(kind)
        try:
            await asyncio.wait_for(scenario(served), 30)
        finally:
            await served.close()  # type: ignore[operator]

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_request_is_refused_and_the_server_lives_on(kind: str, case: str) -> None:
    data, tornado_status, fast_status = CASES[case]
    want = tornado_status if kind == "tornado" else fast_status

    async def scenario(served: Served) -> None:
        status, got = await send_raw(served.port, data)
        assert status == want, (kind, case, got[:300])
        if want != 200:  # refused: at most a streamed body's start reached the twin
            assert all(r.path != "/" or not isinstance(r.body, bytes) for r in served.twin.seen)
        await normal_request_works(served.port)

    run(kind, scenario)


@pytest.mark.parametrize("kind", SERVERS)
def test_absolute_form_target_wins_over_host(kind: str) -> None:
    run(kind, absolute_form)


async def absolute_form(served: Served) -> None:
    status, got = await send_raw(
        served.port, b"GET http://b.test/p?q=1 HTTP/1.1\r\nHost: a.test\r\n"
                     b"Connection: close\r\n\r\n")
    assert status == 200, got
    seen = served.twin.seen[-1]
    assert (seen.host, seen.target, seen.headers.get("Host")) == ("b.test", "/p?q=1", "b.test")


@pytest.mark.parametrize("kind", SERVERS)
def test_slowloris_is_cut_while_others_are_served(kind: str) -> None:
    run(kind, slowloris)


async def slowloris(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        loop = asyncio.get_running_loop()
        cut = loop.create_future()

        async def watch() -> None:
            try:
                got = await reader.read()  # b"" once the server closes
            except ConnectionError:
                got = b""  # closed with unread bytes: a reset, still no answer
            cut.set_result(got)
        watcher = asyncio.ensure_future(watch())
        head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: " + b"s" * 200
        sent = 0
        for byte in head:  # dribble until the server gives up (bounded by the head size)
            if cut.done() or writer.transport.is_closing():
                break  # closed by the server (its EOF may not have been read yet)
            writer.write(bytes([byte]))
            sent += 1
            await normal_request_works(served.port)  # others are served meanwhile
            await asyncio.wait({cut}, timeout=0.05)  # pace the dribble, not a sync point
        await asyncio.wait({cut}, timeout=10)  # the close seen by the transport first
        assert cut.done(), "the dribbling client was never cut"
        assert cut.result() == b""  # cut without an answer, as Tornado does
        assert sent < len(head)
        await watcher
    finally:
        writer.close()
