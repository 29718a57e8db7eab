"""A cache fill or fetch waiting on a peer is given up at once when that peer restarts
under the same id (a later process: `MemberView.life`), and the request is filled here,
well before `fill_timeout` / `fetch_timeout` (real GossipAgents on loopback ZeroMQ,
CacheStages over MemoryStores, nodes in one process).

QA (rolling restart, coalesce = "dc"): a node asked the key's owner to fill, the owner
was restarted on the same ports within a second, and the GET waited for the fill the
earlier process had promised until `fill_timeout`; a GET for a large entry announced by
a peer waited for its fetch from a restarted holder the same way. The new process
answers the transport's probes, so nothing but its life tells it from the earlier one.
The `wan` preset keeps the failure detector out of it: the new process is back long
before a silence could be doubted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq
from testkit.nodeproc import poll

from cache.entry import CacheEntry
from cache.memory import MemoryStore
from gossip.agent import AgentConfig, GossipAgent
from gossip.config import GossipConfig
from gossip.membership import MemberView, SelfInfo
from gossip.messages import Addresses
from gossip.reliable import ROLLOVERS
from gossip.transport import PeerRefused, Transport, TransportConfig
from mesh.forward import ForwardedRequest, decode_response, request_meta
from mesh.ownership import owner
from node.cacheconfig import CacheConfig
from node.cachestage import CacheStage
from node.http import Headers, Request, Response
from node.overflow import RESTARTED_REASON
from node.replication import FILL_KIND, ReplicationConfig, Replicator

HOST = "example.com"
LOOPBACK = "tcp://127.0.0.1:*"
LONG = 30.0  # fill_timeout / fetch_timeout: a release must come well before it
SOON = 15.0  # what "at once" must beat (the wan preset's beats are 2 s apart)
BIG = b"x" * 8192  # above inline_limit: announced, fetched on demand


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


async def until(check: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Poll a real condition with a deadline (testkit.nodeproc.poll)."""
    await poll(check, what, within)


class Origin:
    """The rest of the pipeline: counts calls; held while `gate` is clear."""

    def __init__(self, body: bytes = b"hello") -> None:
        self.body, self.calls = body, 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        await self.gate.wait()
        return Response(200, Headers([("Cache-Control", "max-age=60")]),
                        self.body + request.target.encode())


class HeldStore(MemoryStore):
    """A MemoryStore whose reads wait while `gate` is clear (the holder busy at its disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = 0

    async def get(self, key: str) -> list[CacheEntry]:
        if not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
        return await super().get(key)


@dataclass
class Node:
    name: str
    agent: GossipAgent
    stage: CacheStage
    rep: Replicator
    store: MemoryStore
    origin: Origin
    views: list[MemberView] = field(default_factory=list)  # every change this node heard

    async def get(self, target: str) -> Response:
        return await self.serve(Request("GET", target, Headers([]), host=HOST,
                                        client="127.0.0.1", service="www"))

    async def serve(self, request: Request) -> Response:
        """The node's pipeline (fills other nodes send go through it too)."""
        return await self.rep(request, self.origin)

    @property
    def peer(self) -> str:
        return self.agent.transport.peer_endpoint

    def view_of(self, peer: str) -> MemberView | None:
        return next((v for v in self.agent.members() if v.id == peer), None)

    def life_of(self, peer: str) -> int:
        """`peer`'s process as this node's membership names it."""
        view = self.view_of(peer)
        assert view is not None, peer
        return view.life

    async def close(self) -> None:
        self.origin.gate.set()
        if isinstance(self.store, HeldStore):
            self.store.gate.set()
        await self.rep.stop()
        await self.stage.close()
        await self.agent.abort()


async def start_node(name: str, gossip: GossipConfig, config: ReplicationConfig, *,
                     seeds: tuple[str, ...] = (), endpoints: tuple[str, str] = (LOOPBACK,
                                                                                LOOPBACK),
                     origin: Origin | None = None, held_store: bool = False) -> Node:
    transport = TransportConfig(gossip=endpoints[0], peer=endpoints[1])
    agent = GossipAgent(AgentConfig(gossip=gossip, transport=transport, seeds=seeds),
                        SelfInfo(name, "east", Addresses(http="", gossip="", peer="")), dict)
    store = HeldStore() if held_store else MemoryStore()
    stage = CacheStage(store, CacheConfig(), node_id=name)
    rep = Replicator(stage, agent, node_id=name, dc="east", config=config)
    node = Node(name, agent, stage, rep, store, origin or Origin())
    agent.on_change(node.views.append)
    await rep.start(node.serve)
    try:
        await agent.start()
    except zmq.ZMQError:
        await node.close()
        raise
    return node


async def restart(old: Node, gossip: GossipConfig, config: ReplicationConfig,
                  seeds: tuple[str, ...]) -> Node:
    """`old` crashed (not a word) and back at once on the same ports as a new process."""
    endpoints = (old.agent.transport.gossip_endpoint, old.agent.transport.peer_endpoint)
    life = old.agent.self_info.incarnation
    await old.agent.abort()
    # A restart is a later process when its wall-clock start is past the roll-over room.
    await until(lambda: time.time_ns() // 1_000_000 > life + ROLLOVERS, "a later start")
    end = time.monotonic() + 10
    while True:  # the crashed sockets' ports are released by ZeroMQ's I/O thread
        try:
            return await start_node(old.name, gossip, config, seeds=seeds, endpoints=endpoints)
        except zmq.ZMQError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)  # a retry period for the bind, not synchronisation


