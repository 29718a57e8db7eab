"""`--cpu-affinity`: each node process, every one of its threads (ZeroMQ's I/O threads
included), keeps to its CPU, and so does a worker pinned beside it; requests still flow.
A CPU the node may not use is refused at start with exit 2, by the node and the worker."""

from __future__ import annotations

import http.client
import os
import subprocess
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, free_port_pair, scale0_bin, wait_until

pytestmark = pytest.mark.e2e


def _threads_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Every thread of `pid` and the CPUs it may run on."""
    return {int(tid): frozenset(os.sched_getaffinity(int(tid)))
            for tid in os.listdir(f"/proc/{pid}/task")}


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "aff.test"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def test_each_process_and_its_worker_keep_to_their_cpu(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    admin, workers, gossip, peer = (free_port_pair() for _ in range(4))
    http_port = free_port()
    node = Proc([scale0_bin(), "node", "--processes", "2", "--cpu-affinity", "auto",
                 "--id", "aff", "--cache", "off", "--http", f"127.0.0.1:{http_port}",
                 "--admin", f"127.0.0.1:{admin}", "--workers", f"tcp://127.0.0.1:{workers}",
                 "--gossip", f"tcp://127.0.0.1:{gossip}", "--peer", f"tcp://127.0.0.1:{peer}",
                 "--gossip-preset", "local"], tmp_path / "node.log")
    worker = Proc([scale0_bin(), "worker", "--node", f"tcp://127.0.0.1:{workers}",
                   "--service", "default", "--app", "node.demo:demo_hello",
                   "--cpu-affinity", str(allowed[0])], tmp_path / "worker.log")
    try:
        wait_until(lambda: _status(http_port) == 200 or not node.alive(), timeout=30,
                   what="an answer from the pinned worker")
        assert node.alive(), node.output()
        (child,) = _children(node.pid)
        for pid, cpu in ((node.pid, allowed[0]), (child, allowed[1 % len(allowed)]),
                         (worker.pid, allowed[0])):
            threads = _threads_cpus(pid)
            assert len(threads) > 1  # ZeroMQ's I/O thread at least, besides the main one
            assert set(threads.values()) == {frozenset({cpu})}, (pid, threads)
        assert node.terminate() == 0, node.output()
    finally:
        worker.stop()
        node.stop()


def test_a_cpu_not_available_is_refused_at_start(tmp_path: Path) -> None:
    beyond = "4095"  # the kernel's ceiling: no test machine lets a process use it
    node = subprocess.run([scale0_bin(), "node", "--cpu-affinity", beyond, "--http",
                           f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                          check=False, timeout=60, cwd=tmp_path)
    assert node.returncode == 2, node.stderr
    assert "--cpu-affinity must be off, auto or a list of CPUs" in node.stderr
    assert "CPU 4095 is not available to this process" in node.stderr
    worker = subprocess.run([scale0_bin(), "worker", "--node", "tcp://127.0.0.1:1",
                             "--service", "s", "--app", "node.demo:demo_hello",
                             "--cpu-affinity", beyond], capture_output=True, text=True,
                            check=False, timeout=60, cwd=tmp_path)
    assert worker.returncode == 2, worker.stderr
    assert "--cpu-affinity 4095: CPU 4095 is not available" in worker.stderr
