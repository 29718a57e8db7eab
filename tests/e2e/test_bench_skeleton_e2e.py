"""bench.skeleton, the benchmarks' measuring stick, still speaks the worker protocol.

`bench proxy`, `bench latency` and `bench dispatch` compare the node with a
featureless node and worker (bench/skeleton.py) that talk to our real worker and
node over the real protocol. If the protocol moves on and the skeleton does not,
those benchmarks would measure 503s. Each featureless side is checked against the
real other side here: a GET through the skeleton node to a real `scale0 worker`,
and through a real `scale0 node` to the skeleton worker, both reaching the origin.
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
PATH = "/bytes/333?nocache=1"


def _get(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", PATH)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


@pytest.fixture()
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


def _origin(procs: list[Proc], tmp: Path) -> int:
    port = free_port()
    procs.append(Proc([sys.executable, "-m", "bench.origin", "--port", str(port)],
                      tmp / "origin.log", cwd=ROOT))
    return port


def test_skeleton_node_answers_through_a_real_worker(procs: list[Proc], tmp_path: Path) -> None:
    origin = _origin(procs, tmp_path)
    http, workers = free_port(), f"tcp://127.0.0.1:{free_port()}"
    procs.append(Proc([sys.executable, "-m", "bench.skeleton", "node", "--http", str(http),
                       "--workers", workers], tmp_path / "skeleton.log", cwd=ROOT))
    procs.append(Proc([scale0_bin(), "worker", "--node", workers, "--service", "default",
                       "--upstream", f"http://127.0.0.1:{origin}"], tmp_path / "worker.log"))
    wait_until(lambda: _get(http)[0] == 200, timeout=30, what="an answer through the skeleton")
    status, body = _get(http)
    assert (status, body) == (200, b"x" * 333)


def test_real_node_answers_through_the_skeleton_worker(procs: list[Proc],
                                                      tmp_path: Path) -> None:
    origin = _origin(procs, tmp_path)
    http, admin = free_port(), free_port()
    workers = f"tcp://127.0.0.1:{free_port()}"
    procs.append(Proc([scale0_bin(), "node", "--http", f"127.0.0.1:{http}", "--admin",
                       f"127.0.0.1:{admin}", "--workers", workers, "--gossip",
                       f"tcp://127.0.0.1:{free_port()}", "--peer",
                       f"tcp://127.0.0.1:{free_port()}", "--cache", "off"],
                      tmp_path / "node.log"))
    procs.append(Proc([sys.executable, "-m", "bench.skeleton", "worker", "--node", workers,
                       "--upstream", str(origin)], tmp_path / "skeleton.log", cwd=ROOT))
    wait_until(lambda: _get(http)[0] == 200, timeout=30, what="an answer via the skeleton worker")
    status, body = _get(http)
    assert (status, body) == (200, b"x" * 333)
