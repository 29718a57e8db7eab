"""Replication in one process: real GossipAgents on loopback, CacheStages over MemoryStores.

Puts reach peers, purges reach everyone (also through the resend path when the
PUB copy is dropped), tombstones refuse late puts, large entries are fetched
from their holder, dc scope keeps entries home, coalesce=dc fills a key once
for the whole datacenter — also when the owner dies mid-flight — and broken
puts and purges from a peer show in scale0_frames_dropped_total.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.nodeproc import poll

from cache.entry import CacheEntry
from cache.memory import MemoryStore
from cache.replication_codec import Put, dc_topic, encode_put
from gossip.agent import AgentConfig, GossipAgent
from gossip.config import GossipConfig
from gossip.membership import SelfInfo
from gossip.messages import Addresses, Reliable, decode
from gossip.transport import TransportConfig
from mesh.ownership import owner
from node.cacheconfig import CacheConfig
from node.cachestage import CacheStage
from node.dropstats import DropCollector
from node.http import Headers, Request, Response
from node.metrics import Metrics
from node.replication import FILL_KIND, PURGE_KIND, ReplicationConfig, Replicator
from node.services import ServiceMap, service_of_key

LOOPBACK = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*")
HOST = "example.com"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def until(check: Callable[[], object], what: str, within: float = 15.0) -> None:
    """Poll a real condition with a deadline (testkit.nodeproc.poll)."""
    await poll(check, what, within)


class Origin:
    """The rest of the pipeline: counts calls, answers with `answer(request, n)`."""

    def __init__(self, body: bytes = b"hello", cc: str = "max-age=60",
                 hold: Callable[[], Awaitable[None]] | None = None) -> None:
        self.body, self.cc, self.hold = body, cc, hold
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        if self.hold is not None:
            await self.hold()
        body = self.body + request.target.encode()
        return Response(200, Headers([("Cache-Control", self.cc)]), body)


@dataclass
class Node:
    name: str
    agent: GossipAgent
    stage: CacheStage
    rep: Replicator
    store: MemoryStore
    origin: Origin = field(default_factory=Origin)

    async def get(self, target: str = "/x", hops: int = 0, service: str = "www") -> Response:
        request = Request("GET", target, Headers([]), host=HOST, client="127.0.0.1",
                          service=service, hops=hops)
        return await self.rep(request, self.origin)

    async def serve(self, request: Request) -> Response:
        """The node's pipeline, as the fills other nodes send go through it."""
        return await self.rep(request, self.origin)

    async def has(self, target: str = "/x") -> bool:
        return bool(await self.store.get(f"http://{HOST}{target}"))


async def mesh(dcs: tuple[str, ...] = ("east", "east", "east"), origin: Origin | None = None,
               scope_for: Callable[[str], str] | None = None,
               service_of: Callable[[str], str] | None = None,
               cache_config: CacheConfig | None = None, **cfg: Any) -> list[Node]:
    shared = origin or Origin()
    config = ReplicationConfig(**cfg)
    nodes: list[Node] = []
    seeds: tuple[str, ...] = ()
    for i, dc in enumerate(dcs):
        name = f"n{i}"
        config_ = AgentConfig(gossip=GossipConfig.local(), transport=LOOPBACK, seeds=seeds)
        info = SelfInfo(name, dc, Addresses(http="", gossip="", peer=""))
        agent = GossipAgent(config_, info, dict)
        store = MemoryStore()
        stage = CacheStage(store, cache_config or CacheConfig(), node_id=name)
        rep = Replicator(stage, agent, node_id=name, dc=dc, scope_for=scope_for,
                         service_of=service_of, config=config)
        node = Node(name, agent, stage, rep, store, shared)
        await rep.start(node.serve)
        await agent.start()
        seeds = seeds or (agent.self_info.addresses.peer,)
        nodes.append(node)
    names = {n.name for n in nodes}
    await until(lambda: all({v.id for v in n.agent.members() if v.state == "alive"} == names
                            for n in nodes), "every agent to see every other alive")
    # Our SUB connections carry our topics once the follow graph is in place.
    await until(lambda: all(len(n.agent.transport.following) >= len(nodes) - 1 for n in nodes),
                "every agent to follow every other")
    return nodes


