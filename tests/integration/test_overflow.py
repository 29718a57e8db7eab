"""Overflow to peers over real ZeroMQ sockets: brokers, SDK workers, peer transports.

Node A has one slow worker slot; node B (another broker + transport in this
process) has free workers. A's OverflowDispatcher must send what A cannot take
to B, count what it sent so a stale report cannot draw more than B offered,
hear "busy" from a full B and fall back to its own queue, and never forward a
forwarded request again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from testkit.gatedbroker import gated_broker
from testkit.procs import free_port

from gossip.load import ServiceLoad
from gossip.transport import (
    PeerReply,
    PeerRequest,
    PeerTimeout,
    Refuse,
    Transport,
    TransportConfig,
)
from mesh.loadtable import LoadTable
from node.broker import Broker
from node.errors import NoCapacity, PeerBusy, UpstreamError, UpstreamTimeout
from node.http import Headers, Request, Response
from node.overflow import ForwardedServer, OverflowDispatcher
from node.pipeline import Pipeline
from node.services import ServiceMap
from node.worker.sdk import Worker


@dataclass
class Side:
    name: str
    broker: Broker
    transport: Transport
    worker: Worker
    gate: asyncio.Event
    served: list[str]


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Poll a real condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _ep() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@contextlib.asynccontextmanager
async def side(name: str, concurrency: int) -> AsyncIterator[Side]:
    async with gated_broker(name, "www", concurrency) as g:
        assert g.worker is not None
        transport = Transport(TransportConfig(gossip=_ep(), peer=_ep(), request_timeout=5.0))
        transport.start()
        try:
            yield Side(name, g.broker, transport, g.worker, g.gate, g.served)
        finally:
            transport.close()


def _request(target: str, hops: int = 0) -> Request:
    return Request(
        "GET",
        target,
        Headers([("Host", "example.test")]),
        host="example.test",
        hops=hops,
        service="www",
    )


def _advertise(table: LoadTable, peer: Side, free: int, at: float, seq: int) -> None:
    table.update(
        peer.name,
        "west",
        "alive",
        1,
        {"peer": peer.transport.peer_endpoint},
        {"www": ServiceLoad(workers=1, slots=free, in_flight=0)},
        at,
        seq=seq,
    )


async def test_overflow_goes_to_a_peer_with_room_and_respects_its_report() -> None:
    async with side("A", 1) as a, side("B", 2) as b:
        b_dispatch = OverflowDispatcher(
            b.broker, LoadTable("B"), b.transport, node_id="B", dc="west"
        )
        b.transport.register_handler(
            "http", ForwardedServer(lambda r: b_dispatch.dispatch("www", r), node_id="B", dc="west")
        )
        table = LoadTable("A")
        _advertise(table, b, free=2, at=0.0, seq=1)
        a_dispatch = OverflowDispatcher(
            a.broker, table, a.transport, node_id="A", dc="east", rng=random.Random(1)
        )
        a.gate.clear()  # A's only slot will stay busy
        held = asyncio.create_task(a_dispatch.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        b.gate.clear()  # hold B's workers too, so its two slots stay taken
        first = asyncio.create_task(a_dispatch.dispatch("www", _request("/1")))
        second = asyncio.create_task(a_dispatch.dispatch("www", _request("/2")))
        await until(lambda: table.sent_since_report("B", "www") == 2)
        # B's report still says 2 free, but we sent 2 since: the third waits at home.
        assert table.effective_free("B", "www") == 0
        third = asyncio.create_task(a_dispatch.dispatch("www", _request("/3")))
        await until(lambda: a.broker.stats["requests"] == 2)  # /held and /3, queued at A
        b.gate.set()
        r1, r2 = await first, await second
        assert (r1.body, r2.body) == (b"B", b"B")
        assert r1.served_by == "B" and r1.outcome.startswith("forwarded")
        # B freed first while A's only slot is still held: the third leaves A's queue
        # for B's room (whichever frees first takes a queued request).
        assert (await third).body == b"B"
        a.gate.set()
        assert (await held).body == b"A"
        assert sorted(b.served) == ["/1", "/2", "/3"]


async def test_queued_requests_leave_for_a_peer_that_reports_room_as_many_as_it_has() -> None:
    """Nobody had room when three requests queued at A; then B reports two free slots
    while A's only slot is still held: two leave A's queue for B (oldest first), the
    third stays (B's report does not cover it) and is served at home."""
    async with side("A", 1) as a, side("B", 2) as b:
        b_dispatch = OverflowDispatcher(b.broker, LoadTable("B"), b.transport, node_id="B",
                                        dc="west")
        b.transport.register_handler(
            "http", ForwardedServer(lambda r: b_dispatch.dispatch("www", r), node_id="B",
                                    dc="west"))
        table = LoadTable("A")
        _advertise(table, b, free=0, at=0.0, seq=1)  # B full when they arrive
        a_dispatch = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east",
                                        rng=random.Random(1))
        a.gate.clear()
        held = asyncio.create_task(a_dispatch.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        queued = [asyncio.create_task(a_dispatch.dispatch("www", _request(f"/q{i}")))
                  for i in range(3)]
        await until(lambda: a.broker.service_loads()["www"].queued == 3)
        b.gate.clear()  # what B takes it holds, so its room is not renewed meanwhile
        _advertise(table, b, free=2, at=1.0, seq=2)
        a_dispatch.room_may_have_changed()  # what MeshMember does on a new report
        await until(lambda: table.sent_since_report("B", "www") == 2)
        assert a.broker.service_loads()["www"].queued == 1 and not queued[2].done()
        a.gate.set()
        assert (await held).body == b"A" and (await queued[2]).body == b"A"
        b.gate.set()
        first, second = await queued[0], await queued[1]
        assert (first.body, first.served_by, second.body) == (b"B", "B", b"B")
        assert sorted(b.served) == ["/q0", "/q1"]
        # The third never left A's queue: it kept its place (and nothing was re-queued).
        assert a_dispatch.sent == 2 and a.broker.stats["requests"] == 4


async def test_a_request_a_local_worker_began_is_never_withdrawn() -> None:
    async with side("A", 1) as a:
        a.gate.clear()
        withdraw: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        began = asyncio.create_task(a.broker.dispatch("www", _request("/began"),
                                                      withdraw=withdraw))
        await until(lambda: not a.broker.has_free_slot("www"))  # a worker has it
        withdraw.set_result(None)
        a.gate.set()
        assert (await began).body == b"A" and a.served == ["/began"]


async def test_a_forwarded_request_keeps_the_service_its_sender_chose() -> None:
    """B's own routes do not know example.test (a route only A has, mid-rollout): by
    them the request would go to `default`, which B does not serve. It must be served
    as the `www` whose spare slots B advertised and A picked it for."""
    async with side("A", 1) as a, side("B", 2) as b:
        b_dispatch = OverflowDispatcher(
            b.broker, LoadTable("B"), b.transport, node_id="B", dc="west"
        )
        pipeline = Pipeline([], ServiceMap.from_specs(["other.test=www"]), [], b_dispatch, "B")
        b.transport.register_handler(
            "http", ForwardedServer(pipeline.handle, node_id="B", dc="west")
        )
        table = LoadTable("A")
        _advertise(table, b, free=2, at=0.0, seq=1)
        a_dispatch = OverflowDispatcher(
            a.broker, table, a.transport, node_id="A", dc="east", rng=random.Random(1)
        )
        a.gate.clear()  # A's only slot stays busy: the next request overflows to B
        held = asyncio.create_task(a_dispatch.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        response = await asyncio.wait_for(a_dispatch.dispatch("www", _request("/routed")), 5)
        assert (response.status, response.body, response.served_by) == (200, b"B", "B")
        assert b.served == ["/routed"]
        a.gate.set()
        assert (await held).body == b"A"


async def test_a_service_nobody_serves_fails_at_its_deadline_not_twice_it() -> None:
    """No worker anywhere for `api`: the request waits for room until its deadline, then
    fails — the broker must not start a whole new timeout for it after that wait."""
    async with side("A", 1) as a:
        timeout = 1.0
        dispatch = OverflowDispatcher(a.broker, LoadTable("A"), a.transport, node_id="A",
                                      dc="east", default_timeout=timeout)
        a.broker.config = dataclasses.replace(a.broker.config, default_timeout=timeout)
        request = _request("/nobody")
        request.received = time.monotonic()
        with pytest.raises(NoCapacity):
            await asyncio.wait_for(dispatch.dispatch("api", request), 10 * timeout)
        # Twice the timeout would be 2 s; the margin is for a slow machine's timers.
        assert time.monotonic() - request.received < 1.8 * timeout


async def test_a_full_peer_says_busy_and_the_request_waits_locally() -> None:
    async with side("A", 1) as a, side("B", 1) as b:
        b_dispatch = OverflowDispatcher(
            b.broker, LoadTable("B"), b.transport, node_id="B", dc="west"
        )
        b.transport.register_handler(
            "http", ForwardedServer(lambda r: _serve(b_dispatch, r), node_id="B", dc="west")
        )
        b.gate.clear()
        b_local = asyncio.create_task(b_dispatch.dispatch("www", _request("/b-local")))
        await until(lambda: not b.broker.has_free_slot("www"))
        table = LoadTable("A")
        _advertise(table, b, free=1, at=0.0, seq=1)  # stale: B is actually full
        a_dispatch = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east")
        a.gate.clear()
        held = asyncio.create_task(a_dispatch.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        waiting = asyncio.create_task(a_dispatch.dispatch("www", _request("/w")))
        await until(lambda: a.broker.service_loads()["www"].queued == 1)
        assert a.broker.service_loads()["www"].queued == 1  # B said busy; it waits at A
        a.gate.set()
        b.gate.set()
        assert (await waiting).body == b"A"
        await held
        await b_local
        assert b.served == ["/b-local"]
        assert not a_dispatch.breakers.is_open("B", 0.0)  # busy is not a failure


async def _serve(dispatcher: OverflowDispatcher, request: Request) -> Response:
    try:
        return await dispatcher.dispatch("www", request)
    except PeerBusy:
        return Response(503, outcome=PeerBusy.outcome)


async def test_forwarded_request_is_never_forwarded_again() -> None:
    async with side("A", 1) as a, side("B", 1) as b:
        table = LoadTable("A")
        _advertise(table, b, free=1, at=0.0, seq=1)
        dispatcher = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east")
        a.gate.clear()
        held = asyncio.create_task(dispatcher.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        with pytest.raises(PeerBusy):
            await dispatcher.dispatch("www", _request("/hop", hops=1))
        assert table.sent_since_report("B", "www") == 0
        a.gate.set()
        await held


async def test_a_dead_peer_releases_its_forwards_and_idempotent_requests_stay_home() -> None:
    async with side("A", 1) as a:
        table = LoadTable("A")
        dead = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
        table.update(
            "C",
            "west",
            "alive",
            1,
            {"peer": dead},
            {"www": ServiceLoad(workers=1, slots=50)},
            0.0,
            seq=1,
        )
        transport = a.transport
        transport.config = TransportConfig(request_timeout=0.3)
        dispatcher = OverflowDispatcher(
            a.broker, table, transport, node_id="A", dc="east", default_timeout=5.0
        )
        dispatcher.breakers.config = type(dispatcher.breakers.config)(failures=1, open_for=60)
        a.gate.clear()
        held = asyncio.create_task(dispatcher.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        go = asyncio.create_task(dispatcher.dispatch("www", _request("/g")))
        await until(lambda: table.sent_since_report("C", "www"))
        assert dispatcher._inflight.get("C")
        dispatcher.peer_down("C")  # what the failure detector's verdict triggers
        await until(lambda: a.broker.service_loads()["www"].queued == 1)
        assert a.broker.service_loads()["www"].queued == 1  # the GET came home to wait
        # The membership's verdict, not the circuit's: a C that comes back starts afresh.
        assert not dispatcher.breakers.is_open("C", dispatcher.clock())
        a.gate.set()
        assert (await go).body == b"A"
        await held


async def test_a_timed_out_peer_opens_its_circuit() -> None:
    async with side("A", 1) as a:
        table = LoadTable("A")
        dead = f"tcp://127.0.0.1:{free_port()}"
        table.update(
            "C",
            "west",
            "alive",
            1,
            {"peer": dead},
            {"www": ServiceLoad(workers=1, slots=50)},
            0.0,
            seq=1,
        )
        dispatcher = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east")
        dispatcher.breakers.config = type(dispatcher.breakers.config)(failures=1, open_for=60)
        a.gate.clear()
        held = asyncio.create_task(dispatcher.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        req = _request("/g")
        req.deadline = dispatcher.clock() + 0.5
        with pytest.raises(UpstreamTimeout):
            await dispatcher.dispatch("www", req)
        assert dispatcher.breakers.is_open("C", dispatcher.clock())
        a.gate.set()
        await held


async def test_a_post_whose_peer_link_fails_before_its_deadline_gets_502_not_504() -> None:
    """The link to B is dropped when another ask on it times out with nothing heard (a probe
    does that): the POST pending on it fails at once. That is B failing (502), not our
    deadline passing (504) — and a POST is never sent on to another peer."""
    async with side("A", 1) as a, side("B", 1) as b:
        stuck = asyncio.Event()

        async def silent(_request: object) -> object:
            await stuck.wait()  # B never answers anything on its peer socket
            raise AssertionError("unreachable")

        b.transport.register_handler("http", silent)  # type: ignore[arg-type]
        table = LoadTable("A")
        _advertise(table, b, free=1, at=0.0, seq=1)
        a_dispatch = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east")
        a.gate.clear()  # A's only slot stays busy: the POST must go to B
        held = asyncio.create_task(a_dispatch.dispatch("www", _request("/held")))
        await until(lambda: not a.broker.has_free_slot("www"))
        post = Request("POST", "/pay", Headers([("Host", "example.test")]), b"amount=1",
                       host="example.test", service="www",
                       deadline=asyncio.get_running_loop().time() + 30)
        paying = asyncio.create_task(a_dispatch.dispatch("www", post))
        await until(lambda: table.sent_since_report("B", "www") == 1)
        with pytest.raises(PeerTimeout):
            await a.transport.request(b.transport.peer_endpoint, "http", {}, timeout=0.2)
        with pytest.raises(UpstreamError, match="stopped answering"):
            await asyncio.wait_for(paying, 5)
        stuck.set()
        a.gate.set()
        assert (await held).body == b"A"


async def test_a_peer_that_left_after_it_was_chosen_is_not_sent_the_request() -> None:
    """QA (rolling restart): peers are chosen once, then tried in turn, a round trip each.
    C left while B was saying "busy": its LEAVE already released what we had in flight
    to it (`peer_down`), so a forward sent now would go to a closing socket and wait for
    its deadline. It must not be sent; the GET waits here for a local slot instead."""
    async with side("A", 1) as a:
        c_got: list[str] = []
        c = Transport(TransportConfig(gossip=_ep(), peer=_ep()))
        c.start()
        table = LoadTable("A")
        dispatcher = OverflowDispatcher(a.broker, table, a.transport, node_id="A", dc="east",
                                        rng=random.Random(1))

        async def c_serves(request: PeerRequest) -> PeerReply:
            c_got.append(str(request.meta.get("target")))
            return PeerReply()

        async def b_busy(_request: PeerRequest) -> PeerReply:
            # Meanwhile C's LEAVE arrives at A: what the membership does with it.
            table.mark("C", "left")
            dispatcher.peer_down("C")
            raise Refuse("busy")

        b = Transport(TransportConfig(gossip=_ep(), peer=_ep()))
        b.start()
        b.register_handler("http", b_busy)
        c.register_handler("http", c_serves)
        try:
            for name, dc, t in (("B", "east", b), ("C", "west", c)):  # B first: our own dc
                table.update(name, dc, "alive", 1, {"peer": t.peer_endpoint},
                             {"www": ServiceLoad(workers=1, slots=1)}, 0.0, seq=1)
            a.gate.clear()
            held = asyncio.create_task(dispatcher.dispatch("www", _request("/held")))
            await until(lambda: not a.broker.has_free_slot("www"))
            waiting = asyncio.create_task(dispatcher.dispatch("www", _request("/g")))
            await until(lambda: a.broker.service_loads()["www"].queued == 1)
            assert c_got == []  # C, gone, was never sent it
            a.gate.set()
            assert (await asyncio.wait_for(waiting, 10)).body == b"A"
            await held
        finally:
            b.close()
            c.close()
