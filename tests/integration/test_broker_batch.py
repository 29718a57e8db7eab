"""BATCH and PACKED over real ZeroMQ sockets: batching peers carry many messages per
zmq message (PACKED: in one frame); peers that never announced BATCH (older workers,
older nodes) never get one, and peers that never announced PACKED never get that."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import zmq

from node.broker import Broker, BrokerConfig
from node.http import Headers, Request, Response
from node.protocol import (
    VERSION,
    Batch,
    Cmd,
    Ready,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
    encode_packed,
)
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(60)
BATCH_HEAD = VERSION + bytes([Cmd.BATCH])
PACKED_HEAD = VERSION + bytes([Cmd.PACKED])


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 45))  # type: ignore[arg-type]


async def until(cond: Callable[[], Any], what: str, limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)  # polling a real condition with a deadline


async def echo(r: Request) -> Response:
    await asyncio.sleep(0)  # let the other requests of this batch start too
    return Response(200, Headers([("X-Target", r.target)]), r.body if isinstance(r.body, bytes)
                    else b"")


@contextlib.asynccontextmanager
async def batching_pair(concurrency: int) -> AsyncIterator[tuple[Broker, Worker]]:
    """A broker and an SDK worker over real sockets, once both agreed on BATCH."""
    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0"), "n1")
    await broker.start()
    worker = Worker(broker.bound_endpoint, ["www"], concurrency, echo, heartbeat_interval=0.2)
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: worker._outbox is not None and worker._packing,
                    "both sides agreed on BATCH and PACKED")
        yield broker, worker
    finally:
        worker.kill()
        await asyncio.wait_for(task, 5)
        await broker.close()


def test_a_lone_request_and_its_answer_go_at_once_not_at_the_end_of_the_turn() -> None:
    """With nothing else in flight there is nothing to batch with: neither side holds the
    message for the end of its loop turn (that turn would only add to its latency)."""
    async def main() -> None:
        async with batching_pair(4) as (broker, worker):
            for i in range(3):  # one at a time
                resp = await broker.dispatch("www", Request("GET", f"/{i}", Headers()))
                assert resp.status == 200 and resp.headers.get("X-Target") == f"/{i}"
            assert broker.stats["batched"] == 0 and worker.held == 0

    run(main())


def test_sdk_worker_and_broker_batch_and_answer_every_request_right() -> None:
    async def main() -> None:
        async with batching_pair(64) as (broker, worker):
            heads: list[bytes] = []  # what each side's outbox put on the wire, by kind
            for outbox in (broker._outbox, worker._outbox):
                assert outbox is not None
                real_send = outbox._send
                outbox._send = lambda frames, real=real_send: (  # type: ignore[method-assign]
                    heads.append(frames[0] if frames[0].startswith(VERSION) else frames[1]),
                    real(frames))[1]
            calls = [broker.dispatch("www", Request("POST", f"/{i}", Headers(), b"%d" % i))
                     for i in range(300)]
            for i, resp in enumerate(await asyncio.gather(*calls)):
                assert resp.status == 200 and resp.body == b"%d" % i
                assert resp.headers.get("X-Target") == f"/{i}"
            # All but the first: it was alone in flight when sent, and a lone call goes at
            # once; the 299 after it found others in flight and waited for the batch.
            assert broker.stats["batched"] >= 299 and broker.stats["malformed"] == 0
            assert worker.held > 0  # ... and the worker's answers, many at a time, too
            # Small messages both ways: the batches went packed, none as BATCH.
            assert heads.count(PACKED_HEAD) >= 2 and BATCH_HEAD not in heads
            await worker.stop(grace=5)
            await until(lambda: broker.stats["workers_left"] == 1, "worker left")
    run(main())


def _recv_all(sock: zmq.Socket[bytes]) -> list[list[bytes]]:
    out = []
    while sock.poll(0):
        out.append(sock.recv_multipart())
    return out


@contextlib.asynccontextmanager
async def raw_peer(name: str, *announce: list[bytes]) -> AsyncIterator[tuple[Broker,
                                                                            zmq.Socket[bytes]]]:
    """A broker and a raw DEALER worker that sent READY, then each of `announce`."""
    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0"), "n1")
    await broker.start()
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.bound_endpoint)
    try:
        raw.send_multipart(encode(Ready(("www",), 50, name)))
        for frames in announce:
            raw.send_multipart(frames)
        yield broker, raw
    finally:
        raw.close()
        await broker.close()


def test_a_peer_that_never_announces_never_gets_a_batch() -> None:
    """An older worker: plain messages only, whatever the load."""
    async def main() -> None:
        async with raw_peer("old") as (broker, raw):
            await until(lambda: broker.has_free_slot("www"), "old worker joined")
            calls = [asyncio.create_task(broker.dispatch("www", Request("GET", f"/{i}",
                                                                         Headers())))
                     for i in range(50)]
            got: list[list[bytes]] = []
            await until(lambda: got.extend(_recv_all(raw)) or len(got) >= 50, "50 requests")
            assert all(f[0] != BATCH_HEAD for f in got)
            for frames in got:
                msg = decode(frames)
                if isinstance(msg, RequestMsg):
                    raw.send_multipart(encode(Reply(msg.id, 200, (), False, b"ok")))
            assert {(await c).status for c in calls} == {200}
            assert broker.stats["batched"] == 0
    run(main())


def test_an_announcing_raw_peer_gets_batches_and_its_batched_replies_count() -> None:
    async def main() -> None:
        async with raw_peer("new", encode_batch([])) as (broker, raw):
            got: list[list[bytes]] = []
            await until(lambda: got.extend(_recv_all(raw)) or
                        any(decode(f) == Batch(()) for f in got), "the node's announcement")
            calls = [asyncio.create_task(broker.dispatch("www", Request("GET", f"/{i}",
                                                                         Headers())))
                     for i in range(50)]
            requests: list[RequestMsg] = []

            def collect() -> bool:
                for frames in _recv_all(raw):
                    msg = decode(frames)
                    parts = [decode(list(p)) for p in msg.parts] if isinstance(msg, Batch) \
                        else [msg]
                    requests.extend(m for m in parts if isinstance(m, RequestMsg))
                    got.append(frames)
                return len(requests) >= 50
            await until(collect, "50 requests")
            assert any(f[0] == BATCH_HEAD and len(f) > 2 for f in got)  # some came batched
            assert all(f[0] != PACKED_HEAD for f in got)  # it never announced PACKED
            replies = [encode(Reply(m.id, 200, (), False, m.target.encode())) for m in requests]
            raw.send_multipart(encode_batch(replies[:25]))
            raw.send_multipart(encode_batch(replies[25:]))
            bodies = [(await c).body for c in calls]
            assert bodies == [f"/{i}".encode() for i in range(50)]
    run(main())


@contextlib.asynccontextmanager
async def worker_facing_a_raw_node() -> AsyncIterator[tuple[zmq.Socket[bytes], Worker]]:
    """An SDK worker connected to a raw ROUTER standing in for an older node."""
    node = zmq.Context.instance().socket(zmq.ROUTER)
    node.setsockopt(zmq.LINGER, 0)
    node.bind("tcp://127.0.0.1:0")
    worker = Worker(node.getsockopt_string(zmq.LAST_ENDPOINT), ["www"], 64, echo,
                    heartbeat_interval=0.2)
    task = asyncio.create_task(worker.run())
    try:
        yield node, worker
    finally:
        worker.kill()
        await asyncio.wait_for(task, 5)
        node.close()


def test_sdk_worker_talking_to_an_old_node_sends_plain_messages() -> None:
    """An older node never answers the announcement: the worker must not batch."""
    async def main() -> None:
        async with worker_facing_a_raw_node() as (old, worker):
            seen: list[list[bytes]] = []
            await until(lambda: seen.extend(_recv_all(old)) or len(seen) >= 2, "READY")
            ident = seen[0][0]
            for i in range(40):
                old.send_multipart([ident, *encode(RequestMsg(i, "GET", f"/{i}", (), 5.0))])
            replies: list[Reply] = []

            def collect() -> bool:
                for frames in _recv_all(old):
                    if frames[1] == BATCH_HEAD:
                        raise AssertionError("a BATCH went to a node that never announced it")
                    msg = decode(frames[1:])
                    if isinstance(msg, Reply):
                        replies.append(msg)
                return len(replies) >= 40
            await until(collect, "40 plain replies")
            assert sorted(r.id for r in replies) == list(range(40))
            assert worker._outbox is None
    run(main())


def test_a_packing_raw_peer_gets_packed_batches_but_large_bodies_go_as_batch() -> None:
    async def main() -> None:
        async with raw_peer("new", encode_batch([]), encode_packed([])) as (broker, raw):
            got: list[list[bytes]] = []
            await until(lambda: got.extend(_recv_all(raw)) or
                        Batch((), packed=True) in [decode(f) for f in got],
                        "the node's PACKED announcement")
            # In one loop turn: the first goes alone, the next 20 small fill a batch (sent
            # when full), the rest mix small and large ones.
            bodies = [b"%d" % i for i in range(30)] + [b"L" * 20_000] * 20
            calls = [asyncio.create_task(broker.dispatch("www", Request("POST", f"/{i}",
                                                                         Headers(), body)))
                     for i, body in enumerate(bodies)]
            requests: list[RequestMsg] = []
            wire: list[tuple[bytes, list[bytes]]] = []

            def collect() -> bool:
                for frames in _recv_all(raw):
                    msg = decode(frames)
                    parts = [decode(list(p)) for p in msg.parts] if isinstance(msg, Batch) \
                        else [msg]
                    ours = [m for m in parts if isinstance(m, RequestMsg)]
                    requests.extend(ours)
                    wire.append((frames[0], [m.target for m in ours]))
                return len(requests) >= len(bodies)
            await until(collect, "every request")
            small = {f"/{i}" for i in range(30)}
            assert any(head == PACKED_HEAD and set(t) <= small for head, t in wire)
            assert all(head != PACKED_HEAD for head, t in wire if set(t) - small)
            replies = [encode(Reply(m.id, 200, (), False, m.body[:8])) for m in requests]
            raw.send_multipart(encode_packed(replies))  # all 40 answers in one frame
            assert [(await c).body for c in calls] == [b[:8] for b in bodies]
            assert broker.stats["malformed"] == 0
    run(main())


def test_sdk_worker_talking_to_a_batch_only_node_never_packs() -> None:
    """A node of the release before PACKED announces BATCH only: the worker batches its
    replies to it, and never as PACKED."""
    async def main() -> None:
        async with worker_facing_a_raw_node() as (node, worker):
            seen: list[list[bytes]] = []
            await until(lambda: seen.extend(_recv_all(node)) or len(seen) >= 3,
                        "READY and both announcements")
            ident = seen[0][0]
            node.send_multipart([ident, *encode_batch([])])
            await until(lambda: worker._outbox is not None, "the worker heard BATCH")
            node.send_multipart([ident, *encode_batch(
                [encode(RequestMsg(i, "GET", f"/{i}", (), 5.0)) for i in range(40)])])
            heads: list[bytes] = []
            replies: list[Reply] = []

            def collect() -> bool:
                for frames in _recv_all(node):
                    heads.append(frames[1])
                    msg = decode(frames[1:])
                    parts = [decode(list(p)) for p in msg.parts] if isinstance(msg, Batch) \
                        else [msg]
                    replies.extend(m for m in parts if isinstance(m, Reply))
                return len(replies) >= 40
            await until(collect, "40 replies")
            assert sorted(r.id for r in replies) == list(range(40))
            assert BATCH_HEAD in heads and PACKED_HEAD not in heads
    run(main())
