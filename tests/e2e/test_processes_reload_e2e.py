"""`scale0 node --processes 2`: one SIGHUP to the parent PID reloads both processes;
ports a few apart serve from both; a child that cannot bind stops the whole node.

The config mounts a static directory; the test points the mount at another
directory whose file says something else, sends SIGHUP to the parent only, and
asks the shared HTTP port (the kernel spreads new connections over both
processes) until each process — told apart by its X-Scale0-Node stamp, `ID.0`
or `ID.1` — answers with the new file. Then SIGTERM to the parent stops both.

Process i binds each configured port + 100·i (node.processes), so gossip P and
peer P + 1 — process 1's gossip port was process 0's peer port under the old
+i — must give two serving processes; and a port of process 1's taken by
something else must end the node with exit status 1 and a log line naming
process 1, never leave process 0 serving alone.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
from pathlib import Path

import pytest
from testkit.procs import STRIDE, Proc, free_port, free_port_pair, scale0_bin, wait_until

pytestmark = pytest.mark.e2e


def _config(tmp: Path, public: str) -> str:
    return f'id = "pr"\nstatic = ["/s={tmp / public}"]\ncache = "off"\n'


def _node(tmp: Path, config: Path, http_port: int, ports: list[int]) -> Proc:
    """`--processes 2` with `ports` the configured admin, workers, gossip and peer ports."""
    admin, workers, gossip, peer = ports
    return Proc([scale0_bin(), "node", "--processes", "2", "--config", str(config),
                 "--http", f"127.0.0.1:{http_port}", "--admin", f"127.0.0.1:{admin}",
                 "--workers", f"tcp://127.0.0.1:{workers}",
                 "--gossip", f"tcp://127.0.0.1:{gossip}",
                 "--peer", f"tcp://127.0.0.1:{peer}", "--gossip-preset", "local"],
                tmp / "node.log")


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
    base = [free_port_pair() for _ in range(4)]  # admin, workers, gossip, peer
    http_port = free_port()
    node = _node(tmp_path, config, http_port, base)
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


def test_ports_one_apart_serve_from_both_processes(tmp_path: Path) -> None:
    """gossip P, peer P + 1, as in the defaults (7946, 7947)."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "page.txt").write_text("page\n")
    config = tmp_path / "node.toml"
    config.write_text(_config(tmp_path, "v1"))
    gossip = free_port_pair(1)
    http_port = free_port()
    node = _node(tmp_path, config, http_port,
                 [free_port_pair(), free_port_pair(), gossip, gossip + 1])
    try:
        wait_until(lambda: _ask(http_port) or not node.alive(), timeout=30, what="the node")
        assert node.alive(), node.output()
        _until_each_says(http_port, b"page\n", "both processes serving")
        assert node.terminate() == 0, node.output()
    finally:
        node.stop()


def test_a_child_that_cannot_bind_stops_the_whole_node(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    config = tmp_path / "node.toml"
    config.write_text(_config(tmp_path, "v1"))
    admin = free_port_pair()
    with socket.socket() as squatter:  # something else holds process 1's admin port
        squatter.bind(("127.0.0.1", admin + STRIDE))
        squatter.listen()
        node = _node(tmp_path, config, free_port(),
                     [admin, free_port_pair(), free_port_pair(), free_port_pair()])
        try:
            code = node.popen.wait(30)
        finally:
            node.stop()
    out = node.log_path.read_text(errors="replace")
    assert code == 1, out
    assert "process 1 (pid " in out and "could not run: " in out, out
    assert "exited with status 1: stopping the whole node" in out, out


def test_the_children_stop_when_process_0_is_killed(tmp_path: Path) -> None:
    """SIGKILL to process 0 (no drain, no forwarding): its children must not live on as
    orphans holding the ports a restart needs."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "page.txt").write_text("page\n")
    config = tmp_path / "node.toml"
    config.write_text(_config(tmp_path, "v1"))
    http_port = free_port()
    node = _node(tmp_path, config, http_port, [free_port_pair() for _ in range(4)])
    children: list[int] = []
    try:
        _until_each_says(http_port, b"page\n", "both processes serving")
        children = _children(node.pid)
        assert len(children) == 1, children
        node.signal(signal.SIGKILL)
        wait_until(lambda: not _alive(children[0]), timeout=20, what="the orphaned child to stop")
    finally:
        node.stop()
        for pid in children:  # only if the test failed: never leave an orphan behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_http_port_another_node_shares_is_refused(tmp_path: Path) -> None:
    """A `--processes` node binds its HTTP port with SO_REUSEPORT, and Linux lets any
    other SO_REUSEPORT bind of the same user join it: a second `--processes` node on that
    port (the old one still running) started without a word and the kernel split the
    clients between the two nodes. It must be refused, as a single process is."""
    (tmp_path / "v1").mkdir()
    config = tmp_path / "node.toml"
    config.write_text(_config(tmp_path, "v1"))
    http_port = free_port()
    with socket.socket() as other:  # what the first node's processes hold
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", http_port))
        other.listen()
        node = _node(tmp_path, config, http_port, [free_port_pair() for _ in range(4)])
        try:  # it exits, or says it serves (the bug): whichever comes first
            wait_until(lambda: not node.alive() or " ready: " in node.output(), timeout=30,
                       what="the node to exit or start")
            assert " ready: " not in node.output(), node.output()
            code = node.popen.wait(30)
        finally:
            node.stop()
    out = node.log_path.read_text(errors="replace")
    assert code == 1, out
    assert f"cannot listen on 127.0.0.1:{http_port} (--http): Address already in use" in out, out
