"""A worker pointed at a node's HTTP port (or any socket that is not the node's workers
socket) says which flag to check, not only that the node is silent.

QA, day one: `scale0 worker --node tcp://127.0.0.1:8080 ...` (the node's HTTP port, the
one clients use) logged `node tcp://127.0.0.1:8080 silent; reconnecting` every few
seconds and nothing else. Once a node has answered, the same line (a node that went
away) carries no hint: the endpoint was right.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.procs import Proc, scale0_bin, wait_until

pytestmark = pytest.mark.e2e

HINT = "no Scale0 node has answered there yet: --node must be the node's workers socket"


def _worker(tmp: Path, endpoint: str, name: str) -> Proc:
    return Proc([scale0_bin(), "worker", "--node", endpoint, "--service", "default",
                 "--upstream", "http://127.0.0.1:9"], tmp / f"{name}.log")


def test_a_worker_at_the_http_port_names_the_workers_socket(tmp_path: Path) -> None:
    # Two nodes, so that the two silences (each some heartbeats long) run side by side:
    # the misdirected worker's at `node`'s HTTP port, `node` up all along, and the right
    # worker's once its own node, `home`, went away.
    node = MeshNode(tmp_path, "w", extra=["--cache", "off"])
    home = MeshNode(tmp_path, "h", extra=["--cache", "off"])
    node.start()
    home.start()
    wrong = right = None
    try:
        wait_until(node.health, timeout=30, what="the node")
        wait_until(home.health, timeout=30, what="the right worker's node")
        wrong = _worker(tmp_path, f"tcp://127.0.0.1:{node.http}", "wrong")
        right = _worker(tmp_path, home.workers, "right")
        wait_until(lambda: home.workers_of() == 1, timeout=30, what="the right worker")
        home.stop()  # the right worker's node goes away: silent, but no hint
        wait_until(lambda: "silent; reconnecting" in wrong.output(), timeout=30,
                   what="the misdirected worker to give up on the endpoint")
        assert node.alive(), node.log_tail()
        line = next(x for x in wrong.output().splitlines() if "silent; reconnecting" in x)
        assert HINT in line, line
        wait_until(lambda: "silent; reconnecting" in right.output(), timeout=30,
                   what="the worker to notice its node went away")
        assert HINT not in right.output(), right.output()
    finally:
        for proc in (wrong, right):
            if proc is not None:
                proc.stop()
        home.stop()
        node.stop()
