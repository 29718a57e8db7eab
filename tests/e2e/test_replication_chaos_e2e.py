"""Replication between three real nodes (memory stores, coalesce = "dc") when things go
wrong: the holder of an announced large entry dies before anyone fetched it, the owner
of a hot key freezes (SIGSTOP) under 300 concurrent requests, and Vary'ed answers
travel as separate variants. (Two nodes storing one key at once: test_cache_chaos_e2e.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit.cachemesh import HOST, CacheNode, VaryOrigin, converge, puts_flow
from testkit.procs import wait_until

from cache.key import cache_key
from mesh.ownership import owner

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TOML = ('[replication]\nscope = "dc"\ncoalesce = "dc"\ninline_limit = 1024\n'
        'fill_timeout = 2.0\nfetch_timeout = 2.0\n')
Mesh = tuple[list[CacheNode], VaryOrigin]


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    origin = VaryOrigin()
    nodes: list[CacheNode] = []
    try:
        for name in ("xa", "xb", "xc"):
            nodes.append(CacheNode(tmp_path, name, origin.port, cache="memory", toml=TOML,
                                   seed=nodes[0].peer if nodes else None))
        converge(nodes)
        for n in nodes:
            puts_flow(n, [m for m in nodes if m is not n], n.name)
        yield nodes, origin
    except BaseException:
        print("\n".join(n.log() for n in nodes))
        raise
    finally:
        for n in nodes:
            n.resume()
            n.stop()
        origin.close()


def test_holder_of_an_announced_entry_dies_before_the_fetch(mesh: Mesh) -> None:
    (a, b, c), _ = mesh
    assert a.request("GET", "/big/1")[0] == 200  # 8 KiB > inline_limit: announced
    wait_until(lambda: c.cached("/big/1"), timeout=5, what="C to fetch the entry from A")
    a.kill9()  # B heard the announcement too, and never fetched
    status, _, body = b.request("GET", "/big/1", timeout=20)
    assert (status, body) == (200, b"b" * 8192)  # a fetch that failed, then C or the origin


def _owned_by(node: CacheNode, ids: list[str], stem: str) -> str:
    for i in range(1000):
        path = f"/{stem}/{i}"
        if owner(cache_key("http", HOST, path), ids) == node.name:
            return path
    raise AssertionError("no path owned by " + node.name)


def test_a_frozen_owner_does_not_hold_the_others_fills(mesh: Mesh) -> None:
    nodes, origin = mesh
    c = nodes[2]
    path = _owned_by(c, [n.name for n in nodes], "hot")
    c.pause()
    results: dict[str, list[tuple[int, bytes]]] = {n.name: [] for n in nodes}
    lock = threading.Lock()

    def one(n: CacheNode) -> None:
        status, _, body = n.request("GET", path, timeout=30)
        with lock:
            results[n.name].append((status, body))

    with ThreadPoolExecutor(max_workers=300) as pool:
        futures = [pool.submit(one, n) for n in nodes for _ in range(100)]
        # A and B fill themselves once the frozen owner's fill times out (or it is
        # declared dead): all 200 answered while C is still stopped.
        wait_until(lambda: len(results["xa"]) == len(results["xb"]) == 100, timeout=20,
                   what="A's and B's requests answered while the owner is frozen")
        c.resume()
        for f in futures:
            f.result(timeout=30)
    want = f"v1 {path}".encode()
    assert all(r == (200, want) for rs in results.values() for r in rs), results
    assert origin.counts[path] <= 3, origin.counts  # one fill per node at most


def test_vary_variants_replicate_and_each_node_serves_the_right_one(mesh: Mesh) -> None:
    nodes, origin = mesh
    a, b = nodes[:2]
    gz, plain = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}
    assert a.request("GET", "/vary/1", gz)[2] == b"gzip /vary/1"
    assert b.request("GET", "/vary/1", plain)[2] == b"id /vary/1"
    for n in nodes:
        wait_until(lambda n=n: n.cached("/vary/1", gz) == b"gzip /vary/1"  # type: ignore[misc]
                   and n.cached("/vary/1", plain) == b"id /vary/1", timeout=5,
                   what=f"both variants on {n.name}")
    assert origin.counts["/vary/1"] == 2


def test_a_poisoned_answer_is_stored_and_replicated_nowhere(mesh: Mesh) -> None:
    nodes, _ = mesh
    evil = {"X-Host": "evil.example"}  # unkeyed, and the origin believes it
    for n in nodes:  # the key's owner and the others: direct, or through an owner's fill
        path = _owned_by(n, [m.name for m in nodes], "reflect")
        for asker in nodes:
            status, _, body = asker.request("GET", path, evil)
            assert status == 200 and body.startswith(b"host=evil.example")
        # A clean request afterwards gets the clean answer, and every node stores that.
        assert nodes[0].request("GET", path)[2] == f"host={HOST} {path}".encode()
        for m in nodes:
            wait_until(lambda m=m, p=path: m.cached(p) == f"host={HOST} {p}".encode(),  # type: ignore[misc]
                       timeout=5, what=f"the clean {path} on {m.name}")
