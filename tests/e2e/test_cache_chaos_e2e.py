"""The cache and its replication broken the way production breaks them, with real processes.

Real `scale0 node`s (files and memory stores), real workers, a counting origin in this
process: purges while a node is frozen (SIGSTOP) or dead (kill -9, restarted on the same
cache folder), and what the operator checks afterwards — no node serves a purged entry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit.cachemesh import HOST, CacheNode, VaryOrigin, converge, puts_flow
from testkit.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

TOML = '[replication]\nscope = "dc"\n'


@pytest.fixture
def origin() -> Iterator[VaryOrigin]:
    o = VaryOrigin()
    yield o
    o.close()


@pytest.fixture
def pair(tmp_path: Path, origin: VaryOrigin) -> Iterator[tuple[CacheNode, CacheNode]]:
    nodes: list[CacheNode] = []
    try:
        a = CacheNode(tmp_path, "pa", origin.port, cache=f"files:{tmp_path / 'a-cache'}",
                      toml=TOML)
        nodes.append(a)
        b = CacheNode(tmp_path, "pb", origin.port, cache=f"files:{tmp_path / 'b-cache'}",
                      toml=TOML, seed=a.peer)
        nodes.append(b)
        converge(nodes)
        puts_flow(a, [b], "ab")
        puts_flow(b, [a], "ba")
        yield a, b
    except BaseException:
        print("\n".join(n.log() for n in nodes))
        raise
    finally:
        for n in nodes:
            n.stop()


def test_purge_while_a_node_is_frozen_reaches_it_when_it_thaws(
        pair: tuple[CacheNode, CacheNode]) -> None:
    a, b = pair
    for path in ("/frozen/one", "/frozen/two", "/kept"):
        a.request("GET", path)
        wait_until(lambda p=path: b.cached(p), timeout=5, what=f"{path} replicated to B")  # type: ignore[misc]
    b.pause()
    try:
        a.purge(f"http://{HOST}/frozen/one")
        a.purge(f"http://{HOST}/frozen/*")
        assert a.cached("/frozen/one") is None and a.cached("/frozen/two") is None
    finally:
        b.resume()
    wait_until(lambda: b.cached("/frozen/one") is None and b.cached("/frozen/two") is None,
               timeout=10, what="the purges sent while B was frozen to reach B")
    assert b.cached("/kept") == b"v1 /kept"


def test_purge_while_a_node_is_dead_is_applied_to_its_files_when_it_restarts(
        pair: tuple[CacheNode, CacheNode]) -> None:
    a, b = pair
    for path in ("/dead/one", "/dead/two", "/dead/kept", "/dead-prefix/x"):
        a.request("GET", path)
        wait_until(lambda p=path: b.cached(p), timeout=5, what=f"{path} replicated to B")  # type: ignore[misc]
    b.kill9()
    a.purge(f"http://{HOST}/dead/one")
    a.purge(f"http://{HOST}/dead-prefix/*")
    b.start()  # the same ports, the same cache folder
    converge([a, b])
    # The entries on B's disk predate the purges: B must not serve them, at once after
    # it rejoined, and never later; what was not purged is still served from B's files.
    assert b.cached("/dead/one") is None
    assert b.cached("/dead-prefix/x") is None
    wait_until(lambda: b.cached("/dead/two") == b"v1 /dead/two", timeout=5,
               what="B to serve its unpurged files again once a peer told it the purges")
    status, headers, body = b.request("GET", "/dead/one")
    assert status == 200 and body == b"v1 /dead/one" and headers.get("x-cache") != "HIT"


def test_two_nodes_storing_one_key_at_once_agree_on_the_newest(
        pair: tuple[CacheNode, CacheNode], origin: VaryOrigin) -> None:
    a, b = pair
    nodes = [a, b]
    barrier = threading.Barrier(2)

    def fill(n: CacheNode) -> bytes:
        barrier.wait(timeout=10)
        # coalesce = "node": each node asks the origin itself
        return n.request("GET", "/race/1", {"Cache-Control": "no-cache"})[2]

    with ThreadPoolExecutor(max_workers=2) as pool:
        bodies = set(pool.map(fill, [a, b]))
    assert origin.counts["/race/1"] == 2 and len(bodies) == 2, (origin.counts, bodies)
    # Each stored its own and sent it to the other: the later response wins on both.

    def agreed() -> bool:
        held = {n.cached("/race/1") for n in nodes}
        return len(held) == 1 and None not in held

    wait_until(agreed, timeout=5, what="every node holding the same (newest) version")
