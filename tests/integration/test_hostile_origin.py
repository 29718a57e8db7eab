"""`UpstreamClient` against an origin that misbehaves byte by byte (testkit.hostileorigin).

Like nginx's proxy module: an invalid response is a 502, a timeout a 504, a body
that breaks after the head went out is a failed stream (the worker sends ABORT),
bytes past the end of a response never become the next answer on a kept-alive
connection, and the client keeps serving with nothing left open behind it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import pytest
from testkit.hostileorigin import HostileOrigin
from testkit.nodeproc import poll

from node.body import BodyChannel, read_body
from node.http import BodyError, Headers, Request, Response
from node.worker.upstream import UpstreamClient

pytestmark = pytest.mark.timeout(60)
Main = Callable[[HostileOrigin, UpstreamClient], Awaitable[None]]


def req(target: str, method: str = "GET", body: bytes = b"", deadline: float = 0.0) -> Request:
    return Request(method, target, Headers(), body, deadline=deadline)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(main: Main, **client_args: float) -> None:
    """Run `main` with a fresh origin and client; then nothing may be left open."""
    async def outer() -> None:
        fds = open_fds()
        tasks = len(asyncio.all_tasks())
        origin = HostileOrigin()
        port = await origin.start()
        client = UpstreamClient(f"http://127.0.0.1:{port}", int(client_args.pop("conns", 4)),
                                **client_args)
        try:
            await main(origin, client)
            ok = await client(req("/ok"))
            assert (ok.status, ok.body) == (200, b"ok"), "the client stopped serving"
        finally:
            await client.close()
        await poll(lambda: origin.open_conns == 0, "the origin's connections to close")
        await poll(lambda: len(asyncio.all_tasks()) <= tasks, "the body pumps to end")
        await origin.close()
        await poll(lambda: open_fds() <= fds, "no socket left open")

    asyncio.run(asyncio.wait_for(outer(), 45))


def reason(resp: Response) -> str:
    assert isinstance(resp.body, bytes)
    return resp.body.decode()


@pytest.mark.parametrize("path", ["garbage", "bighead", "cr", "lf", "nul", "twocl", "clte",
                                  "tegzip", "upgrade", "weird", "short"])
def test_an_invalid_response_head_is_a_502(path: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        for _ in range(3):  # and again: nothing about it sticks to the pool
            r = await client(req(f"/{path}"))
            assert r.status == 502, (r.status, r.headers, r.body)
            assert "upstream" in reason(r)
            assert "evil" not in str(r.headers)

    run(main)


@pytest.mark.parametrize("path", ["badchunk", "shortbig", "reset", "stall"])
def test_a_body_that_breaks_after_the_head_fails_the_stream(path: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        r = await client(req(f"/{path}"))
        assert r.status == 200 and isinstance(r.body, BodyChannel)
        with pytest.raises(BodyError):
            await read_body(r.body, 1 << 30)

    run(main, conns=1, read_timeout=0.5)  # one connection: the slot must come back


@pytest.mark.parametrize("path", ["long", "nocontent", "notmodified"])
def test_bytes_past_the_end_of_a_response_are_not_the_next_answer(path: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        r = await client(req(f"/{path}"))
        assert r.body == (b"ok" if path == "long" else b"")
        for _ in range(3):
            again = await client(req("/ok"))
            assert (again.status, again.body) == (200, b"ok")

    run(main, conns=1)


def test_an_answer_sent_later_on_an_idle_connection_is_dropped_with_it() -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        r = await client(req("/longlater"))
        assert r.body == b"ok"
        await asyncio.wait_for(origin.extra_sent.wait(), 10)
        # A pooled connection that receives bytes nobody asked for leaves the pool at once
        # (or they came in the same read as the answer and it never went back).
        await poll(lambda: not client._idle, "the connection to leave the pool")
        again = await client(req("/ok"))
        assert (again.status, again.body) == (200, b"ok")

    run(main, conns=1)


def test_interim_1xx_answers_are_skipped_and_the_connection_kept() -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        for _ in range(3):
            r = await client(req("/interim"))
            assert (r.status, r.body) == (200, b"ok")
            assert "Link" not in r.headers
        assert len(client._idle) == 1 and origin.open_conns == 1

    run(main)


def test_http10_bodies_run_until_the_close() -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        big = await client(req("/http10"))
        assert big.headers.get("X-Old") == "1"
        assert await read_body(big.body, 1 << 30) == b"h" * 300_000
        small = await client(req("/http10small"))
        assert await read_body(small.body, 100) == b"hello"

    run(main)


def test_a_silent_or_dripping_origin_is_a_504_and_frees_the_slot() -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        for path in ("silent", "drip", "silent"):
            r = await client(req(f"/{path}", deadline=time.monotonic() + 0.3))
            assert r.status == 504, (path, r.status, r.body)
            ok = await client(req("/ok"))  # one connection only: the slot came back
            assert ok.status == 200

    run(main, conns=1)


def test_a_stale_kept_alive_connection_is_retried_for_a_get_not_for_a_post() -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        assert (await client(req("/racy"))).status == 200
        r = await client(req("/racy"))  # the pooled connection closes under this one
        assert (r.status, r.body) == (200, b"ok")
        assert origin.methods["GET /racy"] == 3  # retried once, on a fresh connection
        await client.close()
        assert (await client(req("/racy", "POST", b"pay"))).status == 200
        r = await client(req("/racy", "POST", b"pay"))
        assert r.status == 502, r.body
        assert origin.methods["POST /racy"] == 2  # the origin saw it once: never resent

    run(main)