async def shutdown(nodes: list[Node]) -> None:
    for n in nodes:
        await n.rep.stop()
        await n.stage.close()
        await n.agent.abort()


async def settled(nodes: list[Node], kind: str = "puts_stored", count: int = 1,
                  service: str = "www") -> None:
    """Subscriptions propagate asynchronously: publish probes until one lands everywhere."""
    for i in range(200):
        await nodes[0].get(f"/probe{i}", service=service)
        try:
            await until(lambda: all(n.rep.counts[kind] >= count for n in nodes[1:]), "", 0.1)
            return
        except AssertionError:
            continue
    raise AssertionError("puts never reached the peers")


def test_put_hits_everywhere_purge_reaches_all_and_late_put_refused() -> None:
    async def main() -> None:
        a, b, c = nodes = await mesh()
        try:
            await settled(nodes)
            first = await a.get("/x")
            assert first.status == 200 and first.outcome == "miss"
            await until(lambda: all(n.rep.counts["puts_stored"] >= 2 for n in (b, c)),
                        "the put on A to be stored on B and C", within=1.0)
            calls = a.origin.calls
            for n in (b, c):
                hit = await n.get("/x")
                assert hit.outcome == "hit", hit.headers
                assert hit.body == first.body
            assert a.origin.calls == calls
            entry = (await b.store.get(f"http://{HOST}/x"))[0]
            assert entry.origin == "n0"  # the replica kept its origin and times

            # A purge on C removes it everywhere.
            await c.stage.purge(f"http://{HOST}/x")
            await until(lambda: all(n.rep.counts["purges_applied"] >= 1 for n in (a, b)),
                        "the purge from C to be applied on A and B")
            await until(lambda: all(not n.stage._tasks and not n.rep._tasks for n in nodes),
                        "purge tasks to finish")
            for n in nodes:
                assert not await n.has("/x"), n.name

            # A late replicated put older than the purge is refused by the tombstone.
            a.stage.on_store(entry)  # type: ignore[misc]  # A re-publishes its old copy
            await until(lambda: all(n.rep.counts["puts_tombstoned"] >= 1 for n in (b, c)),
                        "B and C to refuse the late put")
            assert not await b.has("/x") and not await c.has("/x")
            # A newer response for the purged key is new content: it replicates.
            await a.get("/x")
            await until(lambda: b.rep.counts["puts_stored"] >= 3, "the fresh put to land on B")
            assert await b.has("/x")
        finally:
            await shutdown(nodes)

    run(main())


def test_purge_whose_pub_copy_is_dropped_arrives_by_resend() -> None:
    async def main() -> None:
        a, b, c = nodes = await mesh()
        dropped: list[Reliable] = []
        original = c.agent._on_sub  # fault injection on C's SUB side: purges never arrive by PUB

        def lossy(frames: list[bytes]) -> None:
            msg = decode(frames[0]) if len(frames) == 1 else None
            if isinstance(msg, Reliable) and msg.kind == PURGE_KIND:
                dropped.append(msg)
                return
            original(frames)

        c.agent.transport.on_topic(b"g", lossy)
        try:
            await settled(nodes)
            await a.get("/y")
            await until(lambda: all(n.rep.counts["puts_stored"] >= 2 for n in (b, c)), "puts")
            await a.stage.purge(f"http://{HOST}/y")
            await until(lambda: c.rep.counts["purges_applied"] >= 1,
                        "the purge to reach C through the resend path")
            assert dropped, "the fault hook never saw the purge: the test proves nothing"
            await until(lambda: not c.rep._tasks, "C's purge task")
            assert not await c.has("/y")
            # The resend came over the peer socket, not PUB: C asked for it.
            assert c.agent.counters["out"]["ResendRequest"] >= 1
        finally:
            await shutdown(nodes)

    run(main())


