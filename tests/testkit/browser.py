"""Headless Chromium for tests: start it on a URL, talk to the page over DevTools.

`headless_page(url, tmp)` starts Debian's chromium (skipping the test with the
reason when it is not installed), waits for its DevTools port and the page
target, yields the page's websocket URL, and stops chromium by its PID.
`DevTools(ws).eval(js)` runs a script in the page; `until(js)` polls one with a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.procs import Proc, wait_until

ROWS_JS = (
    "JSON.stringify([...document.querySelectorAll('#rows tr')].map("
    "tr => [tr.dataset.node, tr.children[2].textContent, tr.children[2].className]))"
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if path:
            return path
    pytest.skip(
        "chromium is not installed (`apt-get install -y chromium`, or `make test` "
        "which runs scripts/system-deps.sh)"
    )


class DevTools:
    """Runtime.evaluate on one page target, over Tornado's websocket client."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def eval(self, expression: str) -> Any:
        self.next_id += 1
        msg_id = self.next_id
        await self.ws.write_message(json.dumps({
            "id": msg_id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": True},
        }))
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), 10)
            if raw is None:
                raise AssertionError("DevTools connection closed")
            reply = json.loads(raw)
            if reply.get("id") == msg_id:
                if "exceptionDetails" in reply.get("result", {}):
                    raise AssertionError(f"page script failed: {reply['result']}")
                return reply["result"]["result"].get("value")

    async def until(self, expression: str, within: float = 15.0) -> Any:
        end = time.monotonic() + within
        while time.monotonic() < end:
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.05)  # polling a page condition with a deadline
        raise AssertionError(f"page never satisfied {expression}")


@contextlib.contextmanager
def headless_page(url: str, tmp: Path) -> Iterator[str]:
    """Chromium showing `url`; yields the page target's DevTools websocket URL."""
    binary = chromium()
    profile = tmp / "chromium-profile"
    proc = Proc([
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url,
    ], tmp / "chromium.log")
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), timeout=30,
                   what=f"chromium's DevTools port (log: {proc.log_path})")
        devtools_port = int(port_file.read_text().split()[0])

        def page_ws() -> str | None:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{devtools_port}/json/list", timeout=5) as resp:
                targets = json.load(resp)
            return next((t["webSocketDebuggerUrl"] for t in targets
                         if t.get("type") == "page" and t.get("url", "").startswith(url)), None)

        yield wait_until(page_ws, timeout=15, what="the dashboard page target")
    finally:
        proc.stop()
