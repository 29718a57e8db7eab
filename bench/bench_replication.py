"""Cache replication: delay from a store on A to the replica on B, bytes per entry, origin savings.

Three nodes in one process (real GossipAgents on loopback, CacheStages over
MemoryStores, Replicators). Figures:
- replication delay p50/p99: from A's local store to B's store of the replica;
- bytes published per replicated entry (topic + metadata + body) against the body;
- origin requests for a Zipf workload spread round-robin over the 3 nodes, with
  scope `none` (each node fills its own cache) against `dc` (and `dc` + coalesce=dc).
Nothing here asserts a speed; the machine is shared and noisy.

    python -m bench.bench_replication [--n 500] [--requests 3000] [--keys 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from cache.entry import CacheEntry
from cache.memory import MemoryStore
from gossip.agent import AgentConfig, GossipAgent
from gossip.config import GossipConfig
from gossip.membership import SelfInfo
from gossip.messages import Addresses
from gossip.transport import TransportConfig
from node.cacheconfig import CacheConfig
from node.cachestage import CacheStage
from node.http import Headers, Request, Response
from node.replication import ReplicationConfig, Replicator

LOOPBACK = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*")
HOST = "bench.example"
HEADERS = [("Cache-Control", "max-age=600"), ("Content-Type", "text/html; charset=utf-8"),
           ("ETag", '"0123456789abcdef"'), ("Last-Modified", "Fri, 27 Nov 2026 10:00:00 GMT")]


class TimedStore(MemoryStore):
    """A MemoryStore that notes when each key was first stored (for the delay)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored_at: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def put(self, entry: CacheEntry) -> bool:
        ok = await super().put(entry)
        if ok:
            self.stored_at.setdefault(entry.key, time.perf_counter())
            self.arrived.set()
        return ok


class Origin:
    def __init__(self, body: int) -> None:
        self.body = b"x" * body
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        return Response(200, Headers(HEADERS), self.body)


async def mesh(config: ReplicationConfig, origin: Origin
               ) -> tuple[list[Replicator], list[TimedStore], list[GossipAgent]]:
    reps, stores, agents = [], [], []
    seeds: tuple[str, ...] = ()
    for i in range(3):
        agent = GossipAgent(AgentConfig(gossip=GossipConfig.local(), transport=LOOPBACK,
                                        seeds=seeds),
                            SelfInfo(f"n{i}", "east", Addresses(http="", gossip="", peer="")),
                            dict)
        store = TimedStore()
        stage = CacheStage(store, CacheConfig(), node_id=f"n{i}")
        rep = Replicator(stage, agent, node_id=f"n{i}", dc="east", config=config)

        async def serve(r: Request, rep: Replicator = rep) -> Response:
            return await rep(r, origin)

        await rep.start(serve)
        await agent.start()
        seeds = seeds or (agent.self_info.addresses.peer,)
        reps.append(rep)
        stores.append(store)
        agents.append(agent)
    await _until(lambda: all(len(a.transport.following) >= 2
                             and sum(v.state == "alive" for v in a.members()) == 3
                             for a in agents), 20.0)
    # Subscriptions propagate asynchronously: probe until a put lands on both peers.
    for i in range(500):
        await reps[0](_get(f"/probe{i}"), origin)
        if all(s.stored_at for s in stores[1:]):
            break
        await asyncio.sleep(0.01)  # pacing the probes, not synchronisation
    return reps, stores, agents


async def _until(check: Callable[[], bool], within: float) -> None:
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("the mesh did not form")
        await asyncio.sleep(0.02)


def _get(target: str) -> Request:
    return Request("GET", target, Headers([]), host=HOST, client="127.0.0.1", service="www")


async def _close(reps: list[Replicator], agents: list[GossipAgent]) -> None:
    for rep, agent in zip(reps, agents, strict=True):
        await rep.stop()
        await rep.cache.close()
        await agent.abort()


async def delay_and_bytes(n: int, body: int) -> dict[str, Any]:
    origin = Origin(body)
    reps, stores, agents = await mesh(ReplicationConfig(scope="dc"), origin)
    try:
        sent: dict[str, float] = {}
        hook = reps[0].cache.on_store
        assert hook is not None

        def timed(entry: CacheEntry) -> None:
            sent[entry.key] = time.perf_counter()
            hook(entry)

        reps[0].cache.on_store = timed
        bytes_before, puts_before = reps[0].bytes_out, reps[0].counts["puts_sent"]
        delays: list[float] = []
        lost = 0
        for i in range(n):
            key = f"http://{HOST}/d{i}"
            stores[1].arrived.clear()
            await reps[0](_get(f"/d{i}"), origin)
            try:
                while key not in stores[1].stored_at:
                    await asyncio.wait_for(stores[1].arrived.wait(), 1.0)
                    stores[1].arrived.clear()
            except TimeoutError:
                lost += 1
                continue
            delays.append((stores[1].stored_at[key] - sent[key]) * 1000)
        puts = reps[0].counts["puts_sent"] - puts_before
        wire = (reps[0].bytes_out - bytes_before) / max(puts, 1)
        q = statistics.quantiles(delays, n=100) if len(delays) >= 2 else [0.0] * 99
        return {"n": n, "lost": lost, "p50_ms": statistics.median(delays), "p99_ms": q[98],
                "bytes_per_entry": wire, "body": body}
    finally:
        await _close(reps, agents)


async def zipf(config: ReplicationConfig, requests: int, keys: int, seed: int) -> int:
    origin = Origin(1024)
    reps, _stores, agents = await mesh(config, origin)
    try:
        base = origin.calls
        rng = random.Random(seed)
        weights = [1 / (k + 1) ** 1.1 for k in range(keys)]
        draws = rng.choices(range(keys), weights, k=requests)
        for i, k in enumerate(draws):
            await reps[i % 3](_get(f"/z{k}"), origin)
            await asyncio.sleep(0.001)  # arrivals paced at ~1 per ms: a workload, not a sync
        return origin.calls - base
    finally:
        await _close(reps, agents)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--body", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    d = asyncio.run(delay_and_bytes(args.n, args.body))
    print(f"replication delay A->B over {d['n']} puts ({d['lost']} lost): "
          f"p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms")
    print(f"bytes published per replicated entry: {d['bytes_per_entry']:.0f} "
          f"for a {d['body']}-byte body ({d['bytes_per_entry'] / d['body']:.2f}x the body)")
    rows = [("scope none", ReplicationConfig(scope="none")),
            ("scope dc", ReplicationConfig(scope="dc")),
            ("scope dc + coalesce dc", ReplicationConfig(scope="dc", coalesce="dc"))]
    results = {name: asyncio.run(zipf(cfg, args.requests, args.keys, 7)) for name, cfg in rows}
    none = results["scope none"]
    print(f"Zipf(1.1) over {args.keys} keys, {args.requests} requests round-robin on 3 nodes:")
    for name, calls in results.items():
        print(f"  {name:24s} origin requests {calls:5d}  ({calls / none:.2f}x of scope none, "
              f"{none - calls} saved)")


if __name__ == "__main__":
    main()
