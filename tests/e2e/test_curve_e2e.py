"""`--curve` on real processes: only listed workers get in; a node that cannot enforce
the list refuses to start; `scale0 keygen` makes the keys an operator copies around."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e


def _keygen(directory: Path, *args: str) -> None:
    subprocess.run([scale0_bin(), "keygen", str(directory), *args], check=True,
                   capture_output=True, timeout=60)


def _health(admin: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/_scale0/health")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_only_listed_workers_get_in(tmp_path: Path) -> None:
    node_keys, listed, unlisted = tmp_path / "node", tmp_path / "w-ok", tmp_path / "w-bad"
    http_port, admin, gossip, peer, workers = (free_port() for _ in range(5))
    _keygen(node_keys, "--endpoint", f"tcp://127.0.0.1:{gossip}",
            "--endpoint", f"tcp://127.0.0.1:{peer}")
    _keygen(listed, "--name", "ok")
    _keygen(unlisted, "--name", "bad")
    (node_keys / "authorized").mkdir(exist_ok=True)
    shutil.copy(listed / "ok.key", node_keys / "authorized" / "ok.key")
    for d in (listed, unlisted):
        shutil.copy(node_keys / "node.key", d / "node.key")
    endpoint = f"tcp://127.0.0.1:{workers}"
    procs: list[Proc] = []

    def start(name: str, args: list[str]) -> Proc:
        proc = Proc(args, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    try:
        node = start("node", [scale0_bin(), "node", "--id", "c1", "--curve", str(node_keys),
                              "--http", f"127.0.0.1:{http_port}", "--admin", f"127.0.0.1:{admin}",
                              "--workers", endpoint, "--gossip", f"tcp://127.0.0.1:{gossip}",
                              "--peer", f"tcp://127.0.0.1:{peer}", "--cache", "off"])
        wait_until(lambda: _health(admin) or not node.alive(), timeout=30, what="the node")
        assert node.alive(), node.output()
        app = ["--app", "node.demo:demo_hello"]
        start("bad", [scale0_bin(), "worker", "--node", endpoint, "--service", "intruder",
                      "--curve", str(unlisted), *app])
        start("plain", [scale0_bin(), "worker", "--node", endpoint, "--service", "plaintext",
                        *app])
        start("ok", [scale0_bin(), "worker", "--node", endpoint, "--service", "default",
                     "--curve", str(listed), *app])
        wait_until(lambda: _health(admin)["workers"].get("default", {}).get("workers"),
                   timeout=30, what="the listed worker")
        status, body = _get(http_port, "/x")
        assert status == 200 and b"Python-API worker" in body
        # The three started together; the listed one is in, the others never are.
        wait_until(lambda: all(not p.alive() or p.output() for p in procs[1:3]), timeout=5)
        services = _health(admin)["workers"]
        assert "intruder" not in services and "plaintext" not in services, services
    finally:
        for proc in procs:
            proc.stop()


def test_a_node_that_cannot_enforce_the_list_refuses_to_start(tmp_path: Path) -> None:
    empty = tmp_path / "no-keys"
    empty.mkdir()
    proc = subprocess.run(
        [scale0_bin(), "node", "--curve", str(empty), "--http", f"127.0.0.1:{free_port()}",
         "--admin", f"127.0.0.1:{free_port()}", "--workers", f"tcp://127.0.0.1:{free_port()}",
         "--gossip", f"tcp://127.0.0.1:{free_port()}", "--peer", f"tcp://127.0.0.1:{free_port()}",
         "--cache", "off"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--curve" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
