"""node.zmqpump.ZmqPump on real sockets: what a wake-up hands on, and in which order.

The peer is an inproc PAIR: its sends are in the pump's pipe when they return, so a
burst is waiting, whole, when the pump's FD wakes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import zmq

from node.zmqpump import ZmqPump


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    ours, theirs = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    ours.bind("inproc://pump")
    theirs.connect("inproc://pump")
    try:
        yield ours, theirs
    finally:
        ours.close(0)
        theirs.close(0)
        ctx.term()


async def _settled(pump: ZmqPump) -> None:
    """Once the drain the pump scheduled at its start has run (call_soon is FIFO)."""
    loop = asyncio.get_running_loop()
    ran = loop.create_future()
    loop.call_soon(ran.set_result, None)
    await ran
    assert not pump._scheduled


def test_a_burst_is_handed_on_whole_and_in_order(pair: tuple[zmq.Socket[bytes], ...]) -> None:
    ours, theirs = pair
    got: list[list[bytes]] = []

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        def on_message(frames: list[bytes]) -> None:
            got.append(frames)
            if len(got) == 300 and not done.done():
                done.set_result(None)

        pump = ZmqPump(ours, on_message)
        await _settled(pump)
        for i in range(300):  # more than one drain's batch
            theirs.send_multipart([b"m", str(i).encode()])
        await asyncio.wait_for(done, 10)
        pump.close()

    asyncio.run(main())
    assert got == [[b"m", str(i).encode()] for i in range(300)]


def test_what_a_message_scheduled_runs_before_the_next_message(
        pair: tuple[zmq.Socket[bytes], ...]) -> None:
    """A lone REPLY wakes a task (a callback scheduled by its handler): that task writes
    its answer before the pump asks libzmq for more (a getsockopt and a poll(2))."""
    ours, theirs = pair
    order: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_message(frames: list[bytes]) -> None:
            name = frames[0].decode()
            order.append(name)
            loop.call_soon(order.append, f"woken by {name}")
            if name == "second":
                loop.call_soon(done.set_result, None)

        pump = ZmqPump(ours, on_message)
        await _settled(pump)
        theirs.send(b"first")
        theirs.send(b"second")  # both wait in the pipe before the loop looks again
        await asyncio.wait_for(done, 10)
        pump.close()

    asyncio.run(main())
    assert order == ["first", "woken by first", "second", "woken by second"]
