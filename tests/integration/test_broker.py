"""Broker + SDK workers over real ZeroMQ sockets on loopback, in one process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import zmq

from node.body import BodyChannel
from node.broker import Broker, BrokerConfig
from node.errors import ClientError, NoCapacity, NoRoute, UpstreamError, UpstreamTimeout
from node.freeport import free_port
from node.http import BodyError, Headers, Request, Response
from node.protocol import VERSION, BodyMsg, Cmd, Ready, Reply, RequestMsg, decode, encode
from node.worker.sdk import Handler, Worker

pytestmark = pytest.mark.timeout(60)
BEAT = 0.1


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 45))  # type: ignore[arg-type]


async def until(cond: Callable[[], Any], what: str, limit: float = 10.0) -> None:
    """Poll a real condition with a deadline (never a bare sleep as synchronisation)."""
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def mesh(*handlers: tuple[Handler, int], **cfg: Any) -> AsyncIterator[
        tuple[Broker, list[Worker]]]:
    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_interval=BEAT, **cfg),
                    "n1")
    await broker.start()
    workers: list[Worker] = []
    tasks = []
    try:
        for i, (h, conc) in enumerate(handlers):
            w = Worker(broker.bound_endpoint, ["www"], conc, h, name=f"w{i}",
                       heartbeat_interval=BEAT)
            workers.append(w)
            tasks.append(asyncio.create_task(w.run()))
            await until(lambda w=w: any(s.name == w.name for s in broker.pool.workers.values()),
                        f"worker {i} joined")
        yield broker, workers
    finally:
        for w in workers:
            w.kill()
        for t in tasks:
            await asyncio.wait_for(t, 5)
        await broker.close()


def port_is_free(port: int) -> bool:
    """Whether a listener could bind `port` now (SO_REUSEADDR, as libzmq's listeners set
    it: the first node's connections may linger in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def req(method: str = "GET", target: str = "/", body: Any = b"", deadline: float = 0.0,
        headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, target, Headers(headers or []), body, deadline=deadline)


async def echo(r: Request) -> Response:
    body = r.body if isinstance(r.body, bytes) else b"stream"
    return Response(200, Headers([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                  ("X-Method", r.method), ("X-Target", r.target)]), body)


def test_round_trip_keeps_method_target_headers_and_body() -> None:
    async def main() -> None:
        async with mesh((echo, 4)) as (broker, _):
            resp = await broker.dispatch("www", req("PURGE", "/a?b=1", b"hi"))
            assert resp.status == 200 and resp.body == b"hi"
            assert resp.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
            assert resp.headers.get("X-Method") == "PURGE" and resp.worker == "w0"
            assert broker.services() == {"www"} and broker.has_free_slot("www")
            load = broker.service_loads()["www"]
            assert (load.workers, load.slots) == (1, 4)
    run(main())


def test_a_handler_raising_a_node_error_answers_its_status_and_any_other_a_500() -> None:
    async def picky(r: Request) -> Response:
        if r.target == "/bad":
            raise ClientError("the id must be a number")
        if r.target == "/busy":
            raise NoCapacity("try later", retry_after=7)
        if r.target == "/none":
            raise NoRoute("no such thing")
        raise KeyError("a bug, with a secret in it")

    async def main() -> None:
        async with mesh((picky, 4)) as (broker, _):
            bad = await broker.dispatch("www", req("GET", "/bad"))
            assert (bad.status, bad.body) == (400, b"the id must be a number\n")
            busy = await broker.dispatch("www", req("GET", "/busy"))
            assert busy.status == 503 and busy.headers.get("Retry-After") == "7"
            assert (await broker.dispatch("www", req("GET", "/none"))).status == 404
            bug = await broker.dispatch("www", req("GET", "/bug"))
            assert (bug.status, bug.body) == (500, b"the worker's handler failed\n")
    run(main())


def test_concurrency_is_never_exceeded() -> None:
    now, peak = [0], [0]

    async def slow(r: Request) -> Response:
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        await asyncio.sleep(0.01)  # simulated work, not synchronisation
        now[0] -= 1
        return Response(200)

    async def main() -> None:
        async with mesh((slow, 2), (slow, 1)) as (broker, _):
            out = await asyncio.gather(*(broker.dispatch("www", req()) for _ in range(30)))
            assert [r.status for r in out] == [200] * 30
            assert peak[0] <= 3
            assert max(w.in_flight.__len__() for w in broker.pool.workers.values()) == 0
    run(main())


