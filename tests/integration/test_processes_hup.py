"""SIGHUP across `--processes`: node.processes `HupRelay` with real signals and processes.

The relay forwards SIGHUP to each child PID (a child that has exited is skipped
without error) and, until a process's event loop takes the signal over, turns
the default action (terminate) into a note that a reload is owed; a Node given
such a relay reloads once it has started. The whole path with two real node
processes is tests/e2e/test_processes_reload_e2e.py.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.nodetoml import loopback_listeners
from testkit.procs import wait_until

from node.config import NodeConfig, load_config
from node.processes import HupRelay
from node.server import Node

pytestmark = pytest.mark.timeout(60)

# Writes a file on each SIGHUP; says it is ready once the handler is in place.
CHILD = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGHUP, lambda *_: out.write_text(out.read_text() + "hup\\n"))
out.write_text("")
time.sleep(60)
"""


@pytest.fixture
def restore_sighup() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _no_such_pid() -> int:
    """A PID above the kernel's maximum: kill() says ESRCH, and it is nobody's."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_forward_reaches_each_child_and_skips_one_that_exited(tmp_path: Path) -> None:
    out = tmp_path / "child.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_until(out.exists, timeout=20, what="the child's SIGHUP handler")
        # Exited, not yet reaped (as a node's children stay until the end): a zombie.
        wait_until(lambda: _state(exited.pid) == "Z", timeout=20, what="the exited child")
        relay = HupRelay()
        relay.children = [exited.pid, _no_such_pid(), child.pid]
        relay.forward()  # no error for the exited one, nor for a PID that is gone
        wait_until(lambda: out.read_text() == "hup\n", timeout=20, what="the forwarded SIGHUP")
        relay.forward()
        wait_until(lambda: out.read_text() == "hup\nhup\n", timeout=20, what="a second one")
    finally:
        child.kill()
        child.wait(20)
        exited.wait(20)


def test_an_early_sighup_is_remembered_not_fatal(restore_sighup: None) -> None:
    relay = HupRelay()
    relay.catch_early()
    assert not relay.take_pending()
    signal.raise_signal(signal.SIGHUP)  # the default action would end this test run
    wait_until(relay.take_pending, timeout=10, what="the noted SIGHUP")
    assert not relay.take_pending()  # taken once


def _config(tmp: Path) -> NodeConfig:
    path = tmp / "node.toml"
    path.write_text(f'cache = "off"\naccess_log = false\n{loopback_listeners("early")}')
    return load_config(str(path))


async def test_a_node_reloads_once_started_for_a_sighup_that_came_before(
        tmp_path: Path, restore_sighup: None) -> None:
    config = _config(tmp_path)
    reads: list[NodeConfig] = []

    def read_again() -> NodeConfig:
        reads.append(config)
        return config

    relay = HupRelay()
    relay.catch_early()
    signal.raise_signal(signal.SIGHUP)  # before the node's loop handler exists
    node = Node(config, reload=read_again, relay=relay)
    running = asyncio.get_running_loop().create_task(node.run())
    try:
        for _ in range(500):  # up to ~10 s: started, and the owed reload done
            if reads or running.done():
                break
            await asyncio.sleep(0.02)
        assert len(reads) == 1 and node.state is not None and node.state.ready
    finally:
        node.stop()
        assert await asyncio.wait_for(running, 30) == 0
    assert not relay.take_pending()
