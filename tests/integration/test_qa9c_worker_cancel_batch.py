"""A CANCEL that reaches a worker in the same batch as its REQUEST (the node sends both in
one loop turn when the client leaves at once) must not leave the job behind.

Real ZeroMQ sockets in one process: a ROUTER speaking the worker protocol as the node
does, and the SDK's Worker. A task cancelled before it first ran never executes its
coroutine, so cleanup in `_serve`'s `finally` never ran: the job stayed in the worker's
table for good (a leak per occurrence; SIGTERM then waited its whole grace for requests
the node had long forgotten, and re-registered meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import zmq
import zmq.asyncio

from node.http import Headers, Request, Response
from node.protocol import (
    Cancel,
    Disconnect,
    Heartbeat,
    Ready,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
)
from node.worker.sdk import Handler, Worker

PAIRS = 50


async def handler(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain")]), b"ok")


@asynccontextmanager
async def node_and_worker(
        handle: Handler, beat: float) -> AsyncIterator[tuple[zmq.asyncio.Socket, bytes, Worker]]:
    """A ROUTER speaking the worker protocol as a node does, and a Worker registered with
    it: (the router, the worker's identity, the worker). Bounded in time as a whole."""
    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:0")
    worker = Worker(router.getsockopt_string(zmq.LAST_ENDPOINT), ["www"], 4, handle,
                    heartbeat_interval=beat)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while True:  # the worker's READY names its identity
                ident, *frames = await router.recv_multipart()
                if isinstance(decode(frames), Ready):
                    break
            yield router, ident, worker
    finally:
        worker.kill()
        await running
        router.close()


async def test_a_request_cancelled_in_its_own_batch_leaves_no_job() -> None:
    async with node_and_worker(handler, 0.1) as (router, ident, worker):
        for rid in range(1, PAIRS + 1):
            req = encode(RequestMsg(rid, "GET", f"/{rid}", (("Host", "t"),), 30.0))
            await router.send_multipart([ident, *encode_batch([req, encode(Cancel(rid))])])
        last = PAIRS + 1
        await router.send_multipart(
            [ident, *encode(RequestMsg(last, "GET", "/last", (("Host", "t"),), 30.0))])
        while True:  # the worker took every message before this answer
            _, *frames = await router.recv_multipart()
            msg = decode(frames)
            if isinstance(msg, Reply) and msg.id == last:
                break
        assert len(worker._jobs) == 0, f"{len(worker._jobs)} cancelled jobs left behind"


async def test_a_draining_worker_told_it_is_unknown_does_not_register_again() -> None:
    """stop() says DISCONNECT and the node drops the worker; its heartbeats then get a
    DISCONNECT ("who are you?"). Registering again would hand a stopping worker new work."""
    release, started = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await release.wait()
        return Response(200, Headers(), b"done")

    async with node_and_worker(slow, 0.05) as (router, ident, worker):
        await router.send_multipart(
            [ident, *encode(RequestMsg(1, "GET", "/slow", (("Host", "t"),), 30.0))])
        await started.wait()
        stopping = asyncio.create_task(worker.stop(grace=10.0))
        while True:  # its goodbye
            _, *frames = await router.recv_multipart()
            if isinstance(decode(frames), Disconnect):
                break
        beats = 0
        while beats < 10:  # as a node does: every beat of a worker it let go gets
            await router.send_multipart([ident, *encode(Disconnect())])  # "who are you?"
            _, *frames = await router.recv_multipart()
            msg = decode(frames)
            assert not isinstance(msg, Ready), "a draining worker registered again"
            beats += isinstance(msg, Heartbeat)
        release.set()
        await stopping