@contextlib.asynccontextmanager
async def pair(gossip: GossipConfig, config: ReplicationConfig,
               held_store: bool = False) -> AsyncIterator[list[Node]]:
    """Nodes A and B, each alive in the other's view with its process (life) known."""
    nodes: list[Node] = []
    try:
        nodes.append(await start_node("A", gossip, config, held_store=held_store))
        nodes.append(await start_node("B", gossip, config, seeds=(nodes[0].peer,)))
        a, b = nodes

        def known(n: Node, other: Node) -> bool:
            v = n.view_of(other.name)
            return v is not None and v.state == "alive" and v.life != 0

        await until(lambda: known(a, b) and known(b, a), "A and B alive to each other")
        await until(lambda: a.agent.transport.following and b.agent.transport.following,
                    "A and B following each other")
        yield nodes
    finally:
        for n in nodes:
            await n.close()


def owned_by(name: str, names: list[str]) -> str:
    return next(f"/k{i}" for i in range(1000) if owner(f"http://{HOST}/k{i}", names) == name)


def test_a_fill_waiting_on_an_owner_that_restarts_is_filled_here_at_once() -> None:
    """B asks owner A to fill; A is killed holding it and back at once as a new process.
    B hears A's new life, gives the fill up and fills itself — never a dead A in between."""

    async def main() -> None:
        gossip = GossipConfig.wan()
        config = ReplicationConfig(coalesce="dc", scope="none", fill_timeout=LONG)
        async with pair(gossip, config) as nodes:
            a, b = nodes
            target = owned_by("A", ["A", "B"])
            a.origin.gate.clear()  # the owner's origin holds the fill it took
            started = time.monotonic()
            get = asyncio.create_task(b.get(target))
            await until(lambda: a.origin.calls == 1, "the fill running at A")
            old_life = b.life_of("A")
            a2 = await restart(a, gossip, config, seeds=(b.peer,))
            nodes.append(a2)
            answer = await asyncio.wait_for(get, SOON)
            took = time.monotonic() - started
            assert (answer.status, answer.body) == (200, b"hello" + target.encode())
            assert b.origin.calls == 1  # filled here
            assert b.rep.counts["fills_local_fallback"] == 1
            assert b.rep.counts["fills_by_owner"] == 0
            assert took < SOON < LONG, took
            # The restart released it, not a death: B never saw A other than alive.
            seen = [v for v in b.views if v.id == "A"]
            assert {v.state for v in seen} <= {"alive", "suspect"}, seen
            assert b.life_of("A") not in (0, old_life)
            assert a2.origin.calls == 0  # the new process never ran the earlier one's fill

    run(main())


def test_a_fill_meant_for_an_earlier_process_is_refused_not_run() -> None:
    """A fill names the owner's process it is meant for; a restarted owner refuses one
    meant for its earlier process (the asker gave up on it and filled itself)."""

    async def main() -> None:
        config = ReplicationConfig(coalesce="dc", scope="none", fill_timeout=LONG)
        node = await start_node("A", GossipConfig.local(), config)
        asker = Transport(TransportConfig(gossip=LOOPBACK, peer=LOOPBACK))
        asker.start()
        try:
            life = node.agent.self_info.incarnation

            def fill(target: str, to_life: int) -> dict[str, object]:
                return request_meta(ForwardedRequest(
                    service="www", method="GET", target=target, headers=(), body=b"",
                    host=HOST, ttl=10.0, hops=1, life=to_life))

            with pytest.raises(PeerRefused, match="busy"):
                await asker.request(node.peer, FILL_KIND, fill("/earlier", life - 90_000),
                                    timeout=10)
            assert RESTARTED_REASON.startswith("busy")
            for target, to_life in (("/this", life), ("/any", 0)):
                reply = await asker.request(node.peer, FILL_KIND, fill(target, to_life),
                                            timeout=10)
                assert decode_response(reply.meta, reply.body).status == 200
            assert node.origin.calls == 2  # "/earlier" never reached the origin
        finally:
            asker.close()
            await node.close()

    run(main())


def test_a_fetch_from_a_holder_that_restarts_is_given_up_at_once() -> None:
    """A holds a large entry and announces it; B's GET fetches it from A, whose store holds
    the read; A is killed and back at once as a new process. B hears A's new life, gives
    the fetch up and fills the GET itself, well before fetch_timeout."""

    async def main() -> None:
        gossip = GossipConfig.wan()
        config = ReplicationConfig(inline_limit=1024, fetch_timeout=LONG)
        async with pair(gossip, config, held_store=True) as nodes:
            a, b = nodes
            a.origin = Origin(body=BIG)
            for i in range(200):  # subscriptions settle after the views agree: probe
                await a.get(f"/probe{i}")
                with contextlib.suppress(AssertionError):
                    await until(lambda: b.rep.counts["announces_noted"] > 0, "", 0.1)
                    break
            noted = b.rep.counts["announces_noted"]
            await a.get("/big")
            await until(lambda: b.rep.counts["announces_noted"] > noted, "B noting /big")
            assert isinstance(a.store, HeldStore)
            store = a.store
            store.gate.clear()  # A's reads hold: B's fetch waits at A
            started = time.monotonic()
            get = asyncio.create_task(b.get("/big"))
            await until(lambda: store.held == 1, "B's fetch reading at A")
            old_life = b.life_of("A")
            nodes.append(await restart(a, gossip, config, seeds=(b.peer,)))
            answer = await asyncio.wait_for(get, SOON)
            took = time.monotonic() - started
            assert (answer.status, answer.body) == (200, b"hello/big")  # B's origin: here
            assert b.origin.calls == 1
            assert b.rep.counts["fetch_failed"] == 1 and b.rep.counts["fetched"] == 0
            assert took < SOON < LONG, took
            assert {v.state for v in b.views if v.id == "A"} <= {"alive", "suspect"}
            assert b.life_of("A") not in (0, old_life)

    run(main())
