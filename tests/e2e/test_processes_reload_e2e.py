"""`scale0 node --processes 2`: one SIGHUP to the parent PID reloads both processes.

The config mounts a static directory; the test points the mount at another
directory whose file says something else, sends SIGHUP to the parent only, and
asks the shared HTTP port (the kernel spreads new connections over both
processes) until each process — told apart by its X-Scale0-Node stamp, `ID.0`
or `ID.1` — answers with the new file. Then SIGTERM to the parent stops both.
"""

from __future__ import annotations

import http.client
import os
import signal
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e


def _config(tmp: Path, public: str) -> str:
    return f'id = "pr"\nstatic = ["/s={tmp / public}"]\ncache = "off"\n'


def _port_pair() -> int:
    """A free port p whose p + 1 is free too (process 1 binds each configured port + 1)."""
    for _ in range(50):
        port = free_port()
        if free_port(preferred=port + 1) == port + 1:
            return port
    raise AssertionError("no two adjacent free ports")


def _children(pid: int) -> list[int]:
    """The PIDs `pid` forked (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _ask(port: int) -> tuple[str, bytes]:
    """One request on a new connection: (which process answered, the page)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/s/page.txt", headers={"Host": "pr.test"})
        resp = conn.getresponse()
        return (resp.getheader("X-Scale0-Node") or "").split(";")[0], resp.read()
    finally:
        conn.close()


def _until_each_says(port: int, page: bytes, what: str) -> None:
    """Ask until both processes have answered with `page` (each one's latest answer)."""
    latest: dict[str, bytes] = {}

    def both() -> bool:
        who, body = _ask(port)
        latest[who] = body
        return latest.get("pr.0") == page and latest.get("pr.1") == page

    try:
        wait_until(both, timeout=30, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the latest answers: {latest}") from None


def test_sighup_to_the_parent_reloads_every_process(tmp_path: Path) -> None:
    for name, text in (("v1", "old page\n"), ("v2", "new page\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "page.txt").write_text(text)
    config = tmp_path / "node.toml"
    config.write_text(_config(tmp_path, "v1"))
    base = [_port_pair() for _ in range(4)]  # admin, workers, gossip, peer
    http_port = free_port()
    node = Proc([scale0_bin(), "node", "--processes", "2", "--config", str(config),
                 "--http", f"127.0.0.1:{http_port}", "--admin", f"127.0.0.1:{base[0]}",
                 "--workers", f"tcp://127.0.0.1:{base[1]}",
                 "--gossip", f"tcp://127.0.0.1:{base[2]}",
                 "--peer", f"tcp://127.0.0.1:{base[3]}", "--gossip-preset", "local"],
                tmp_path / "node.log")
    children: list[int] = []
    try:
        wait_until(lambda: _ask(http_port) or not node.alive(), timeout=30, what="the node")
        assert node.alive(), node.output()
        children = _children(node.pid)
        assert len(children) == 1, children
        _until_each_says(http_port, b"old page\n", "both processes serving v1")
        config.write_text(_config(tmp_path, "v2"))
        node.signal(signal.SIGHUP)  # the parent only, as systemd's ExecReload does
        _until_each_says(http_port, b"new page\n", "both processes serving v2")
        assert all(_alive(pid) for pid in children), node.output()
        assert node.terminate() == 0, node.output()  # SIGTERM still reaches the child
        assert not any(_alive(pid) for pid in children)
    finally:
        node.stop()
        for pid in children:  # never leave the child behind if the parent died first
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
