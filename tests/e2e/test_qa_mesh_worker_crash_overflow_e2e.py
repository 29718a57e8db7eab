"""A node whose only worker crashed sends the next requests to a peer at once (real processes).

A and B each have one worker (`slowapp`, 2 slots); A's is killed with -9. The heartbeats
notice a silent worker only after `heartbeat_liveness` beats, so until then A still counts
its dead worker's free slots: the next GET was sent to it, the send failed (the worker's
connection is gone), and the request went back to A's queue — which no worker serves any
more. It stayed there until its deadline: a 503 after 30 s while B had room all along.
Now it is routed again at once, and B answers it.

The same at a peer: A has no worker; B and C have one each (B 8 slots, C 2, so A, which
prefers the freer peer, forwards to B first). B's worker is killed with -9. Until B's
heartbeats notice, B still counts the dead worker's slots, in its own routing and in what
it advertises, so A keeps forwarding to B. B sent
the forwarded GET to the dead worker, the send failed, and the request went back to B's
queue, which no worker serves: A's client waited for the whole deadline (a 503 after
30 s) while C had room. Now B answers "busy" at once and A forwards it to C.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.procs import Proc, scale0_bin, wait_until
from testkit.workerlesspair import APPS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _get(node: MeshNode, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        served = str(resp.getheader("X-Scale0-Node", "")).split(";")[0]
        return resp.status, served, time.monotonic() - started
    finally:
        conn.close()


def _worker(tmp: Path, node: MeshNode, slots: int = 2) -> Proc:
    path = os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))
    return Proc([scale0_bin(), "worker", "--node", node.workers, "--service", "default",
                 "--concurrency", str(slots), "--app", "slowapp:handle"],
                tmp / f"worker-{node.name}.log", env={"PYTHONPATH": path})


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[MeshNode, MeshNode, Proc]]:
    a = MeshNode(tmp_path, "a", preset="local", extra=["--cache", "off"])
    a.start()
    wait_until(a.health, timeout=30, what="node a")
    b = MeshNode(tmp_path, "b", seed=a.peer, preset="local", extra=["--cache", "off"])
    b.start()
    procs = [_worker(tmp_path, a), _worker(tmp_path, b)]
    try:
        wait_until(lambda: a.workers_of() == 1 and b.workers_of() == 1, timeout=30,
                   what="one worker at each node")
        wait_until(lambda: a.views().get("b", ("", 0))[0] == "alive"
                   and b.views().get("a", ("", 0))[0] == "alive", timeout=30,
                   what="a and b alive to each other")
        yield a, b, procs[0]
    except BaseException:
        print(a.log_tail(), b.log_tail())
        raise
    finally:
        for proc in procs:
            proc.stop()
        b.stop()
        a.stop()


def test_requests_right_after_the_only_worker_crashed_are_served_by_the_peer(
        pair: tuple[MeshNode, MeshNode, Proc]) -> None:
    a, _, worker_a = pair
    assert _get(a, "/warm")[:2] == (200, "a")
    worker_a.kill9()
    # Inside the heartbeats' window (A still lists its worker) and after it.
    answers = [_get(a, f"/after/{i}") for i in range(5)]
    assert [(status, node) for status, node, _ in answers] == [(200, "b")] * 5, answers
    assert max(took for _, _, took in answers) < 3.0, answers


def _slots_at(node: MeshNode) -> dict[str, int]:
    """The `default` slots each alive peer advertises, as `node`'s load table shows them."""
    return {row["id"]: int(row["services"]["default"]["slots"])
            for row in node.mesh()["nodes"]
            if row["state"] == "alive" and "default" in row.get("services", {})}


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[MeshNode, MeshNode, MeshNode, Proc]]:
    a = MeshNode(tmp_path, "a", preset="local", extra=["--cache", "off"])
    a.start()
    wait_until(a.health, timeout=30, what="node a")
    b = MeshNode(tmp_path, "b", seed=a.peer, preset="local", extra=["--cache", "off"])
    c = MeshNode(tmp_path, "c", seed=a.peer, preset="local", extra=["--cache", "off"])
    b.start()
    c.start()
    workers = [_worker(tmp_path, b, 8), _worker(tmp_path, c, 2)]
    nodes = (a, b, c)
    try:
        wait_until(lambda: b.workers_of() == 1 and c.workers_of() == 1, timeout=30,
                   what="one worker at b and at c")
        wait_until(lambda: _slots_at(a) == {"b": 8, "c": 2}, timeout=30,
                   what="a seeing b's and c's slots")
        wait_until(lambda: _get(a, "/warm")[:2] == (200, "b"), timeout=30,
                   what="a forwarding to b")
        yield a, b, c, workers[0]
    except BaseException:
        print(*(n.log_tail() for n in nodes))
        raise
    finally:
        for proc in workers:
            proc.stop()
        for n in reversed(nodes):
            n.stop()


def test_a_forward_to_a_peer_whose_worker_just_died_is_served_elsewhere(
        trio: tuple[MeshNode, MeshNode, MeshNode, Proc]) -> None:
    a, _, _, worker_b = trio
    worker_b.kill9()
    answers = [_get(a, f"/after/{i}") for i in range(8)]
    assert [(status, node) for status, node, _ in answers] == [(200, "c")] * 8, answers
    assert max(took for _, _, took in answers) < 3.0, answers
