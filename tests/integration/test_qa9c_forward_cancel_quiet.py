"""A client that leaves while its request is forwarded to a peer, in the same loop turn
as the peer's answer arrives, must not leave a task whose exception nobody retrieves:
asyncio logged each one as "Task exception was never retrieved" with a traceback at
ERROR (a 5-minute mixed soak of three nodes logged 37 of them, all `PeerRefused: busy`).

Real transports over ZeroMQ in this process. The interleaving is made exact: the test
cancels the dispatch and, in the same turn, resolves the forward's pending reply as the
transport's reader does when a "busy" arrives (`PeerRefused`)."""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

from testkit.gatedbroker import gated_broker, loopback
from testkit.nodeproc import poll

from gossip.load import ServiceLoad
from gossip.transport import PeerRefused, PeerReply, PeerRequest, Transport, TransportConfig
from mesh.loadtable import LoadTable
from node.http import Headers, Request
from node.overflow import OverflowDispatcher


async def test_a_forward_given_up_as_its_busy_answer_lands_logs_no_unretrieved_error() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    held = asyncio.Event()

    async def never(_request: PeerRequest) -> PeerReply:
        await held.wait()  # B takes the forward and keeps it: A's reply stays pending
        raise AssertionError("not reached")

    a = Transport(TransportConfig(gossip=loopback(), peer=loopback(), request_timeout=10.0))
    b = Transport(TransportConfig(gossip=loopback(), peer=loopback(), request_timeout=10.0))
    a.start()
    b.start()
    b.register_handler("http", never)
    try:
        async with gated_broker("A", "www", 0) as side:  # no worker here: B it is
            table = LoadTable("A")
            table.update("B", "east", "alive", 1, {"peer": b.peer_endpoint},
                         {"www": ServiceLoad(workers=1, slots=4, in_flight=0)}, 0.0, seq=1)
            dispatcher = OverflowDispatcher(side.broker, table, a, node_id="A", dc="east",
                                            rng=random.Random(1))
            request = Request("GET", "/x", Headers([("Host", "t")]), host="t", service="www",
                              deadline=loop.time() + 10)
            client = asyncio.create_task(dispatcher.dispatch("www", request))
            await poll(lambda: dispatcher._inflight.get("B"), "the forward to B")
            forward = next(iter(dispatcher._inflight["B"]))
            pending = [f for link in a._links.values() for f in link.pending.values()]
            assert len(pending) == 1
            client.cancel()  # the client leaves...
            pending[0].set_exception(PeerRefused("busy"))  # ...as B's "busy" is read
            await asyncio.wait([client, forward])
            assert client.cancelled()
            del forward, pending, client  # (its cancellation traceback holds the forward)
            gc.collect()
        never_retrieved = [c for c in reported if "never retrieved" in str(c.get("message"))]
        assert not never_retrieved, never_retrieved
    finally:
        held.set()
        a.close()
        b.close()
        loop.set_exception_handler(None)