def test_a_dispatch_takes_its_slot_in_the_call_not_when_awaited() -> None:
    """node.overflow sees a free slot and calls dispatch, awaiting it later in the chain:
    the slot is taken by that call, so two requests that saw the same free slot cannot
    both be sent to it (the second waits in the queue, or goes to a peer)."""
    async def main() -> None:
        gate = asyncio.Event()

        async def blocked(r: Request) -> Response:
            await gate.wait()
            return Response(200)

        async with mesh((blocked, 1)) as (broker, _):
            first = broker.dispatch("www", req())
            assert broker.capacity("www") == (1, 0)
            second = broker.dispatch("www", req())
            assert broker.service_loads()["www"].queued == 1
            gate.set()
            answers = await asyncio.gather(first, second)
            assert [r.status for r in answers] == [200, 200]
    run(main())


def test_full_worker_queues_then_503_at_deadline() -> None:
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        async def blocked(r: Request) -> Response:
            await gate.wait()
            return Response(200)

        async with mesh((blocked, 1)) as (broker, _):
            first = asyncio.create_task(broker.dispatch("www", req()))
            await until(lambda: broker.service_loads()["www"].in_flight == 1, "first in flight")
            with pytest.raises(NoCapacity):
                await broker.dispatch("www", req(deadline=time.monotonic() + 0.2))
            assert broker.service_loads()["www"].queued == 0
            gate.set()
            assert (await first).status == 200
    run(main())


def test_slow_worker_gets_504_and_cancel_reaches_it() -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def stuck(r: Request) -> Response:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return Response(200)

        async with mesh((stuck, 1)) as (broker, _):
            with pytest.raises(UpstreamTimeout):
                await broker.dispatch("www", req(deadline=time.monotonic() + 0.3))
            await asyncio.wait_for(cancelled.wait(), 5)
            await until(lambda: broker.has_free_slot("www"), "slot freed")
    run(main())


def test_killed_worker_idempotent_retried_post_gets_502() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def hang(r: Request) -> Response:
            started.set()
            await asyncio.Event().wait()
            return Response(500)

        async def ok(r: Request) -> Response:
            return Response(200, body=b"from b")

        async with mesh((hang, 4)) as (broker, workers):
            get = asyncio.create_task(broker.dispatch("www", req("GET")))
            post = asyncio.create_task(broker.dispatch("www", req("POST", body=b"x")))
            await until(lambda: broker.service_loads()["www"].in_flight == 2, "both on A")
            b = Worker(broker.bound_endpoint, ["www"], 2, ok, name="b", heartbeat_interval=BEAT)
            bt = asyncio.create_task(b.run())
            await until(lambda: len(broker.pool.workers) == 2, "B joined")
            workers[0].kill()
            resp = await get
            assert resp.status == 200 and resp.body == b"from b" and resp.worker == "b"
            with pytest.raises(UpstreamError):
                await post
            assert broker.stats["retries"] == 1 and broker.stats["workers_expired"] == 1
            b.kill()
            await bt
    run(main())


def test_a_worker_stopping_past_its_grace_hands_its_requests_back_at_once() -> None:
    """Its second DISCONNECT says it leaves them unanswered: the GET is retried at another
    worker and the POST fails now, not when its heartbeats stop counting (15 s here, well
    past this test's 5 s bound)."""
    async def main() -> None:
        slow_beat = 5.0

        async def hang(r: Request) -> Response:
            await asyncio.Event().wait()
            return Response(500)

        async def ok(r: Request) -> Response:
            return Response(200, body=b"from b")

        broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0",
                                     heartbeat_interval=slow_beat), "n1")
        await broker.start()
        a = Worker(broker.bound_endpoint, ["www"], 4, hang, name="a",
                   heartbeat_interval=slow_beat)
        b = Worker(broker.bound_endpoint, ["www"], 2, ok, name="b", heartbeat_interval=slow_beat)
        tasks = [asyncio.create_task(a.run())]
        try:
            await until(lambda: len(broker.pool.workers) == 1, "A joined")
            get = asyncio.create_task(broker.dispatch("www", req("GET")))
            post = asyncio.create_task(broker.dispatch("www", req("POST", body=b"x")))
            await until(lambda: broker.service_loads()["www"].in_flight == 2, "both on A")
            tasks.append(asyncio.create_task(b.run()))
            await until(lambda: len(broker.pool.workers) == 2, "B joined")
            await a.stop(grace=0.05)
            resp = await asyncio.wait_for(get, 5)
            assert resp.status == 200 and resp.worker == "b"
            with pytest.raises(UpstreamError):
                await asyncio.wait_for(post, 5)
            assert broker.stats["retries"] == 1 and broker.stats["workers_expired"] == 0
            assert [w.name for w in broker.pool.workers.values()] == ["b"]
        finally:
            a.kill()
            b.kill()
            for t in tasks:
                await asyncio.wait_for(t, 5)
            await broker.close()
    run(main())


