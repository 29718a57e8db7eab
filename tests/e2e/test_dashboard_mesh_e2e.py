"""The dashboard of a real mesh in headless Chromium: two `scale0 node` processes, the
page on one of them lists both, and a node leaving shows up live, with no reload."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from testkit.browser import ROWS_JS, DevTools, headless_page
from testkit.meshnodes import MeshNode
from testkit.procs import wait_until
from tornado.websocket import websocket_connect

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def _watch(ws_url: str, b: MeshNode) -> None:
    ws = await websocket_connect(ws_url)
    try:
        page = DevTools(ws)
        await page.until("document.querySelectorAll('#rows tr').length === 2")
        rows = json.loads(await page.eval(ROWS_JS))
        assert [(r[0], r[1]) for r in rows] == [("dash-a", "alive"), ("dash-b", "alive")]
        await page.eval("window.__scale0NoReload = 7")  # a reload would wipe this
        assert b.proc is not None
        b.proc.signal(signal.SIGTERM)  # b drains and says LEAVE
        await page.until(
            "[...document.querySelectorAll('#rows tr')].some("
            "tr => tr.dataset.node === 'dash-b' && tr.children[2].textContent === 'left')",
            within=20)
        assert await page.eval("window.__scale0NoReload") == 7
    finally:
        ws.close()


def test_the_dashboard_shows_a_real_mesh_live(tmp_path: Path) -> None:
    a = MeshNode(tmp_path, "dash-a", preset="local", extra=["--cache", "off"])
    a.start()
    b = MeshNode(tmp_path, "dash-b", seed=a.peer, preset="local", extra=["--cache", "off"])
    try:
        wait_until(a.health, timeout=30, what="dash-a")
        b.start()
        wait_until(lambda: a.views().get("dash-b", ("",))[0] == "alive", timeout=30,
                   what="dash-b alive in dash-a's table")
        url = f"http://127.0.0.1:{a.admin}/_scale0/"
        with headless_page(url, tmp_path) as ws_url:
            asyncio.run(_watch(ws_url, b))
    finally:
        b.stop()
        a.stop()
