"""The SDK worker's deadlines: one shared timer, a 504 from the worker itself.

A raw ROUTER socket plays the node, so the worker's own answer is what we see
(a real broker would time the call out at the same moment and hide it)."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq

from node.http import Headers, Request, Response
from node.protocol import Cancel, Ready, Reply, RequestMsg, decode, encode
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(60)


async def _recv(router: zmq.Socket[bytes], limit: float = 10.0) -> tuple[bytes, object]:
    """The next message from the worker, polled with a deadline; heartbeats skipped."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            ident, *frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            await asyncio.sleep(0.005)  # polling a real socket, bounded
            continue
        msg = decode(frames)
        if isinstance(msg, Ready | Reply):
            return ident, msg
    raise AssertionError("no message from the worker in time")


async def _scenario() -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:0")
    released = asyncio.Event()
    started: list[str] = []

    async def handler(r: Request) -> Response:
        started.append(r.target)
        if r.target.startswith("/slow"):
            await released.wait()  # never set: only a deadline or a cancel ends it
        return Response(200, Headers(), r.target.encode())

    w = Worker(router.getsockopt_string(zmq.LAST_ENDPOINT), ["www"], 8, handler,
               heartbeat_interval=10.0)  # the fake node never beats: stay connected
    task = asyncio.create_task(w.run())
    try:
        ident, ready = await _recv(router)
        assert isinstance(ready, Ready)

        def send(rid: int, target: str, deadline: float) -> None:
            router.send_multipart([ident, *encode(RequestMsg(rid, "GET", target, (), deadline))])

        # Deadlines out of order: the later-armed, earlier deadline fires first.
        send(1, "/slow/long", 0.8)
        send(2, "/slow/short", 0.2)
        send(3, "/fast", 0.2)  # finished long before its deadline: a 200, no 504
        send(4, "/slow/nodeadline", 0.0)  # no deadline: only a cancel ends it
        got: dict[int, Reply] = {}
        while len(got) < 2:
            _, msg = await _recv(router)
            assert isinstance(msg, Reply)
            got[msg.id] = msg
        assert got[3].status == 200 and got[3].body == b"/fast"
        assert got[2].status == 504
        assert set(w._jobs) == {1, 4}  # the others still running, untouched
        _, msg = await _recv(router)
        assert isinstance(msg, Reply) and msg.id == 1 and msg.status == 504
        assert set(w._jobs) == {4}
        # A cancel from the node is not a deadline: no answer, the job just ends.
        router.send_multipart([ident, *encode(Cancel(4))])
        end = time.monotonic() + 10
        while w._jobs and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polling a real condition, bounded
        assert not w._jobs
        assert sorted(started) == ["/fast", "/slow/long", "/slow/nodeadline", "/slow/short"]
    finally:
        w.kill()
        await asyncio.wait_for(task, 5)
        router.close(linger=0)


def test_deadlines_share_one_timer_and_answer_504() -> None:
    asyncio.run(asyncio.wait_for(_scenario(), 45))
