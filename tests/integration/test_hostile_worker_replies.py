"""Broken backends behind a real broker and worker (one process, real ZeroMQ sockets):
a hostile HTTP origin behind `UpstreamClient`, and WSGI apps that break PEP 3333.

What the node's side sees is the contract: a 502/504 (or 500 for an app that raised)
when the head has not gone out, a failed stream (ABORT) when it has, never a hang
until the deadline (an answer the node cannot decode is failed by the broker at
once), and the worker serving the next request afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from testkit.hostileorigin import HostileOrigin
from testkit.nodeproc import poll

from node.body import read_body
from node.broker import Broker, BrokerConfig
from node.errors import Scale0Error
from node.http import BodyError, Headers, Request, Response
from node.worker.sdk import Handler, Worker
from node.worker.upstream import UpstreamClient
from node.worker.wsgi import CHUNK, wsgi_handler

pytestmark = pytest.mark.timeout(90)
Ask = Callable[..., Awaitable[tuple[int, Response | None]]]


async def with_worker(handler: Handler, main: Callable[[Ask], Awaitable[None]]) -> None:
    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.1), "n")
    await broker.start()
    w = Worker(broker.bound_endpoint, ["www"], 4, handler, heartbeat_interval=0.1)
    task = asyncio.create_task(w.run())
    try:
        await poll(lambda: broker.has_free_slot("www"), "the worker to join")

        async def ask(target: str, within: float = 5.0) -> tuple[int, Response | None]:
            request = Request("GET", target, Headers(), b"",
                              deadline=time.monotonic() + within)
            try:
                resp = await broker.dispatch("www", request)
            except Scale0Error as exc:
                return exc.status, None
            return resp.status, resp

        await main(ask)
    finally:
        w.kill()
        await task
        await broker.close()


async def body_of(resp: Response | None) -> bytes:
    assert resp is not None
    return await read_body(resp.body, 1 << 30)


def test_an_upstream_answer_the_node_cannot_take_is_a_502_at_once() -> None:
    async def outer() -> None:
        origin = HostileOrigin()
        port = await origin.start()
        client = UpstreamClient(f"http://127.0.0.1:{port}", 4)

        async def main(ask: Ask) -> None:
            for path in ("bigvalue", "manyheaders", "weird", "garbage"):
                began = time.monotonic()
                status, resp = await ask(f"/{path}", within=20.0)
                assert status == 502, (path, status)
                # Refused by the worker, not left to the node's deadline.
                assert time.monotonic() - began < 10, path
            status, resp = await ask("/reset")
            assert status == 200
            with pytest.raises(BodyError):  # the worker's ABORT: never a short body as whole
                await body_of(resp)
            assert (await ask("/silent", within=0.5))[0] == 504
            status, resp = await ask("/interim")
            assert status == 200 and await body_of(resp) == b"ok"

        try:
            await with_worker(client, main)
        finally:
            await client.close()
            await origin.close()

    asyncio.run(asyncio.wait_for(outer(), 80))


GENERATOR_CLOSED = threading.Event()
APP_BLOCK = threading.Event()  # set at the end of the test: releases the blocked app thread


def bad_app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    ok = ("200 OK", [("Content-Type", "text/plain")])
    if path == "/raises":
        raise RuntimeError("app bug")
    if path == "/noniterable":
        start_response(*ok)
        return 42
    if path == "/str":
        start_response(*ok)
        return ["text, not bytes"]
    if path == "/strlate":
        start_response(*ok)
        return iter([b"b" * (CHUNK + 1), "then text"])
    if path == "/twice":
        start_response(*ok)
        start_response("500 Oops", [])
        return [b"x"]
    if path == "/nostart":
        return [b"x"]
    if path == "/nostartbig":
        return [b"x" * (CHUNK + 1)]
    if path == "/badheader":
        start_response("200 OK", [("X-Split", "a\r\nSet-Cookie: evil=1")])
        return [b"x"]
    if path == "/badstatus":
        start_response("999 Weird", [])
        return [b"x"]
    if path == "/blocks":
        APP_BLOCK.wait(60)  # an app stuck for good (bounded for the test's sake)
        start_response(*ok)
        return [b"late"]
    if path == "/lateforever":
        APP_BLOCK.wait(1.0)  # past the request's deadline, then a stream nobody reads
        start_response(*ok)
        return forever()
    if path == "/huge":
        start_response(*ok)
        return (b"h" * 65536 for _ in range(1024))  # 64 MiB through a bounded channel
    start_response(*ok)
    return [b"fine"]


def forever() -> Iterator[bytes]:
    try:
        for _ in range(1 << 20):  # bounded: 64 GiB, which nobody reads
            yield b"f" * 65536
    finally:
        GENERATOR_CLOSED.set()


def test_wsgi_apps_that_break_pep_3333_get_clear_answers() -> None:
    async def main(ask: Ask) -> None:
        for path in ("/raises", "/noniterable", "/str", "/twice", "/nostart", "/nostartbig"):
            status, _ = await ask(path, within=20.0)
            assert status == 500, (path, status)
        for path in ("/badheader", "/badstatus"):
            status, _ = await ask(path, within=20.0)
            assert status == 502, (path, status)
        status, resp = await ask("/strlate")
        assert status == 200
        with pytest.raises(BodyError):
            await body_of(resp)
        status, resp = await ask("/huge", within=30.0)
        assert status == 200 and len(await body_of(resp)) == 64 * 1024 * 1024
        assert (await ask("/blocks", within=0.3))[0] == 504
        assert (await ask("/fine"))[0] == 200  # three threads left: still serving
        assert (await ask("/lateforever", within=0.3))[0] == 504
        # Its thread answers after the deadline with an endless stream: the stream is
        # dropped, so the thread comes back instead of waiting for a reader for ever.
        assert await asyncio.to_thread(GENERATOR_CLOSED.wait, 20)
        APP_BLOCK.set()
        assert (await ask("/fine"))[0] == 200

    try:
        asyncio.run(asyncio.wait_for(with_worker(wsgi_handler(bad_app, 4), main), 80))
    finally:
        APP_BLOCK.set()
