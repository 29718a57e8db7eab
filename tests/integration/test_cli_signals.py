"""What a real `scale0` process says when signalled, or when a mesh socket cannot bind.

A worker that is stopped logs that it drains and that it stopped (it used to
exit 0 silently); a node started without --config says on SIGHUP that there is
no file to reload (it used to log nothing); a --gossip port in use is reported
with the flag's name.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def node_args() -> list[str]:
    return [scale0_bin(), "node", "--cache", "off", "--gossip-preset", "local",
            "--http", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
            "--workers", f"tcp://127.0.0.1:{free_port()}",
            "--gossip", f"tcp://127.0.0.1:{free_port()}", "--peer", f"tcp://127.0.0.1:{free_port()}"]


def test_a_worker_logs_its_drain_and_its_stop(tmp_path: Path, procs: list[Proc]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # no node there: nothing in flight
    worker = Proc([scale0_bin(), "worker", "--node", endpoint, "--service", "www",
                   "--upstream", "http://127.0.0.1:9", "--grace", "1"], tmp_path / "w.log")
    procs.append(worker)
    wait_until(lambda: "connecting to" in worker.output(), timeout=30, what="worker started")
    assert worker.terminate(30) == 0
    log = worker.output()
    assert "SIGTERM: draining (0 requests in flight, grace 1s)" in log
    assert "stopped: every request finished" in log
    assert log.index("draining") < log.index("stopped:")


def test_sighup_without_a_config_file_says_so(tmp_path: Path, procs: list[Proc]) -> None:
    node = Proc(node_args(), tmp_path / "n.log")
    procs.append(node)
    wait_until(lambda: " ready: " in node.output(), timeout=60, what="node ready")
    node.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: nothing to reload (the node was started without --config)"
               in node.output(), timeout=30, what="the SIGHUP line")
    assert node.alive()


def test_a_gossip_port_in_use_names_the_flag() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        args = node_args()
        args[args.index("--gossip") + 1] = f"tcp://127.0.0.1:{port}"
        done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"scale0: cannot bind tcp://127.0.0.1:{port} (--gossip): ")


# Ctrl-C while `scale0` is still importing what it runs (the parser pulls most modules in):
# QA saw a 20-line KeyboardInterrupt traceback. The signal is real, sent by the process to
# itself at the moment a module of the CLI is being imported.
_CTRL_C_WHILE_IMPORTING = """
import os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "node.purge":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
from node.cli import main
sys.exit(main(["node", "--cache", "off"]))
"""


def test_ctrl_c_while_starting_is_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_IMPORTING], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
