"""Replication with real processes: three `scale0 node`s in one dc, each with its own worker.

A response stored on A is a HIT on B and C within a second; a PURGE on C removes
it everywhere; 3 nodes x 100 concurrent identical GETs with coalesce = "dc" reach
the origin once; an entry over the inline limit is fetched from its holder on
the first request at another node. The origin is a real HTTP server in this test
process (a thread) that counts what reaches it. (The dropped-purge case is in
tests/integration/test_replication.py, where a fault hook can drop one delivery.)

Runs once node/server.py wires the Replicator; config keys assumed: a TOML
`[replication]` table whose keys are ReplicationConfig's fields.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from testkit.origin import CountingOrigin
from testkit.procs import Proc, free_port, scale0_bin, wait_until

import node.server

WIRED = "Replicator" in Path(node.server.__file__).read_text()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not WIRED, reason="node/server.py does not wire the Replicator yet "
                                         "(issue 6: the integrator adds it)"),
]
BIG = 8192


def _answer(path: str) -> tuple[str, bytes]:
    return "max-age=600", b"x" * BIG if path.startswith("/big") else path.encode()


class Node:
    def __init__(self, tmp: Path, name: str, origin_port: int, seed: str | None) -> None:
        self.name = name
        self.http, self.admin = free_port(), free_port()
        self.peer = f"tcp://127.0.0.1:{free_port()}"
        workers = f"tcp://127.0.0.1:{free_port()}"
        config = tmp / f"{name}.toml"
        config.write_text('[replication]\nscope = "dc"\ncoalesce = "dc"\ninline_limit = 1024\n')
        args = [scale0_bin(), "node", "--config", str(config), "--id", name, "--dc", "east",
                "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{self.admin}",
                "--workers", workers, "--gossip", f"tcp://127.0.0.1:{free_port()}",
                "--peer", self.peer, "--cache", "memory"]
        if seed:
            args += ["--seed", seed]
        self.procs = [Proc(args, tmp / f"{name}.log")]
        wait_until(self.health, timeout=20, what=f"{name}'s admin listener")
        self.procs.append(Proc([scale0_bin(), "worker", "--node", workers, "--service", "default",
                                "--concurrency", "128", "--upstream",
                                f"http://127.0.0.1:{origin_port}"], tmp / f"{name}-worker.log"))
        wait_until(lambda: int(self.health()["workers"].get("default", {}).get("workers", 0)) >= 1,
                   timeout=20, what=f"{name}'s worker")

    def _admin(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        return dict(self._admin("/_scale0/health"))

    def request(self, method: str, path: str, headers: dict[str, str] | None = None
                ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=60)
        try:
            # One Host for every node, as round-robin DNS would give: one cache key.
            conn.request(method, path, headers={"Host": "www.example.test", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.getheader("X-Cache") or "", resp.read()
        finally:
            conn.close()

    def cached(self, path: str) -> bool:
        """Whether this node holds `path` (only-if-cached never reaches the origin)."""
        return self.request("GET", path, {"Cache-Control": "only-if-cached"})[0] == 200

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Node], CountingOrigin]]:
    origin = CountingOrigin(_answer)
    tmp = tmp_path_factory.mktemp("replication-e2e")
    nodes: list[Node] = []
    try:
        for name in ("ra", "rb", "rc"):
            nodes.append(Node(tmp, name, origin.port, nodes[0].peer if nodes else None))
        names = {n.name for n in nodes}

        def alive(n: Node) -> set[str]:
            rows = n._admin("/_scale0/mesh").get("nodes", [])
            return {r.get("id") for r in rows if r.get("state") == "alive"} | {n.name}

        wait_until(lambda: all(alive(n) == names for n in nodes), timeout=30,
                   what="three nodes alive in every view")
        yield nodes, origin
    except BaseException:
        print("\n".join(n.logs() for n in nodes))
        raise
    finally:
        for n in nodes:
            n.stop()
        origin.close()


def test_stored_on_a_is_a_hit_on_b_and_c_then_purge_on_c_removes_it(
        mesh: tuple[list[Node], CountingOrigin]) -> None:
    (a, b, c), origin = mesh
    # Subscriptions settle asynchronously after the views agree: probe until puts flow.
    for i in range(100):
        a.request("GET", f"/probe{i}")
        if b.cached(f"/probe{i}") and c.cached(f"/probe{i}"):
            break
    status, _, body = a.request("GET", "/shared")
    assert status == 200 and body == b"/shared"
    wait_until(lambda: b.cached("/shared") and c.cached("/shared"), timeout=1.0,
               what="the entry stored on A to reach B and C")
    for n in (b, c):
        assert n.request("GET", "/shared")[1] == "HIT"
    assert origin.counts["/shared"] == 1
    assert c.request("PURGE", "/shared")[0] == 200
    wait_until(lambda: not any(n.cached("/shared") for n in (a, b, c)), timeout=10,
               what="the purge on C to reach every node")


def test_300_concurrent_identical_gets_on_3_nodes_reach_the_origin_once(
        mesh: tuple[list[Node], CountingOrigin]) -> None:
    nodes, origin = mesh
    barrier = threading.Barrier(300)

    def one(i: int) -> tuple[int, str, bytes]:
        barrier.wait(timeout=30)
        return nodes[i % 3].request("GET", "/hot")

    with ThreadPoolExecutor(max_workers=300) as pool:
        results = list(pool.map(one, range(300)))
    assert all(s == 200 and body == b"/hot" for s, _, body in results)
    assert origin.counts["/hot"] == 1, origin.counts


def test_large_entry_is_fetched_from_its_holder(mesh: tuple[list[Node], CountingOrigin]) -> None:
    (a, b, _), origin = mesh
    assert a.request("GET", "/big")[2] == b"x" * BIG
    # B's first requests (only-if-cached, so they never reach the origin) fetch the
    # entry from A as soon as A's announcement has arrived.
    wait_until(lambda: b.cached("/big"), timeout=10, what="B to fetch the large entry from A")
    status, x_cache, body = b.request("GET", "/big")
    assert (status, x_cache, body) == (200, "HIT", b"x" * BIG)
    assert origin.counts["/big"] == 1
