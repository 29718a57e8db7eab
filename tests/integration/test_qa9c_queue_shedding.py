"""Under overload a FIFO queue's head is always about to expire: a waiter given a slot
with less time left than the service's answers take ends in a 504 and wastes the slot
(with 200 clients at a 2-slot worker of 200 ms answers and 2 s deadlines, 4 answers in
5 were 504 "the worker did not answer within 2.0s" and goodput was 23% of capacity).
Such a waiter now gets the 503 + Retry-After the queue promises, and the slot goes to
the next one, which has the time.

A real broker and an SDK worker over ZeroMQ in this process; the broker's clock is a
manual one, so "the service's answers take 2.5 s" is exact, not slept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from testkit.gatedbroker import loopback

from node.broker import Broker, BrokerConfig
from node.errors import NoCapacity
from node.http import Headers, Request, Response
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(60)


class Clock:
    now = 1000.0  # moved by the test


async def until(check: Callable[[], object], what: str) -> None:
    end = asyncio.get_running_loop().time() + 10
    while not check():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # a polling interval, not a synchronisation


async def test_a_waiter_without_time_for_an_answer_gets_503_and_the_next_one_the_slot() -> None:
    clock = Clock()
    broker = Broker(BrokerConfig(endpoint=loopback(), heartbeat_interval=1.0), "n",
                    clock=lambda: clock.now)
    await broker.start()
    gate = asyncio.Event()
    served: list[str] = []

    async def handler(request: Request) -> Response:
        await gate.wait()
        served.append(request.target)
        return Response(200, Headers([("Content-Type", "text/plain")]), b"ok")

    worker = Worker(broker.bound_endpoint, ["www"], 1, handler, heartbeat_interval=1.0)
    running = asyncio.create_task(worker.run())

    def ask(target: str, within: float) -> asyncio.Task[Response]:
        request = Request("GET", target, Headers([("Host", "t")]), b"",
                          deadline=clock.now + within)
        return asyncio.create_task(broker.dispatch("www", request))

    try:
        await until(lambda: broker.has_free_slot("www"), "the worker to join")
        first = ask("/first", 100)  # the service's answers take 2.5 s
        await until(lambda: not broker.has_free_slot("www"), "the first request to start")
        clock.now += 2.5
        gate.set()
        assert (await first).status == 200
        gate.clear()

        held = ask("/held", 100)  # the only slot is busy...
        await until(lambda: not broker.has_free_slot("www"), "the slot to be taken")
        late = ask("/late", 2.0)  # ...so these two wait; the older has 2 s left of 2.5
        await until(lambda: broker.pool.queued("www") == 1, "the first waiter")
        timely = ask("/timely", 100)
        await until(lambda: broker.pool.queued("www") == 2, "the second waiter")
        gate.set()  # the slot frees

        assert (await held).status == 200
        with pytest.raises(NoCapacity) as refused:
            await late
        assert refused.value.status == 503 and refused.value.retry_after == 1
        assert "in time" in refused.value.reason
        assert (await timely).status == 200
        assert served == ["/first", "/held", "/timely"]
    finally:
        worker.kill()
        await running
        await broker.close()
