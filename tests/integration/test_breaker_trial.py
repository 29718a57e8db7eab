"""A half-open circuit's trial request whose client leaves must not shut the peer out.

Real brokers, SDK workers and peer transports (the sides of test_overflow.py). A's
circuit to B is open; its period passes and the next request is B's one trial. If that
request's client goes away (its task cancelled) while B still works on it, the trial
was neither a success nor a failure — and the breaker kept it "in flight" for good, so
A never sent B anything again (until B died or left). Now the trial is given back.
"""

from __future__ import annotations

import asyncio

from integration.test_overflow import _advertise, _request, side, until

from mesh.breaker import BreakerConfig
from mesh.loadtable import LoadTable
from node.overflow import ForwardedServer, OverflowDispatcher


async def test_a_trial_whose_client_left_lets_the_next_request_try_again() -> None:
    async with side("A", 1) as a, side("B", 2) as b:
        b_dispatch = OverflowDispatcher(b.broker, LoadTable("B"), b.transport, node_id="B",
                                        dc="west")
        b.transport.register_handler("http", ForwardedServer(
            lambda r: b_dispatch.dispatch("www", r), node_id="B", dc="west"))
        table = LoadTable("A")
        _advertise(table, b, free=2, at=0.0, seq=1)
        dispatcher = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east",
                                        default_timeout=5.0)
        dispatcher.breakers.config = BreakerConfig(failures=1, open_for=0.05)
        dispatcher.breakers.failure("B", dispatcher.clock())  # B failed once: open
        await until(lambda: not dispatcher.breakers.is_open("B", dispatcher.clock()))
        a.gate.clear()  # A's own slot stays busy: the requests below go to B
        b.gate.clear()  # and B holds them until we let it go
        held = asyncio.create_task(dispatcher.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        trial = asyncio.create_task(dispatcher.dispatch("www", _request("/trial")))
        await until(lambda: dispatcher._inflight.get("B"))
        trial.cancel()  # the client of the trial went away
        await asyncio.gather(trial, return_exceptions=True)
        assert not dispatcher.breakers.is_open("B", dispatcher.clock())
        _advertise(table, b, free=2, at=0.0, seq=2)
        b.gate.set()
        answer = await dispatcher.dispatch("www", _request("/next"))
        assert answer.body == b"B" and "/next" in b.served
        a.gate.set()
        await held
