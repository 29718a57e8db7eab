"""The SDK worker's answers to HEAD: the length a GET's body would have, and no body.

The node sends no body for a HEAD and keeps a Content-Length only if the worker gives
one; a handler that answers HEAD as it answers GET (Flask's, Tornado's habit) must not
lose its length on the way. A raw ROUTER plays the node, so what the worker sends is
what we see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import zmq
import zmq.asyncio

from node.body import BodyChannel
from node.http import Headers, Request, Response
from node.protocol import Reply, RequestMsg, decode, encode
from node.worker.sdk import Worker
from node.worker.wsgi import wsgi_handler

pytestmark = pytest.mark.timeout(60)
BODY = b"hello world\n" * 3
Handler = Callable[[Request], Awaitable[Response]]
cancelled: list[str] = []


def _streamed() -> BodyChannel:
    chan = BodyChannel(4, on_cancel=lambda: cancelled.append("stream"))
    chan.put_nowait(BODY)
    return chan  # never finished: only a reader that goes on, or a cancel, ends it


async def handler(r: Request) -> Response:
    """Answers HEAD as GET, as simple handlers do."""
    kind = r.path.strip("/")
    if kind == "plain":
        return Response(200, Headers([("Content-Type", "text/plain")]), BODY)
    if kind == "own-length":  # the handler says it: kept as it is
        return Response(200, Headers([("content-length", "999")]), b"")
    if kind == "empty":  # nothing to measure: nothing said
        return Response(200, Headers(), b"")
    if kind == "no-content":
        return Response(204, Headers(), BODY)
    if kind == "not-modified":
        return Response(304, Headers(), BODY)
    if kind == "stream":
        return Response(200, Headers(), _streamed())
    return Response(404, Headers(), b"no such thing")


def wsgi_app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [BODY[:5], BODY[5:]]


@asynccontextmanager
async def node_and_worker(h: Handler) -> AsyncIterator[Callable[[str, str], Awaitable[Reply]]]:
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:0")
    w = Worker(router.getsockopt_string(zmq.LAST_ENDPOINT), ["www"], 8, h,
               heartbeat_interval=10.0)  # the fake node never beats: stay connected
    task = asyncio.create_task(w.run())
    ident = (await router.recv_multipart())[0]  # READY
    rids = iter(range(1, 1000))

    async def ask(method: str, target: str) -> Reply:
        rid = next(rids)
        await router.send_multipart([ident, *encode(RequestMsg(rid, method, target, (), 30.0))])
        while True:
            _, *frames = await router.recv_multipart()
            msg = decode(frames)
            if isinstance(msg, Reply) and msg.id == rid:
                return msg

    try:
        yield ask
    finally:
        w.kill()
        await asyncio.wait_for(task, 5)
        router.close(linger=0)
        ctx.term()


def fields(reply: Reply) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in reply.headers:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_a_head_answer_says_the_length_the_get_body_has() -> None:
    async def main() -> None:
        async with node_and_worker(handler) as ask:
            get, head = await ask("GET", "/plain"), await ask("HEAD", "/plain")
            assert get.body == BODY and "content-length" not in fields(get)  # the node frames it
            assert head.status == 200 and head.body == b"" and not head.more
            assert fields(head)["content-length"] == [str(len(BODY))]
            assert fields(head)["content-type"] == ["text/plain"] and "date" in fields(head)
            own = await ask("HEAD", "/own-length")
            assert fields(own)["content-length"] == ["999"]  # the handler's, once
            for target in ("/empty", "/no-content", "/not-modified"):
                r = await ask("HEAD", target)
                assert "content-length" not in fields(r) and r.body == b"", target
            missing = await ask("HEAD", "/nothing")  # an error page's length too
            assert missing.status == 404 and fields(missing)["content-length"] == ["13"]

    asyncio.run(asyncio.wait_for(main(), 45))


def test_a_streamed_answer_to_head_is_not_read_and_its_producer_stops() -> None:
    async def main() -> None:
        cancelled.clear()
        async with node_and_worker(handler) as ask:
            head = await ask("HEAD", "/stream")
            assert head.status == 200 and head.body == b"" and not head.more
            assert "content-length" not in fields(head)  # not known without reading it all
            assert cancelled == ["stream"]

    asyncio.run(asyncio.wait_for(main(), 45))


def test_a_wsgi_app_answering_head_as_get_keeps_its_length() -> None:
    async def main() -> None:
        async with node_and_worker(wsgi_handler(wsgi_app, 2)) as ask:
            head = await ask("HEAD", "/")
            assert head.status == 200 and head.body == b""
            assert fields(head)["content-length"] == [str(len(BODY))]

    asyncio.run(asyncio.wait_for(main(), 45))
