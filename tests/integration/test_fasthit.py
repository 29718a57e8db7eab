"""Prepared cache hits on the fast wire: byte-for-byte the slow path's answer, and only
when the slow path would give a fresh HIT (real uvloop server, raw loopback sockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from cache.memory import MemoryStore
from node.cachestage import CacheStage
from node.fastwire import FastHTTPServer, new_event_loop
from node.front import Front
from node.http import Headers, Request, Response
from node.pipeline import Pipeline
from node.services import ServiceMap

BIG = b"y" * (64 * 1024)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Origin:
    """A Dispatcher answering from memory, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def dispatch(self, service: str, request: Request) -> Response:
        self.calls += 1
        body = BIG if request.path == "/big" else b"hello %d" % self.calls
        headers = Headers([("Content-Type", "text/plain"), ("Cache-Control", "max-age=100"),
                           ("ETag", '"v1"'), ("Set-Cookie-Not", "100%; x")])
        if request.path == "/vary":
            headers.add("Vary", "Accept")
        return Response(200, headers, body)


Scenario = Callable[[int, CacheStage, Origin, Clock, Front], Awaitable[None]]


def serve(scenario: Scenario) -> None:
    async def main() -> None:
        clock = Clock(1_000_000.0)
        stage = CacheStage(MemoryStore(), node_id="n1", wall_clock=clock, monotonic=clock)
        stage.hits.stamp = (("X-Scale0-Node", "n1; dc=x"),)
        origin = Origin()
        pipeline = Pipeline([], ServiceMap.from_specs([]), [stage], origin, "n1")

        async def handle(request: Request) -> Response:
            response = await pipeline.handle(request)
            response.headers.set("X-Scale0-Node", "n1; dc=x")  # what node.server adds
            return response

        front = Front(handle)
        front.shortcut = stage.hits
        server = FastHTTPServer(front)
        port = await server.listen("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(port, stage, origin, clock, front), 30)
        finally:
            server.stop()
            await server.close_all_connections(1.0)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


async def exchange(port: int, raw: bytes, answers: int = 1) -> list[tuple[bytes, bytes]]:
    """Send `raw` on one connection; read `answers` responses as (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(raw)
    out = []
    for _ in range(answers):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        out.append((head, await reader.readexactly(length)))
    writer.close()
    return out


def get(path: str = "/a", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: Example.com\r\nX-Request-Id: r-1\r\n{extra}\r\n".encode()


def test_prepared_hit_is_byte_identical_to_the_slow_hit() -> None:
    async def scenario(port: int, stage: CacheStage, origin: Origin, clock: Clock,
                       front: Front) -> None:
        for path in ("/a", "/big"):
            (miss,) = await exchange(port, get(path))
            assert b"X-Cache: MISS" in miss[0]
            clock.now += 7.5
            (slow,) = await exchange(port, get(path))  # served by the pipeline, then offered
            hits_before = stage.counts["hit"]
            assert len(stage.hits) >= 1
            (fast,) = await exchange(port, get(path))
            assert stage.counts["hit"] == hits_before + 1
            assert fast == slow  # head and body, byte for byte
            assert b"\r\nAge: 7\r\n" in fast[0] and b"ttl=92" in fast[0]
            assert b"\r\nX-Request-Id: r-1\r\n" in fast[0]
            assert b"\r\nSet-Cookie-Not: 100%; x\r\n" in fast[0]
        assert origin.calls == 2

    serve(scenario)


def test_the_shortcut_answers_only_plain_gets_of_fresh_entries() -> None:
    async def scenario(port: int, stage: CacheStage, origin: Origin, clock: Clock,
                       front: Front) -> None:
        await exchange(port, get())
        await exchange(port, get())  # offered
        assert len(stage.hits) == 1
        # conditionals and request directives go the slow way and get the slow answers
        (h,) = await exchange(port, get(extra='If-None-Match: "v1"\r\n'))
        assert h[0].startswith(b"HTTP/1.1 304 ")
        (h,) = await exchange(port, get(extra="Cache-Control: no-cache\r\n"))
        assert b"X-Cache: REVALIDATED" in h[0] or b"X-Cache: MISS" in h[0]
        # a bad field value is refused as the slow path refuses it
        (h,) = await exchange(port, get(extra="X-Odd: a\x01b\r\n"))
        assert h[0].startswith(b"HTTP/1.1 400 ")
        # an invalid request id is replaced, never echoed
        (h,) = await exchange(port, get().replace(b"r-1", b"bad id!"))
        assert b"bad id" not in h[0] and b"X-Cache: HIT" in h[0]
        # Vary: never prepared
        await exchange(port, get("/vary"))
        await exchange(port, get("/vary"))
        assert all(p.key.find("/vary") < 0 for p in stage.hits._table.values())
        # stale: the slow path decides (and refetches)
        calls = origin.calls
        clock.now += 1000
        (h,) = await exchange(port, get())
        assert origin.calls > calls and b"X-Cache: HIT" not in h[0]

    serve(scenario)


def test_purge_and_new_store_are_seen_at_once() -> None:
    async def scenario(port: int, stage: CacheStage, origin: Origin, clock: Clock,
                       front: Front) -> None:
        await exchange(port, get())
        await exchange(port, get())
        (h,) = await exchange(port, get())
        assert h[1] == b"hello 1"
        assert await stage.purge("http://example.com/a") == 1
        (h,) = await exchange(port, get())
        assert b"X-Cache: MISS" in h[0] and h[1] == b"hello 2"
        await exchange(port, get())  # prepared again
        hits = stage.counts["hit"]
        (h,) = await exchange(port, get())
        assert stage.counts["hit"] == hits + 1 and b"Connection" not in h[0]
        front.draining = True  # a draining node answers the slow way, with close
        (h,) = await exchange(port, get())
        assert b"Connection: close" in h[0]

    serve(scenario)


def test_pipelined_requests_keep_their_order() -> None:
    async def scenario(port: int, stage: CacheStage, origin: Origin, clock: Clock,
                       front: Front) -> None:
        await exchange(port, get("/a"))
        await exchange(port, get("/a"))  # /a is prepared; /b is not stored yet
        raw = get("/a") + get("/b") + get("/a") + get("/b")
        answers = await exchange(port, raw, 4)
        assert [a[1] for a in answers] == [b"hello 1", b"hello 2", b"hello 1", b"hello 2"]

    serve(scenario)
