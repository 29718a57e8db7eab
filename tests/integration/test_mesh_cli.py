"""`scale0 mesh` against a real admin listener: the token guard, and live mode into a pipe.

The server is the node's own pieces on a loopback socket: the dashboard routes
over a LoadTable, behind node.admintoken's guard (what a node with
`--admin-token-file` serves). The CLI runs in-process for the one-shot modes
and as a real subprocess for the live mode, whose stdout is a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.web
from testkit.procs import wait_until

from gossip.load import ServiceLoad
from mesh.cli import run_mesh
from mesh.dashboard import dashboard_routes
from mesh.loadtable import LoadTable
from node.admintoken import guard

TOKEN = "0123456789abcdef0123456789abcdef"


class Admin:
    """A two-node load table served like a node's admin listener, optionally token-guarded."""

    def __init__(self, token: str | None) -> None:
        self.table = LoadTable("east-1")
        for node, dc, slots in (("east-1", "east", 4), ("west-1", "west", 16)):
            self.table.update(node, dc, "alive", 1, {"peer": "tcp://10.0.0.1:7947"},
                              {"www": ServiceLoad(workers=1, slots=slots)}, time.monotonic())
        self.loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            app = tornado.web.Application(
                dashboard_routes(lambda: self.table.to_json(time.monotonic())))
            server = tornado.httpserver.HTTPServer(
                guard(app, token.encode() if token else None))
            server.add_sockets([sock])
            started.set()
            self.loop.run_forever()
            server.stop()
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def guarded() -> Iterator[Admin]:
    admin = Admin(TOKEN)
    yield admin
    admin.close()


def mesh(admin: Admin, token_file: str = "", **mode: bool) -> tuple[int, str, str]:
    args = argparse.Namespace(admin=f"127.0.0.1:{admin.port}", admin_token_file=token_file,
                              once=mode.get("once", False), json=mode.get("json", False),
                              interval=1.0, timeout=5.0)
    out, err = io.StringIO(), io.StringIO()
    return run_mesh(args, out, err), out.getvalue(), err.getvalue()


def test_without_the_token_it_says_which_flag_is_missing(guarded: Admin) -> None:
    code, out, err = mesh(guarded, once=True)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "401" in err and "give --admin-token-file" in err


def test_with_the_token_file_it_shows_the_table(guarded: Admin, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    code, out, err = mesh(guarded, str(tmp_path / "token"), once=True)
    assert (code, err) == (0, "")
    assert "east-1" in out and "west-1" in out
    code, out, _ = mesh(guarded, str(tmp_path / "token"), json=True)
    assert code == 0 and '"self": "east-1"' in out


@pytest.mark.parametrize(("content", "says"), [
    ("not-the-token-at-all-0000000000", "the token was refused"),
    ("", "expected the token on one line"),
    ("two\nlines", "expected the token on one line"),
    (None, "No such file or directory"),
])
def test_a_bad_token_file_is_one_line(guarded: Admin, tmp_path: Path, content: str | None,
                                      says: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    code, out, err = mesh(guarded, str(path), once=True)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and says in err
    assert TOKEN not in err


def test_live_mode_into_a_pipe_prints_a_table_per_interval() -> None:
    """Rich's Live shows nothing on a pipe until it ends: `scale0 mesh | tee` must still show."""
    admin = Admin(None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "--admin", f"127.0.0.1:{admin.port}",
         "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"})
    seen = bytearray()
    assert proc.stdout is not None

    def tables(n: int) -> bool:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            seen.extend(os.read(proc.stdout.fileno(), 65536))  # type: ignore[union-attr]
        return seen.count(b"mesh seen by east-1") >= n

    try:
        wait_until(lambda: tables(1), timeout=15, what="the first table on the pipe")
        admin.loop.call_soon_threadsafe(admin.table.mark, "west-1", "dead")
        wait_until(lambda: tables(3) and b"dead" in seen, timeout=15,
                   what="later tables, with the change")
    finally:
        proc.kill()
        proc.wait(10)
        admin.close()
    assert b"\x1b[" not in seen  # plain tables, no cursor movement into a file


def test_live_mode_on_a_terminal_gives_the_terminal_back_on_sigterm() -> None:
    """`timeout 5 scale0 mesh` (SIGTERM) must leave the cursor shown and the line ended,
    as Ctrl-C does: Live hides the cursor while it redraws."""
    import pty

    admin = Admin(None)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "--admin", f"127.0.0.1:{admin.port}",
         "--interval", "0.1"],
        stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120",
                                                   "TERM": "xterm"})
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        while select.select([master], [], [], 0.05)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                return
            if not chunk:
                return
            seen.extend(chunk)

    try:
        wait_until(lambda: read() or b"mesh seen by east-1" in seen, timeout=15,
                   what="the live table on the terminal")
        assert b"\x1b[?25l" in seen  # the cursor is hidden while Live redraws
        proc.terminate()
        assert proc.wait(10) == 0
        read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
        admin.close()
    assert seen.rfind(b"\x1b[?25h") > seen.rfind(b"\x1b[?25l")  # shown again at the end
