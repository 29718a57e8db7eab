"""`--busy-poll on`: one SCHED_IDLE spinner per CPU, each on its own CPU, started by the
node (process 0 of `--processes`) or a worker; none outlives its parent, however that
ends (SIGTERM, SIGKILL), and a second spinner for a CPU stands by rather than spin too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, free_port_pair, scale0_bin, wait_until

from node.busypoll import SPINNER, Spinners
from node.spinner import claim

pytestmark = pytest.mark.e2e


def _spinners(pid: int) -> list[int]:
    """The spinner processes among `pid`'s children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spinner.py" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _held(cpu: int) -> bool:
    """Whether a spinner holds `cpu` (a lock taken here to ask is given back at once)."""
    lock = claim(cpu)
    if lock is None:
        return True
    lock.close()
    return False


def _node(tmp_path: Path, *extra: str) -> Proc:
    admin, workers, gossip, peer = (free_port_pair() for _ in range(4))
    return Proc([scale0_bin(), "node", "--busy-poll", "on", "--id", "spin", "--cache", "off",
                 "--http", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin}",
                 "--workers", f"tcp://127.0.0.1:{workers}", "--gossip",
                 f"tcp://127.0.0.1:{gossip}", "--peer", f"tcp://127.0.0.1:{peer}",
                 "--gossip-preset", "local", *extra], tmp_path / "node.log")


def _check_spinners(parent: Proc) -> list[int]:
    """Wait for `parent`'s spinners: one per CPU it may use, idle class, each on its CPU."""
    allowed = sorted(os.sched_getaffinity(0))

    def started() -> list[int] | None:
        if not parent.alive():
            raise AssertionError(parent.output())
        found = _spinners(parent.pid)
        return found if len(found) == len(allowed) else None

    spinners = wait_until(started, timeout=30, what="a spinner per CPU")
    placed: list[int] = []
    for pid in spinners:
        # Each sets its class and CPU first thing: wait for that, then hold it to it.
        wait_until(lambda pid=pid: os.sched_getscheduler(pid) == os.SCHED_IDLE, timeout=10,
                   what=f"spinner {pid} at SCHED_IDLE")
        cpus = os.sched_getaffinity(pid)
        assert len(cpus) == 1, cpus
        placed += cpus
    assert sorted(placed) == allowed
    return spinners


def test_process_0_spins_a_cpu_each_and_its_spinners_die_with_it_even_killed(
        tmp_path: Path) -> None:
    node = _node(tmp_path, "--processes", "2")
    try:
        spinners = _check_spinners(node)
        children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
        for child in set(map(int, children)) - set(spinners):  # the forked node process
            assert _spinners(child) == []  # one spinner a CPU: process 0's, not its own
        assert "busy-poll: a spinner on each of CPUs" in node.output()
        node.kill9()  # no clean-up runs: the spinners see their pipe end
        for pid in spinners:
            # SCHED_IDLE: on a machine busy with other tests it may wait for the CPU
            wait_until(lambda pid=pid: _gone(pid), timeout=30, what=f"spinner {pid} to exit")
    finally:
        node.stop()


def test_a_stopped_node_or_worker_stops_its_spinners(tmp_path: Path) -> None:
    node = _node(tmp_path)
    try:
        spinners = _check_spinners(node)
        assert node.terminate() == 0, node.output()
        assert all(_gone(pid) for pid in spinners)  # stopped before the node exited
    finally:
        node.stop()
    worker = Proc([scale0_bin(), "worker", "--node", f"tcp://127.0.0.1:{free_port()}",
                   "--service", "default", "--app", "node.demo:demo_hello", "--busy-poll", "on"],
                  tmp_path / "worker.log")
    try:
        spinners = _check_spinners(worker)
        assert worker.terminate() == 0, worker.output()
        assert all(_gone(pid) for pid in spinners)
    finally:
        worker.stop()


def test_a_second_spinner_for_a_cpu_stands_by_and_still_stops_when_told() -> None:
    cpu = min(os.sched_getaffinity(0))
    first, second = Spinners([cpu]), Spinners([cpu])
    try:
        first.start()
        (holder,) = first.procs
        wait_until(lambda: _held(cpu), timeout=10, what="the first spinner to hold its CPU")
        second.start()
        (standby,) = second.procs
        wait_until(lambda: os.sched_getscheduler(standby.pid) == os.SCHED_IDLE, timeout=10,
                   what="the second spinner to start")
        assert standby.poll() is None  # waiting for the CPU, not exited
        assert standby.stdin is not None
        standby.stdin.close()  # its pipe's end: it exits from standing by, by itself
        # (a SCHED_IDLE process on a machine busy with other tests may wait for the CPU)
        assert standby.wait(30) == 0
        assert holder.poll() is None
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(30) == 0
    finally:
        second.stop()
        first.stop()
    lock = claim(cpu)  # given back with the process
    assert lock is not None
    lock.close()


@pytest.mark.parametrize(("arg", "code", "message"), [
    ("4095", 1, "scale0 busy-poll spinner on CPU 4095: "),  # no test machine may use it
    ("one", 2, "usage: spinner.py CPU"),
])
def test_a_spinner_that_cannot_spin_says_why(arg: str, code: int, message: str) -> None:
    done = subprocess.run([sys.executable, "-I", "-S", str(SPINNER), arg], input=b"",
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == code
    assert done.stderr.decode().startswith(message), done.stderr
