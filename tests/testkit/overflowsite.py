"""Issue 5's scenario with real processes: a small east, a roomy west, and a load client.

    origin (100 ms) <- east-1: 1 worker x concurrency 4            (dc east)
                    <- west-1, west-2: 4 workers x concurrency 4 each (dc west)

West joins through east-1's peer socket. `run_load` is a closed-loop asyncio
client (Tornado's HTTP client): a fixed number of requests in flight, a bounded
count and a bounded time; each result records its status, its latency and its
`Via` header, which names every node the response passed (the serving node's
pipeline adds itself, then east's), so "served in west" is readable from it.
Used by tests/e2e/test_overflow_e2e.py and bench/bench_overflow.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from testkit.meshnodes import MeshNode, unique_port, worker
from testkit.procs import Proc, wait_until

ROOT = Path(__file__).resolve().parents[2]
EAST_SLOTS = 4


class OverflowSite:
    """Origin, east-1 with one worker, and (unless `west=False`) west-1/west-2 with four each."""

    def __init__(self, tmp: Path, *, west: bool = True, preset: str | None = None,
                 delay_ms: int = 100, east_extra: Sequence[str] = ()) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.origin_port = unique_port()
        self.path = f"/bytes/512?delay={delay_ms}&nocache=1"
        self.procs.append(Proc([sys.executable, str(ROOT / "bench" / "origin.py"),
                                "--port", str(self.origin_port)], tmp / "origin.log"))
        upstream = f"http://127.0.0.1:{self.origin_port}"
        common = ["--cache", "off"]
        self.east = MeshNode(tmp, "east-1", dc="east", preset=preset,
                             extra=[*common, *east_extra])
        self.west = [MeshNode(tmp, f"west-{i}", dc="west", seed=self.east.peer, preset=preset,
                              extra=common) for i in (1, 2)] if west else []
        self.nodes = [self.east, *self.west]
        for n in self.nodes:
            n.start()
        wait_until(lambda: all(n.health() for n in self.nodes), timeout=60, interval=0.1,
                   what="every node's admin listener")
        self.procs.append(worker(tmp, self.east, upstream, concurrency=EAST_SLOTS))
        for n in self.west:
            for i in range(4):
                self.procs.append(worker(tmp, n, upstream, concurrency=4, tag=f"-{i}"))
        for n, count in ((self.east, 1), *((w, 4) for w in self.west)):
            wait_until(lambda n=n, count=count: n.workers_of() >= count, timeout=60,  # type: ignore[misc]
                       interval=0.1, what=f"{count} worker(s) on {n.name}")
        if self.west:
            wait_until(self.east_sees_west_room, timeout=60, interval=0.1,
                       what="east to see both west nodes alive with 16 slots each")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.east.http}{self.path}"

    def east_sees_west_room(self) -> bool:
        rows = {r["id"]: r for r in self.east.mesh()["nodes"]}
        return all(rows.get(w.name, {}).get("state") == "alive"
                   and rows[w.name]["services"].get("default", {}).get("slots") == 16
                   for w in self.west)

    def logs(self) -> str:
        parts = [n.log_tail(2000) for n in self.nodes]
        parts += [f"--- {p.log_path.name}\n{p.output()[-1000:]}" for p in self.procs]
        return "\n".join(parts)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        for p in reversed(self.procs):
            p.stop()


@dataclass(frozen=True)
class Result:
    started: float
    ended: float
    status: int  # 599: no HTTP answer (connection error, client timeout)
    via: str
    node: str = ""  # X-Scale0-Node: "<id>; dc=<dc>" of the node that produced the answer
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000

    def passed(self, node_prefix: str) -> bool:
        """Whether a node whose id starts with `node_prefix` is named in `Via`."""
        return any(hop.strip().removeprefix("1.1 ").startswith(node_prefix)
                   for hop in self.via.split(","))

    def served_in(self, prefix: str) -> bool:
        """Whether the serving node (X-Scale0-Node, else Via) starts with `prefix`."""
        return self.node.startswith(prefix) if self.node else self.passed(prefix)


@dataclass
class Summary:
    results: list[Result]
    samples: list[dict[str, Any]] = field(default_factory=list)  # east's own load over time

    @property
    def ok(self) -> int:
        return sum(r.status == 200 for r in self.results)

    def share(self, pred: Callable[[Result], bool]) -> float:
        return sum(map(pred, self.results)) / max(1, len(self.results))

    @property
    def success(self) -> float:
        return self.ok / max(1, len(self.results))

    @property
    def remote(self) -> float:
        return self.share(lambda r: r.status == 200 and r.served_in("west"))

    def percentile(self, q: float) -> float:
        lat = sorted(r.latency_ms for r in self.results)
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def row(self, name: str) -> str:
        return (f"{name:<28} {len(self.results):6d} {100 * self.success:8.2f} "
                f"{100 * self.remote:8.1f} {self.percentile(0.5):8.1f} "
                f"{self.percentile(0.99):8.1f}  {self.statuses()}")

    @staticmethod
    def header() -> str:
        return (f"{'scenario':<28} {'reqs':>6} {'ok %':>8} {'remote %':>8} {'p50 ms':>8} "
                f"{'p99 ms':>8}  statuses")

    def saturated_share(self, slots: int = EAST_SLOTS, trim: float = 0.1) -> float:
        """Share of east's load samples showing every local slot busy, in the steady
        part of the run (the first and last `trim` of results excluded: ramp up, drain)."""
        ends = sorted(r.ended for r in self.results)
        if not ends:
            return 0.0
        lo, hi = ends[int(trim * len(ends))], ends[int((1 - trim) * (len(ends) - 1))]
        hits = [int(s.get("in_flight", 0)) >= slots for s in self.samples if lo <= s["t"] <= hi]
        return sum(hits) / max(1, len(hits))


async def run_load(url: str, *, concurrency: int, count: int, max_s: float,
                   rate: float | None = None,
                   hooks: dict[int, Callable[[], None]] | None = None,
                   sample_url: str = "", request_timeout: float = 60.0) -> Summary:
    """`count` GETs (fewer if `max_s` runs out), at most `concurrency` in flight.

    Closed loop by default: `concurrency` clients, each sending its next request
    when the last one is answered. With `rate` (req/s), open loop: a request is
    started every 1/rate seconds whatever the answers, so fast refusals do not
    raise the offered load (a closed loop against a shedding node would).
    `hooks[n]` runs once n results are in (e.g. a kill -9 mid-run). With
    `sample_url` (an admin /_scale0/health), east's own load is sampled meanwhile."""
    client = AsyncHTTPClient(force_instance=True, max_clients=concurrency + 2)
    results: list[Result] = []
    samples: list[dict[str, Any]] = []
    issued = 0
    stop_at = time.monotonic() + max_s
    pending_hooks = dict(hooks or {})

    async def fetch_one() -> None:
        started = time.monotonic()
        try:
            resp = await client.fetch(HTTPRequest(url, request_timeout=request_timeout),
                                      raise_error=False)
            status, error = resp.code, ""
            via, node = resp.headers.get("Via", ""), resp.headers.get("X-Scale0-Node", "")
            if resp.error is not None and resp.code == 599:
                error = repr(resp.error)
        except Exception as exc:  # a client-side failure is a failed request
            status, via, node, error = 599, "", "", repr(exc)
        results.append(Result(started, time.monotonic(), status, via, node, error))
        for n in [n for n in pending_hooks if len(results) >= n]:
            pending_hooks.pop(n)()

    async def one() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < stop_at:
            issued += 1
            await fetch_one()

    async def paced(per_s: float) -> None:
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        first = time.monotonic()

        async def bounded() -> None:
            try:
                await fetch_one()
            finally:
                slots.release()

        for i in range(count):
            if (wait := first + i / per_s - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # the arrival schedule itself
            if time.monotonic() >= stop_at:
                break
            await slots.acquire()  # beyond `concurrency` in flight, arrivals wait
            task = asyncio.create_task(bounded())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def sample() -> None:
        sampler = AsyncHTTPClient(force_instance=True, max_clients=1)
        try:
            while True:
                resp = await sampler.fetch(sample_url, raise_error=False, request_timeout=5)
                if resp.code == 200:
                    load = json.loads(resp.body)["workers"].get("default", {})
                    samples.append({"t": time.monotonic(), **load})
                await asyncio.sleep(0.05)  # the sampling period, not a synchronisation
        finally:
            sampler.close()

    sampler_task = asyncio.create_task(sample()) if sample_url else None
    try:
        if rate is None:
            await asyncio.gather(*(one() for _ in range(concurrency)))
        else:
            await paced(rate)
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            await asyncio.gather(sampler_task, return_exceptions=True)
        client.close()
    return Summary(results, samples)
