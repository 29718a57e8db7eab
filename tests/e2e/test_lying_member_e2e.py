"""A listed member that lies about another: "B is dead", told to A, refuted by B (real nodes).

A has no worker and forwards to B, which has one. The liar (testkit/hostilemember.py,
raw pyzmq) joins A as a node does and publishes `Dead(B)` at B's current
incarnation. A believes it (that is what relayed news is for) and relays it; B
hears it about itself and refutes with a higher incarnation, which wins at A: A
lists B alive again, at a higher incarnation than the lie, and routes to B again.
docs/SECURITY.md says what a listed member can and cannot do.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.hostilemember import HostileMember
from testkit.meshnodes import MeshNode
from testkit.procs import Proc, scale0_bin, wait_until

from gossip.messages import Dead, Left, Push, encode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APPS = Path(__file__).parent / "apps"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}


def _get(node: MeshNode) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=10)
    try:
        conn.request("GET", "/lie-check", headers={"Host": "app.test"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[MeshNode, MeshNode]]:
    # No cache: with one, A would send a miss to the owner of its key among the alive
    # members, which may be the liar, whose ROUTER answers only while the test polls it.
    a = MeshNode(tmp_path, "a", preset="local", extra=["--cache", "off"])
    a.start()
    wait_until(a.health, timeout=30, what="node a")
    b = MeshNode(tmp_path, "b", seed=a.peer, preset="local", extra=["--cache", "off"])
    b.start()
    worker = Proc([scale0_bin(), "worker", "--node", b.workers, "--service", "default",
                   "--concurrency", "4", "--app", "pyapp:handle"], tmp_path / "worker.log", env=ENV)
    try:
        yield a, b
    except BaseException:
        print(a.log_tail(), b.log_tail(), worker.output()[-2000:])
        raise
    finally:
        worker.stop()
        b.stop()
        a.stop()


@pytest.mark.parametrize("lie", ["dead", "left"])
def test_a_lie_that_b_is_gone_is_refuted_and_a_routes_to_b_again(
        mesh: tuple[MeshNode, MeshNode], lie: str) -> None:
    a, b = mesh
    wait_until(lambda: _get(a) == 200, timeout=30, what="a forwarding to b's worker")
    liar = HostileMember("mallory")
    try:
        liar.join(a.peer)
        liar.wait_followed()
        state, inc = a.views()["b"]
        assert state == "alive"
        news = Dead("b", inc, liar.id) if lie == "dead" else Left("b", inc)
        liar.send([b"g", encode(Push(liar.id, liar.next_seq(), (news,)))])
        told = time.monotonic()
        # B refutes: a higher incarnation than the lie's, alive, at A and at B itself.
        wait_until(lambda: a.views()["b"][1] > inc and a.views()["b"][0] == "alive",
                   timeout=10, what="b's refutation at a", interval=0.01)
        refuted = time.monotonic() - told
        assert b.views()["b"] == a.views()["b"]
        # Every request, not every other one: A (no worker of its own) once queued the
        # request after one that went away (share sent away 1.0 read as "at the cap").
        wait_until(lambda: _get(a) == 200, timeout=10, what="a routing to b again")
        assert [_get(a) for _ in range(5)] == [200] * 5
        print(f"\n'{lie}' refuted at a in {refuted * 1000:.0f} ms; "
              f"routing again after {(time.monotonic() - told) * 1000:.0f} ms")
    finally:
        liar.close()