class Gen:
    """A BodyStream producing `total` bytes in chunks, lazily (bounded memory)."""

    def __init__(self, total: int, chunk: int = 256 * 1024) -> None:
        self.left, self.block, self.hash = total, os.urandom(chunk), hashlib.sha256()
        self.cancelled = False

    async def read(self) -> bytes:
        n = min(self.left, len(self.block))
        self.left -= n
        out = self.block[:n]
        self.hash.update(out)
        return out

    def cancel(self) -> None:
        self.cancelled = True


def test_streamed_200mb_response_keeps_buffer_within_window() -> None:
    async def main() -> None:
        gen = Gen(200 * 1024 * 1024)

        async def big(r: Request) -> Response:
            return Response(200, Headers([("Content-Type", "application/octet-stream")]), gen)

        async with mesh((big, 1), window=8) as (broker, _):
            resp = await broker.dispatch("www", req())
            assert isinstance(resp.body, BodyChannel)
            got, h, reads = 0, hashlib.sha256(), 0
            while chunk := await resp.body.read():
                got += len(chunk)
                h.update(chunk)
                reads += 1
                if reads % 50 == 0:  # a consumer that lags lets the buffer fill to the window
                    await until(lambda: broker.stats["reply_chunks_buffered_max"] >= 8,
                                "window filled", 5)
            assert got == 200 * 1024 * 1024 and h.digest() == gen.hash.digest()
            assert broker.stats["reply_chunks_buffered_max"] <= 8
            await until(lambda: broker.has_free_slot("www"), "slot freed after the stream")
    run(main())


def test_consumer_cancel_stops_the_worker_stream() -> None:
    async def main() -> None:
        gen = Gen(1 << 40)

        async def endless(r: Request) -> Response:
            return Response(200, body=gen)

        async with mesh((endless, 1)) as (broker, _):
            resp = await broker.dispatch("www", req())
            assert isinstance(resp.body, BodyChannel)
            await resp.body.read()
            resp.body.cancel()
            await until(lambda: gen.cancelled, "the worker's body cancelled")
            await until(lambda: broker.has_free_slot("www"), "slot freed")
    run(main())


def test_streamed_upload_is_credited() -> None:
    async def main() -> None:
        peak = [0]

        async def sink(r: Request) -> Response:
            assert isinstance(r.body, BodyChannel)
            h, n = hashlib.sha256(), 0
            while chunk := await r.body.read():
                peak[0] = max(peak[0], len(r.body._chunks))
                h.update(chunk)
                n += len(chunk)
                await asyncio.sleep(0)
            return Response(200, body=f"{n} {h.hexdigest()}".encode())

        async with mesh((sink, 1)) as (broker, workers):
            gen = Gen(40 * 1024 * 1024, 64 * 1024)
            resp = await broker.dispatch("www", req("PUT", body=gen))
            n, digest = resp.body.decode().split()  # type: ignore[union-attr]
            assert int(n) == 40 * 1024 * 1024 and digest == gen.hash.hexdigest()
            assert peak[0] <= workers[0].window + 1
            big = os.urandom(3 * 256 * 1024 + 5)  # a bytes body larger than a chunk
            resp = await broker.dispatch("www", req("POST", body=big))
            assert resp.body.decode().split()[1] == hashlib.sha256(big).hexdigest()  # type: ignore[union-attr]
    run(main())


def test_garbage_frames_are_counted_and_broker_still_serves() -> None:
    async def main() -> None:
        async with mesh((echo, 2), max_message_size=1024 * 1024) as (broker, _):
            raw = zmq.Context.instance().socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(broker.bound_endpoint)
            try:
                raw.send_multipart(encode(Ready(("www",), 1)))
                await until(lambda: len(broker.pool.workers) == 2, "raw peer registered")
                reply = VERSION + bytes([Cmd.REPLY])
                bad = [[os.urandom(20)], [VERSION], [reply], [VERSION, b"\x06", b"\xc1"],
                       [reply, b"\xc1", b""], [b"x"] * 50,
                       [reply, b"\x94\x01\xcd\x00\xc8\x90\xc2"]]  # no body frame
                for frames in bad:
                    raw.send_multipart(frames)
                await until(lambda: broker.stats["malformed"] >= len(bad), "all counted")
                raw.send(b"x" * (2 * 1024 * 1024))  # over MAXMSGSIZE: zmq cuts the peer off
                for _ in range(20):
                    resp = await broker.dispatch("www", req(body=b"ok"))
                    assert resp.status == 200 and resp.body == b"ok"
            finally:
                raw.close()
    run(main())