def test_large_entry_is_announced_and_fetched_from_its_holder() -> None:
    async def main() -> None:
        origin = Origin(body=b"x" * 8192)
        a, b, _ = nodes = await mesh(origin=origin, inline_limit=1024)
        try:
            await settled(nodes, "announces_noted")
            before = b.rep.counts["announces_noted"]
            await a.get("/big")
            await until(lambda: b.rep.counts["announces_noted"] > before, "the announcement")
            assert not await b.has("/big")  # announced, not pushed
            calls = origin.calls
            answers = await asyncio.gather(*(b.get("/big") for _ in range(20)))
            assert origin.calls == calls
            assert all(r.status == 200 and r.body == b"x" * 8192 + b"/big" for r in answers)
            assert b.rep.counts["fetched"] == 1 and a.rep.counts["fetches_served"] == 1
            assert answers[0].outcome == "hit"
        finally:
            await shutdown(nodes)

    run(main())


def test_dc_scope_stays_home_and_forged_scope_is_refused() -> None:
    async def main() -> None:
        def scope_for(service: str) -> str:
            return "all" if service == "glob" else "dc"

        a, b, w = nodes = await mesh(("east", "east", "west"), scope_for=scope_for)
        try:
            await settled(nodes, service="glob")  # both kinds of subscription in place
            await a.get("/home", service="www")
            await a.get("/everywhere", service="glob")
            await until_async(lambda: w.has("/everywhere"), "the all-scoped entry in west")
            await until_async(lambda: b.has("/home"), "the dc-scoped entry on B")
            assert not await w.has("/home")
            # West forges a dc-scoped put on east's topic: east knows w is in west.
            refused = b.rep.counts["dropped:put:scope"]
            forged = CacheEntry(f"http://{HOST}/forged", "", 200,
                                (("Cache-Control", "max-age=60"),), b"evil", 1.0, 2.0, "n2")
            w.agent.transport.publish(dc_topic("east"), *encode_put(Put("n2", "www", forged)))
            marker = CacheEntry(f"http://{HOST}/marker", "", 200,
                                (("Cache-Control", "max-age=60"),), b"ok", 1.0, 2.0, "n2")
            # The same link, after it: an all-scoped put B does take.
            w.agent.transport.publish(dc_topic("east"), *encode_put(Put("n2", "glob", marker)))
            await until_async(lambda: b.has("/marker"), "the all-scoped marker on B")
            await until(lambda: not b.rep._tasks, "B's store tasks")
            assert b.rep.counts["dropped:put:scope"] == refused + 1
            assert not await b.has("/forged")
        finally:
            await shutdown(nodes)

    run(main())


