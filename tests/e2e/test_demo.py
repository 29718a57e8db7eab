"""`scale0 demo`: comes up, answers through both demo workers, stops cleanly (exit 0)."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from testkit.procs import Proc, scale0_bin, wait_until

pytestmark = pytest.mark.e2e


def _urls(proc: Proc) -> tuple[str, str]:
    found = re.findall(r"curl -i (http://127\.0\.0\.1:\d+/\S*)", proc.output())
    return (found[0], found[1]) if len(found) >= 2 else ("", "")


def _fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def _x_cache(line: tuple[str, str]) -> str:
    """Run the intro's east-2 command (a Host header and a URL); its X-Cache."""
    host, url = line
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}),
                                timeout=10) as resp:
        return str(resp.headers.get("X-Cache", ""))


def _refused(url: str) -> bool:
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def test_demo_serves_both_workers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = Proc([scale0_bin(), "demo", "--for", "120"], tmp_path / "demo.log")
    try:
        wait_until(lambda: _urls(proc)[0] or not proc.alive(), timeout=60, what="the demo's URLs")
        origin_url, hello_url = _urls(proc)
        assert origin_url, proc.output()
        status, text = _fetch(origin_url)
        assert status == 200 and "hello from the demo origin" in text
        assert "1.1 east-1" in text  # it went through the first node
        status, text = _fetch(hello_url)
        assert status == 200 and "Python-API worker" in text
        # The intro's east-2 line does what it says: east-1's answer, replicated, a HIT.
        east2 = re.findall(r"curl -i -H 'Host: (\S+)' (http://127\.0\.0\.1:\d+/\S*)",
                           proc.output())
        assert len(east2) == 1, proc.output()
        wait_until(lambda: _x_cache(east2[0]).startswith("HIT"), timeout=15,
                   what="the replicated entry at east-2")
        proc.signal(signal.SIGINT)
        assert proc.popen.wait(30) == 0, proc.output()
        assert "scale0 demo: stopped" in proc.output()
        assert _refused(origin_url)
    finally:
        proc.stop()


def test_demo_for_seconds_exits_0_by_itself(tmp_path: Path) -> None:
    proc = Proc([scale0_bin(), "demo", "--for", "1"], tmp_path / "demo.log")
    try:
        assert proc.popen.wait(60) == 0, proc.output()
        assert _urls(proc)[0], proc.output()
    finally:
        proc.stop()