def test_worker_reregisters_when_the_node_restarts() -> None:
    async def main() -> None:
        # A port below the ephemeral range: while no node listens, the reconnecting worker
        # could otherwise be given that very port as its own and connect to itself.
        cfg = BrokerConfig(endpoint=f"tcp://127.0.0.1:{free_port()}", heartbeat_interval=BEAT)
        b1 = Broker(cfg, "n1")
        await b1.start()
        endpoint = b1.bound_endpoint
        w = Worker(endpoint, ["www"], 1, echo, heartbeat_interval=BEAT)
        task = asyncio.create_task(w.run())
        try:
            await until(lambda: b1.services() == {"www"}, "joined first node")
            await b1.close()
            # libzmq closes the listening socket in its I/O thread, after close() returns
            # (a new process, as a real restart is, never meets this): wait for the port.
            port = int(endpoint.rsplit(":", 1)[1])
            await until(lambda: port_is_free(port), "the first node's port released")
            b2 = Broker(BrokerConfig(endpoint=endpoint, heartbeat_interval=BEAT), "n2")
            await b2.start()
            try:
                await until(lambda: b2.services() == {"www"}, "re-joined the new node")
                assert (await b2.dispatch("www", req(body=b"again"))).body == b"again"
            finally:
                await b2.close()
        finally:
            w.kill()
            await task
    run(main())


def test_set_concurrency_and_graceful_stop() -> None:
    async def main() -> None:
        async with mesh((echo, 1)) as (broker, workers):
            await workers[0].set_concurrency(5)
            await until(lambda: broker.service_loads()["www"].slots == 5, "new offer")
            await workers[0].stop(1.0)
            await until(lambda: not broker.pool.workers, "worker left")
            assert broker.stats["workers_left"] == 1
            await broker.drain(0.1)
            with pytest.raises(NoCapacity):
                await broker.dispatch("www", req())
    run(main())


def test_misbehaving_worker_replies_fail_fast_with_502() -> None:
    """A raw DEALER playing a broken worker: bad headers, uncredited chunks, stray ids."""

    async def main() -> None:
        async with mesh() as (broker, _):
            raw = zmq.Context.instance().socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(broker.bound_endpoint)
            try:
                raw.send_multipart(encode(Ready(("www",), 4, "raw")))
                await until(lambda: broker.services() == {"www"}, "raw worker joined")

                async def next_request() -> RequestMsg:
                    while True:
                        if raw.poll(0):
                            msg = decode(raw.recv_multipart())
                            if isinstance(msg, RequestMsg):
                                return msg
                        else:
                            await asyncio.sleep(0.005)  # polling a real socket, bounded by wait_for

                far = time.monotonic() + 20
                call = asyncio.create_task(broker.dispatch("www", req(deadline=far)))
                rq = await asyncio.wait_for(next_request(), 5)
                raw.send_multipart(encode(Reply(rq.id, 200, (("X", "a\r\nSet-Cookie: x"),))))
                with pytest.raises(UpstreamError, match="malformed"):
                    await asyncio.wait_for(call, 5)  # at once, not at the deadline

                call = asyncio.create_task(broker.dispatch("www", req(deadline=far)))
                rq = await asyncio.wait_for(next_request(), 5)
                raw.send_multipart(encode(Reply(rq.id, 200, (), True, b"a")))
                resp = await asyncio.wait_for(call, 5)
                assert isinstance(resp.body, BodyChannel)
                for _ in range(20):  # far beyond the granted window
                    raw.send_multipart(encode(BodyMsg(rq.id, True, b"b")))
                with pytest.raises(BodyError):
                    while await resp.body.read():
                        pass
                assert broker.stats["malformed"] >= 1

                raw.send_multipart(encode(Reply(999_999, 200, ())))
                await until(lambda: broker.stats["dropped_replies"] >= 1, "stray reply dropped")
            finally:
                raw.close()
    run(main())


def test_a_request_beyond_the_workers_limits_is_answered_400_at_once() -> None:
    """A worker of another version (older limits) cannot read what this node sends: it
    answers the one request it can name at once, instead of dropping it and leaving the
    client to wait its whole deadline (30 s here, past this test's own 45 s guard)."""
    async def main() -> None:
        async with mesh((echo, 4)) as (broker, _):
            huge = "v" * (100 * 1024)  # over the protocol's 96 KiB head budget
            resp = await broker.dispatch(
                "www", req(headers=[("X-Huge", huge)], deadline=time.monotonic() + 30))
            assert resp.status == 400
            assert b"exceeds max_str_len" in resp.body, resp.body  # says which limit
            ok = await broker.dispatch("www", req(target="/after"))  # the worker is fine
            assert ok.status == 200 and ok.headers.get("X-Target") == "/after"
    run(main())