async def until_async(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 15.0
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_coalesce_dc_reaches_the_origin_once_for_300_misses() -> None:
    async def main() -> None:
        nodes: list[Node] = []

        async def hold() -> None:  # the origin answers once both other nodes asked the owner
            key = f"http://{HOST}/hot"
            own = next(n for n in nodes if n.name == owner(key, [m.name for m in nodes]))
            await until(lambda: own.rep.counts["fills_served"] >= 2, "both fills at the owner")

        origin = Origin(hold=hold)
        nodes += await mesh(origin=origin, coalesce="dc", scope="none")
        try:
            answers = await asyncio.gather(*(n.get("/hot") for n in nodes for _ in range(100)))
            assert all(r.status == 200 and r.body == b"hello/hot" for r in answers)
            assert origin.calls == 1
            asked = [n.rep.counts["fills_by_owner"] for n in nodes]
            assert sorted(asked) == [0, 1, 1], asked
            # A fill that arrives is never forwarded again, whatever the receiver thinks.
            key = f"http://{HOST}/other"
            own = owner(key, [n.name for n in nodes])
            other = next(n for n in nodes if n.name != own)
            sent = other.agent.transport.stats.outbound[f"req:{FILL_KIND}"]
            reply = await other.get("/other", hops=1)
            assert reply.status == 200 and origin.calls == 2
            assert other.agent.transport.stats.outbound[f"req:{FILL_KIND}"] == sent
        finally:
            await shutdown(nodes)

    run(main())


def test_owner_death_while_waiting_falls_back_to_a_local_fill() -> None:
    async def main() -> None:
        nodes = await mesh(coalesce="dc", scope="none", fill_timeout=30.0)
        names = [n.name for n in nodes]
        target = next(f"/k{i}" for i in range(1000)
                      if owner(f"http://{HOST}/k{i}", names) == "n2")
        asker, dead = nodes[0], nodes[2]
        try:
            await dead.agent.abort()  # a crash: A still believes n2 alive and asks it
            reply = await asker.get(target)
            assert reply.status == 200
            assert asker.rep.counts["fills_local_fallback"] == 1
            assert asker.rep.counts["fills_by_owner"] == 0
        finally:
            await shutdown([n for n in nodes if n is not dead])
            await dead.rep.stop()

    run(main())


def test_a_replica_is_judged_by_our_service_for_its_url_not_the_one_it_names() -> None:
    """Only /shop/ shares Set-Cookie answers here. A put naming "shop" for another URL is
    refused; a put naming "www" for a /shop/ URL is judged as shop's, and taken."""
    async def main() -> None:
        routes = ServiceMap.from_specs([f"{HOST}/shop=shop", "*=www"])
        _, b, c = nodes = await mesh(
            service_of=lambda key: service_of_key(routes, key),
            cache_config=CacheConfig(share_set_cookie=frozenset({"shop"})))
        try:
            await settled(nodes)
            headers = (("Cache-Control", "max-age=60"), ("Set-Cookie", "sid=victim"))
            lie = CacheEntry(f"http://{HOST}/account", "", 200, headers, b"x", 1.0, 2.0, "n2")
            c.agent.transport.publish(dc_topic("east"), *encode_put(Put("n2", "shop", lie)))
            cart = CacheEntry(f"http://{HOST}/shop/cart", "", 200, headers, b"y", 1.0, 2.0, "n2")
            c.agent.transport.publish(dc_topic("east"), *encode_put(Put("n2", "www", cart)))
            await until_async(lambda: b.has("/shop/cart"), "the /shop/ entry on B")
            await until(lambda: not b.rep._tasks, "B's store tasks")
            assert not await b.has("/account")
            assert b.stage.counts["replica_refused"] >= 1
        finally:
            await shutdown(nodes)

    run(main())


def frames_dropped(metrics: Metrics, socket: str, reason: str) -> float:
    """One sample of scale0_frames_dropped_total, from a real scrape."""
    body, _ = metrics.render()
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if (s.name == "scale0_frames_dropped_total"
                    and s.labels == {"socket": socket, "reason": reason}):
                return s.value
    raise AssertionError(f"no scale0_frames_dropped_total{{{socket}, {reason}}} in the scrape")


def test_broken_puts_and_purges_from_a_peer_are_counted_in_frames_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    """Undecodable puts and purges from a member are dropped, exported with
    socket="replication" and the reason, and warned about once, not once per frame."""
    async def main() -> None:
        a, b = nodes = await mesh(("east", "east"))
        metrics = Metrics()
        metrics.registry.register(DropCollector(replication=b.rep.drops))
        try:
            await settled(nodes)
            assert frames_dropped(metrics, "replication", "put:decode") == 0
            with caplog.at_level(logging.WARNING, logger="scale0.replication"):
                for _ in range(3):
                    a.agent.transport.publish(dc_topic("east"), b"\xc1secret-not-msgpack")
                a.agent.publish_reliable(PURGE_KIND, b"\xc1secret-not-a-purge")
                marker = CacheEntry(f"http://{HOST}/marker", "", 200,
                                    (("Cache-Control", "max-age=60"),), b"ok", 1.0, 2.0, "n0")
                # The same link, after them: when the marker is stored, they were handled.
                a.agent.transport.publish(dc_topic("east"), *encode_put(Put("n0", "www", marker)))
                await until_async(lambda: b.has("/marker"), "the marker on B")
                await until(lambda: frames_dropped(metrics, "replication", "purge:decode") == 1,
                            "the broken purge counted on B")
            assert frames_dropped(metrics, "replication", "put:decode") == 3
            assert frames_dropped(metrics, "replication", "put:scope") == 0
            warned = [r.getMessage() for r in caplog.records if r.name == "scale0.replication"]
            assert sum("(put:decode)" in m for m in warned) == 1, warned
            assert sum("(purge:decode)" in m for m in warned) == 1, warned
            assert not any("secret" in m for m in warned), warned
        finally:
            await shutdown(nodes)

    run(main())
