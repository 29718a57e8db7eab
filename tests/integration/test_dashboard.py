"""The dashboard on a real Tornado server on loopback: JSON, SSE, and headless Chromium.

The server runs on its own event loop in a thread; the table is only touched on
that loop (`LiveTable.change`), as the node does it. Every wait polls a real
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from testkit.browser import ROWS_JS, DevTools, headless_page
from testkit.procs import free_port, wait_until
from tornado.websocket import websocket_connect

from gossip.load import ServiceLoad
from mesh.cli import run_mesh
from mesh.dashboard import dashboard_routes
from mesh.loadtable import LoadTable


class LiveTable:
    """A load table served by the dashboard routes on a loopback port."""

    def __init__(
        self, max_streams: int = 32, interval: float = 1.0, use_version: bool = False
    ) -> None:
        self.use_version = use_version
        self.table = LoadTable("east-1")
        self.table.update(
            "east-1",
            "east",
            "alive",
            1,
            {"peer": "tcp://10.0.0.1:7947"},
            {"www": ServiceLoad(workers=1, slots=4, in_flight=2)},
            time.monotonic(),
        )
        self.table.update(
            "west-1",
            "west",
            "alive",
            3,
            {"peer": "tcp://10.0.1.1:7947"},
            {"www": ServiceLoad(workers=4, slots=16)},
            time.monotonic(),
        )
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(max_streams, interval), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("dashboard server did not start")

    def _run(self, max_streams: int, interval: float) -> None:
        asyncio.set_event_loop(self.loop)
        app = tornado.web.Application(
            dashboard_routes(
                lambda: self.table.to_json(time.monotonic()),
                interval=interval,
                poll=0.05,
                max_streams=max_streams,
                version=(lambda: self.table.version) if self.use_version else None,
            )
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        self._ready.set()
        self.loop.run_forever()
        server.stop()
        self.loop.run_until_complete(server.close_all_connections())
        self.loop.close()

    def change(self, fn: Callable[[LoadTable], object]) -> None:
        """Apply `fn` to the table on the server's loop and wait for it to be done."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(self.table), done.set()))
        assert done.wait(5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def live() -> Iterator[LiveTable]:
    server = LiveTable(max_streams=2)
    yield server
    server.close()


class SSE:
    """A minimal Server-Sent Events reader over a real socket."""

    def __init__(self, base_port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=5)
        self.conn.request("GET", "/_scale0/mesh/events", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()

    def next_data(self) -> dict[str, Any]:
        """The next `data:` event, parsed (the socket timeout bounds the wait)."""
        while True:
            line = self.resp.fp.readline(1 << 20)
            if not line:
                raise AssertionError("event stream closed")
            if line.startswith(b"data: "):
                return json.loads(line[6:])  # type: ignore[no-any-return]

    def next_line_starting(self, prefix: bytes) -> bytes:
        while not (line := self.resp.fp.readline(1 << 20)).startswith(prefix):
            if not line:
                raise AssertionError("event stream closed")
        return line

    def close(self) -> None:
        self.conn.close()


def _states(doc: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["state"] for n in doc["nodes"]}


def test_json_page_and_redirect(live: LiveTable) -> None:
    with urllib.request.urlopen(live.base + "/_scale0/mesh", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        doc = json.load(resp)
    assert doc["self"] == "east-1" and _states(doc) == {"east-1": "alive", "west-1": "alive"}
    with urllib.request.urlopen(live.base + "/_scale0", timeout=5) as resp:
        assert resp.url.endswith("/_scale0/")
        page = resp.read().decode()
        assert "script-src 'sha256-" in resp.headers["Content-Security-Policy"]
    assert (
        "EventSource" in page
        and "<script src" not in page
        and "http" not in page.split("<script>")[1]
    )  # self-contained: no external script or URL
    for path in ("/_scale0/mesh", "/_scale0/"):  # `curl -I`: the head alone, not a 405
        head = urllib.request.Request(live.base + path, method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b""
            assert int(resp.headers["Content-Length"]) > 0


def test_sse_delivers_changes_and_periodic_beats(live: LiveTable) -> None:
    sse = SSE(live.port)
    try:
        assert sse.resp.status == 200
        assert sse.resp.headers["Content-Type"].startswith("text/event-stream")
        first = sse.next_data()
        assert _states(first) == {"east-1": "alive", "west-1": "alive"}
        # With nothing changed, a beat still arrives (ages move on).
        assert _states(sse.next_data()) == _states(first)
        live.change(lambda t: t.mark("west-1", "dead"))
        deadline = time.monotonic() + 5
        while _states(doc := sse.next_data()).get("west-1") != "dead":
            assert time.monotonic() < deadline, "the change never reached the stream"
        live.change(lambda t: t.update("west-2", "west", "suspect", 1, {}, {}, time.monotonic()))
        while "west-2" not in _states(doc := sse.next_data()):
            assert time.monotonic() < deadline, "the new node never reached the stream"
        assert _states(doc)["west-2"] == "suspect"
    finally:
        sse.close()


@pytest.mark.parametrize("use_version", [False, True], ids=["fingerprint", "version"])
def test_sse_pushes_a_change_without_waiting_for_the_beat(use_version: bool) -> None:
    # With an hour between beats, only the on-change path can deliver the update.
    server = LiveTable(interval=3600, use_version=use_version)
    sse = SSE(server.port)
    try:
        assert _states(sse.next_data())["west-1"] == "alive"
        server.change(lambda t: t.mark("west-1", "suspect"))
        assert _states(sse.next_data())["west-1"] == "suspect"
    finally:
        sse.close()
        server.close()


def test_a_broken_table_source_is_reported_and_the_stream_survives(live: LiveTable) -> None:
    def broken(now: float) -> dict[str, Any]:
        raise RuntimeError("table on fire")

    sse = SSE(live.port)
    try:
        sse.next_data()
        live.change(lambda t: setattr(t, "to_json", broken))
        sse.next_line_starting(b"event: problem")
        assert "could not read its mesh table" in sse.next_data()  # type: ignore[operator]
        live.change(lambda t: delattr(t, "to_json"))
        assert "west-1" in _states(sse.next_data())
    finally:
        sse.close()


def test_streams_are_bounded_and_released(live: LiveTable) -> None:
    streams = [SSE(live.port), SSE(live.port)]
    for s in streams:
        s.next_data()
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(live.base + "/_scale0/mesh/events", timeout=5)
    assert exc.value.code == 503
    for s in streams:
        s.close()

    def third_stream_served() -> bool:
        try:
            s = SSE(live.port)
        except OSError:
            return False
        try:
            return s.resp.status == 200 and "east-1" in _states(s.next_data())
        finally:
            s.close()

    wait_until(third_stream_served, timeout=10, what="a closed stream to free its slot")


def test_cli_once_and_json_against_the_server(live: LiveTable, tmp_path: Path) -> None:
    import argparse
    import io

    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(
        admin=f"127.0.0.1:{live.port}", once=True, json=False, interval=1.0, timeout=5.0
    )
    assert run_mesh(args, out, err) == 0, err.getvalue()
    assert "east-1" in out.getvalue() and "west-1" in out.getvalue()
    out = io.StringIO()
    args.once, args.json = False, True
    assert run_mesh(args, out, err) == 0
    assert json.loads(out.getvalue())["self"] == "east-1"


def test_cli_says_unreachable_in_one_line_and_exits_1() -> None:
    import argparse
    import io

    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(
        admin=f"http://127.0.0.1:{free_port()}", once=True, json=False, interval=1.0, timeout=5.0
    )
    assert run_mesh(args, out, err) == 1
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and "cannot reach the node's admin listener" in lines[0]


def test_cli_live_redraws_in_place_until_ctrl_c(live: LiveTable) -> None:
    """The live table on a real pseudo-terminal: it redraws in place and Ctrl-C ends it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh.cli",
            "--admin",
            f"127.0.0.1:{live.port}",
            "--interval",
            "0.1",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "160", "LINES": "40"},
    )
    os.close(slave)
    screen = bytearray()

    def shows(text: bytes) -> bool:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            with contextlib.suppress(OSError):
                screen.extend(os.read(master, 65536))
        return text in screen

    try:
        wait_until(lambda: shows(b"west-1"), timeout=15, what="the first table")
        live.change(lambda t: t.mark("west-1", "dead"))
        wait_until(lambda: shows(b"dead"), timeout=15, what="the change on screen")
        assert b"\x1b[2K" in screen or b"\x1b[1A" in screen  # cursor moved: redrawn in place
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


@pytest.mark.browser
def test_headless_chromium_shows_the_table_and_live_changes(
    live: LiveTable, tmp_path: Path
) -> None:
    url = live.base + "/_scale0/"
    with headless_page(url, tmp_path) as ws_url:
        asyncio.run(_drive_page(ws_url, live))


async def _drive_page(ws_url: str, live: LiveTable) -> None:
    ws = await websocket_connect(ws_url)
    try:
        page = DevTools(ws)
        await page.until("!!document.body && Number(document.body.dataset.updates || 0) >= 1")
        rows = json.loads(await page.eval(ROWS_JS))
        assert rows == [
            ["east-1", "alive", "state state-alive"],
            ["west-1", "alive", "state state-alive"],
        ]
        # A marker that a reload would wipe: the change below must arrive without one.
        await page.eval("window.__scale0NoReload = 42")
        live.change(
            lambda t: (
                t.mark("west-1", "dead"),
                t.update("west-2", "west", "suspect", 1, {}, {}, time.monotonic()),
            )
        )
        await page.until("document.querySelectorAll('#rows tr').length === 3")
        rows = json.loads(await page.eval(ROWS_JS))
        assert rows == [
            ["east-1", "alive", "state state-alive"],
            ["west-1", "dead", "state state-dead"],
            ["west-2", "suspect", "state state-suspect"],
        ]
        assert await page.eval("window.__scale0NoReload") == 42
        header = await page.eval("document.querySelector('#head').textContent")
        assert "www" in header
    finally:
        ws.close()
