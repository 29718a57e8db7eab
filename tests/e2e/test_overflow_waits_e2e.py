"""A node with no worker of its own waits for room at a peer instead of failing (real processes).

A has no worker for the service; B has one worker with 2 slots and a 0.2 s handler. Eight
requests at once at A: the first two go to B, the rest find no free slot anywhere. They
must wait for B's slots (B's next report, or one of A's forwards finishing) and be served —
A's local queue could never serve them, and once held them until their deadline (503).
Also: after one request went away, the next is not queued as if a share cap were reached.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.procs import wait_until
from testkit.workerlesspair import workerless_pair

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

def _get(node: MeshNode, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=25)
    try:
        conn.request("GET", path, headers={"Host": "app.test"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, str(resp.getheader("X-Scale0-Node", ""))
    finally:
        conn.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[MeshNode, MeshNode]]:
    with workerless_pair(tmp_path, "slowapp:handle", concurrency=2) as (a, b, _):
        wait_until(lambda: _get(a, "/warm")[0] == 200, timeout=30, what="a forwarding to b")
        yield a, b


def test_requests_beyond_every_free_slot_wait_for_a_peer_and_are_served(
        mesh: tuple[MeshNode, MeshNode]) -> None:
    a, _ = mesh
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _get(a, f"/burst/{i}"), range(8)))
    assert [status for status, _ in answers] == [200] * 8, answers
    assert all(node.startswith("b;") for _, node in answers)


def test_one_request_after_another_is_forwarded_every_time(
        mesh: tuple[MeshNode, MeshNode]) -> None:
    a, _ = mesh
    assert [_get(a, f"/one/{i}")[0] for i in range(5)] == [200] * 5
