"""/_scale0/metrics of two real nodes in this process (loopback sockets, a real SDK worker):
a request A cannot serve is forwarded to B, and each node's admin listener counts it —
out at A, in at B — with the gossip both exchanged. Also: A, bound to every interface,
advertises its http address on the host its gossip and peer sockets advertise."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.httpclient
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import free_port

from gossip.agent import primary_ip
from node.config import from_mapping, load_config
from node.http import Headers, Request, Response
from node.server import Node
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(90)


async def until(cond: object, what: str, within: float = 20.0) -> None:
    """Poll a real condition with a deadline."""
    assert callable(cond)
    end = asyncio.get_running_loop().time() + within
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def config_text(name: str, http: str, seeds: list[str]) -> str:
    tcp = "tcp://127.0.0.1"
    seed = ", ".join(f'"{s}"' for s in seeds)
    return (f'id = "{name}"\nhttp = "{http}"\nadmin = "127.0.0.1:{free_port()}"\n'
            f'gossip = "{tcp}:{free_port()}"\npeer = "{tcp}:{free_port()}"\n'
            f'gossip_preset = "local"\ncache = "off"\naccess_log = false\nseeds = [{seed}]\n'
            f'[workers]\nendpoint = "{tcp}:{free_port()}"\n')


@contextlib.asynccontextmanager
async def node(tmp: Path, name: str, http: str, seeds: list[str]) -> AsyncIterator[Node]:
    path = tmp / f"{name}.toml"
    path.write_text(config_text(name, http, seeds))
    n = Node(load_config(str(path)))
    await n.start()
    try:
        yield n
    finally:
        await n.shutdown()


Labels = tuple[tuple[str, str], ...]


async def scrape(n: Node) -> dict[tuple[str, Labels], float]:
    """The admin listener's exposition over HTTP: (name, sorted labels) → value."""
    client = tornado.httpclient.AsyncHTTPClient()
    resp = await client.fetch(f"http://127.0.0.1:{n.admin_port}/_scale0/metrics")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.body.decode()) for s in fam.samples}


def total(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


async def served_by_b(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain")]), b"from b")


async def test_a_forwarded_request_and_gossip_are_counted_on_both_nodes(
        tmp_path: Path) -> None:
    http_port = free_port()
    try:
        async with node(tmp_path, "mm-a", f":{http_port}", []) as a:
            assert a.mesh is not None
            a_peer = a.mesh.endpoints["peer"]
            async with node(tmp_path, "mm-b", f"127.0.0.1:{free_port()}", [a_peer]) as b:
                assert b.broker is not None and b.mesh is not None
                worker = Worker(b.broker.bound_endpoint, ["default"], 2, served_by_b,
                                heartbeat_interval=0.2)
                task = asyncio.create_task(worker.run())
                try:
                    await check(a, b, http_port)
                finally:
                    await worker.stop(0.5)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        from node import logsetup

        logsetup.configure(from_mapping({"access_log": False}), "mm")  # as other tests expect


async def check(a: Node, b: Node, http_port: int) -> None:
    assert a.mesh is not None and b.mesh is not None
    own = next(r for r in a.mesh.mesh_json()["nodes"] if r["id"] == "mm-a")
    assert own["addresses"]["http"] == f"{primary_ip()}:{http_port}"  # not localhost

    def b_has_room() -> bool:
        rows = {r["id"]: r for r in a.mesh.mesh_json()["nodes"]}  # type: ignore[union-attr]
        row = rows.get("mm-b", {})
        return bool(row.get("state") == "alive"
                    and row.get("services", {}).get("default", {}).get("slots", 0) >= 1)

    await until(b_has_room, "A to see B alive with a free slot")
    before_a, before_b = await scrape(a), await scrape(b)
    assert ("scale0_forwarded_total", (("direction", "out"),)) in before_a  # wired, at 0
    assert total(before_a, "scale0_forwarded_total", direction="out") == 0
    client = tornado.httpclient.AsyncHTTPClient()
    resp = await client.fetch(f"http://127.0.0.1:{http_port}/hello", raise_error=False)
    assert resp.code == 200 and resp.body == b"from b", (resp.code, resp.body[:200])
    assert resp.headers.get("X-Scale0-Node", "").startswith("mm-b")
    after_a, after_b = await scrape(a), await scrape(b)
    assert total(after_a, "scale0_forwarded_total", direction="out") >= 1
    assert total(after_b, "scale0_forwarded_total", direction="in") >= 1
    assert total(after_b, "scale0_forwarded_total", direction="out") == 0
    for samples in (after_a, after_b):
        assert total(samples, "scale0_gossip_messages_total", direction="in") > 0
        assert total(samples, "scale0_gossip_messages_total", direction="out") > 0
        assert total(samples, "scale0_gossip_messages_total", direction="out", kind="Beat") > 0
    # Counters only go up between scrapes.
    for before, after in ((before_a, after_a), (before_b, after_b)):
        for key, value in before.items():
            if key[0].endswith("_total") and key in after:
                assert after[key] >= value, key
