"""A peer restarted under the same id releases what was forwarded to its earlier process
(real ZeroMQ sockets, real brokers and SDK workers, two `MeshMember`s in one process).

QA (rolling restart, ~1 in 15 CI runs): node r0 forwarded a GET to r2 as r2 stopped;
r2 was back on the same ports within a second, so r0 never saw it dead or gone, and the
forward waited for an answer from a process that no longer existed until its 30 s
deadline (the client gave up at 20 s). The membership now says which process a member
is (`MemberView.life`, from its beats): a later one under the same id releases the
forwards in flight to the earlier one at once, and the GET runs elsewhere — here, at
home once a local slot frees. A forward meant for the earlier process that reaches the
new one is refused, not run (its sender gave up on it).

The `wan` preset keeps the failure detector out of it: the restart is back long before
a silence could be doubted, as in the rolling restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import zmq
from testkit.gatedbroker import gated_broker, loopback

from gossip.reliable import ROLLOVERS
from gossip.transport import PeerRefused, Transport, TransportConfig
from mesh.forward import ForwardedRequest, request_meta
from node.broker import Broker
from node.errors import PeerBusy
from node.http import Headers, Request, Response
from node.meshmember import MeshMember
from node.overflow import RESTARTED_REASON

SERVICE = "www"


async def until(condition: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Poll a real condition with a deadline (never a bare sleep as synchronisation)."""
    end = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Node:
    name: str
    broker: Broker
    mesh: MeshMember
    gate: asyncio.Event
    served: list[str]


def _member(name: str, broker: Broker, seeds: list[str], gossip: str, peer: str) -> MeshMember:
    return MeshMember(node_id=name, dc="east", broker=broker, gossip_endpoint=gossip,
                      peer_endpoint=peer, http_address="127.0.0.1:1",
                      workers_endpoint=broker.bound_endpoint, seeds=seeds, preset="wan")


async def _start(mesh: MeshMember) -> None:
    """Start `mesh`, the way the node does: forwarded requests through its dispatcher."""
    dispatcher = mesh.dispatcher

    async def handle(request: Request) -> Response:
        try:
            return await dispatcher.dispatch(request.service, request)
        except PeerBusy:
            return Response(503, outcome=PeerBusy.outcome)

    await mesh.start(handle)


@contextlib.asynccontextmanager
async def node(name: str, seeds: list[str], *, slots: int = 1) -> AsyncIterator[Node]:
    """A broker with one SDK worker of `slots` whose answers wait for `gate`, and a mesh
    member on fresh ports."""
    async with gated_broker(name, SERVICE, slots) as g:
        mesh = _member(name, g.broker, seeds, loopback(), loopback())
        try:
            await _start(mesh)
            yield Node(name, g.broker, mesh, g.gate, g.served)
        finally:
            g.gate.set()
            await mesh.stop()


def _request(target: str) -> Request:
    return Request("GET", target, Headers([("Host", "example.test")]), host="example.test",
                   service=SERVICE, deadline=asyncio.get_running_loop().time() + 60)


def _free_at(a: Node, peer: str) -> int:
    return a.mesh.table.effective_free(peer, SERVICE)


async def _restart(b: Node, seeds: list[str]) -> MeshMember:
    """B killed -9 and back at once on the same ports, as a new process: a new member (on
    the same broker: a worker reconnects to a restarted node by itself)."""
    gossip, peer = b.mesh.endpoints["gossip"], b.mesh.endpoints["peer"]
    life = b.mesh.agent.self_info.incarnation
    await b.mesh.agent.abort()  # not a word: what a crash looks like
    # A restart is a later process when its wall-clock start is past the roll-over room.
    await until(lambda: time.time_ns() // 1_000_000 > life + ROLLOVERS, "a later start")
    end = time.monotonic() + 10
    while True:  # the crashed sockets' ports are released by ZeroMQ's I/O thread
        again = _member(b.name, b.broker, seeds, gossip, peer)
        try:
            await _start(again)
            return again
        except zmq.ZMQError:
            await again.stop()
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)  # a retry period for the bind, not synchronisation


async def test_a_peer_restarted_at_once_releases_the_forward_to_its_earlier_process() -> None:
    async with node("A", []) as a, node("B", [a.mesh.endpoints["peer"]]) as b:
        await until(lambda: _free_at(a, "B") == 1, "A to see B's free slot")
        a.gate.clear()  # A's only slot stays busy: the next GET overflows to B
        held = asyncio.create_task(a.mesh.dispatcher.dispatch(SERVICE, _request("/held")))
        await until(lambda: not a.broker.has_free_slot(SERVICE), "A's slot taken")
        b.gate.clear()  # B's worker holds it: B has the GET when it is killed
        get = asyncio.create_task(a.mesh.dispatcher.dispatch(SERVICE, _request("/g")))
        await until(lambda: b.broker.service_loads()[SERVICE].in_flight == 1, "B serving /g")
        b_life = b.mesh.agent.self_info.incarnation
        b2 = await _restart(b, [a.mesh.endpoints["peer"]])
        crashed = time.monotonic()
        try:
            # A hears B's new process in its beats and gives the GET up at once: B was the
            # only peer tried, so the GET comes home to wait for A's slot.
            await until(lambda: a.broker.service_loads()[SERVICE].queued == 1,
                        "the GET back at A, waiting for its slot", within=15)
            assert a.mesh.dispatcher.lives["B"] == b2.agent.self_info.incarnation != b_life
            a.gate.set()
            answer = await asyncio.wait_for(get, 10)
            assert (answer.status, answer.body, answer.served_by) == (200, b"A", "A")
            assert time.monotonic() - crashed < 15  # not the request's 60 s deadline
            assert (await held).body == b"A"
        finally:
            await b2.stop()


async def test_a_forward_meant_for_an_earlier_process_is_refused_not_run() -> None:
    async with node("B", [], slots=2) as b:
        asker = Transport(TransportConfig(gossip=loopback(), peer=loopback()))
        asker.start()
        life = b.mesh.agent.self_info.incarnation
        try:
            def forward(target: str, to_life: int) -> dict[str, object]:
                return request_meta(ForwardedRequest(
                    service=SERVICE, method="POST", target=target, headers=(), body=b"x",
                    ttl=10.0, life=to_life))

            peer = b.mesh.endpoints["peer"]
            with pytest.raises(PeerRefused, match="busy"):  # the sender may go elsewhere
                await asker.request(peer, "http", forward("/earlier", life - 90_000), (b"x",),
                                    timeout=10)
            assert RESTARTED_REASON.startswith("busy")
            ok = await asker.request(peer, "http", forward("/this", life), (b"x",), timeout=10)
            assert ok.meta["status"] == 200
            ok = await asker.request(peer, "http", forward("/any", 0), (b"x",), timeout=10)
            assert ok.meta["status"] == 200  # an older sender does not say: taken
            assert b.served == ["/this", "/any"]  # the earlier process's POST never ran
        finally:
            asker.close()
