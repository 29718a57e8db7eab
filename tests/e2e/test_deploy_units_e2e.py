"""deploy/systemd units: a node and a worker run under the units' own SystemCallFilter=.

systemd is not PID 1 on these machines, so the filter is loaded by hand
(testkit.unitfilter: the unit's allow list through libseccomp, SIGSYS for anything
else, as systemd does). libzmq's I/O threads call sched_setscheduler (in @resources)
when they start: a unit that denies it killed every node and worker at start.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import unitfilter
from testkit.meshnodes import MeshNode, worker
from testkit.origin import CountingOrigin
from testkit.procs import wait_until

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"

pytestmark = [
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze"),
    pytest.mark.skipif(unitfilter.libseccomp() is None, reason="no libseccomp"),
]


def prefix(tmp: Path, unit: str) -> list[str]:
    allow = tmp / f"{unit}.allow"
    allow.write_text("\n".join(sorted(unitfilter.allowed(SYSTEMD / unit))))
    return [sys.executable, unitfilter.__file__, str(allow)]


@pytest.fixture
def origin() -> Iterator[CountingOrigin]:
    o = CountingOrigin(lambda path: ("max-age=60", b"from the origin\n"), delay=0.0)
    yield o
    o.close()


def test_node_and_worker_run_under_the_units_syscall_filter(
    tmp_path: Path, origin: CountingOrigin
) -> None:
    node = MeshNode(tmp_path, "east-1", dc="east", extra=["--cache", f"files:{tmp_path}/cache"],
                    prefix=prefix(tmp_path, "scale0-node.service"))
    node.start()
    assert node.proc is not None
    w = worker(tmp_path, node, f"http://127.0.0.1:{origin.port}", service="default",
               prefix=prefix(tmp_path, "scale0-worker@.service"))
    try:
        wait_until(lambda: not node.alive() or node.admin_json("/_scale0/ready")["ready"],
                   timeout=30, what="node ready")
        assert node.alive(), f"node died: {node.proc.popen.returncode}\n{node.log_tail()}"
        wait_until(lambda: not w.alive() or node.workers_of("default") == 1, timeout=30,
                   what="worker connected")
        assert w.alive(), f"worker died: {w.popen.returncode}\n{w.output()[-2000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/deploy", timeout=10) as resp:
            assert (resp.status, resp.read()) == (200, b"from the origin\n")
        assert node.proc.terminate() == 0, node.log_tail()
        assert w.terminate() == 0, w.output()[-2000:]
    finally:
        w.stop()
        node.stop()
