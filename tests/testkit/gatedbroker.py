"""A real worker broker with one in-process SDK worker whose answers wait for a gate.

For integration tests of dispatching and overflow: `gate.clear()` holds every request the
worker takes (its slots stay busy), `gate.set()` lets them answer with the broker's name.
Real ZeroMQ sockets on loopback; `served` lists the targets answered, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from node.broker import Broker, BrokerConfig
from node.http import Headers, Request, Response
from node.worker.sdk import Worker
from testkit.procs import free_port


def loopback() -> str:
    """A fresh tcp:// endpoint on loopback."""
    return f"tcp://127.0.0.1:{free_port()}"


@dataclass
class GatedBroker:
    name: str
    broker: Broker
    worker: Worker | None  # None: a broker with no worker (0 slots)
    gate: asyncio.Event
    served: list[str]


@contextlib.asynccontextmanager
async def gated_broker(name: str, service: str, slots: int,
                       within: float = 5.0) -> AsyncIterator[GatedBroker]:
    """A started broker named `name` and, unless `slots` is 0, a worker of `slots` for
    `service`, joined (at most `within` seconds); both closed on exit."""
    broker = Broker(BrokerConfig(endpoint=loopback(), heartbeat_interval=0.2), name)
    await broker.start()
    gate = asyncio.Event()
    gate.set()
    served: list[str] = []

    async def handler(request: Request) -> Response:
        await gate.wait()
        served.append(request.target)
        return Response(200, Headers([("Content-Type", "text/plain")]), name.encode())

    worker = (Worker(broker.bound_endpoint, [service], slots, handler, heartbeat_interval=0.2)
              if slots else None)
    task = asyncio.create_task(worker.run()) if worker is not None else None
    try:
        if worker is not None:
            end = asyncio.get_running_loop().time() + within
            while not broker.has_free_slot(service):  # a real condition, with a deadline
                if asyncio.get_running_loop().time() > end:
                    raise AssertionError(f"{name}'s worker never joined")
                await asyncio.sleep(0.01)
        yield GatedBroker(name, broker, worker, gate, served)
    finally:
        gate.set()
        if worker is not None and task is not None:
            await worker.stop(0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await broker.close()
