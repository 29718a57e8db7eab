"""Real `scale0 node` processes with a cache, their workers and a counting origin, for the
cache-and-replication scenarios (tests/e2e/test_cache_chaos_e2e.py).

A `CacheNode` is a `MeshNode` (ports kept across restarts) with a config file, a cache
spec and one `scale0 worker` in front of the origin; `restart()` brings the node back
on the same ports and the same cache folder, as an operator's systemd would.
"""

from __future__ import annotations

import http.client
import json
import signal
import urllib.parse
from pathlib import Path

from testkit.meshnodes import MeshNode, worker
from testkit.procs import Proc, wait_until

HOST = "www.example.test"  # one Host for every node, as round-robin DNS gives: one key


class CacheNode:
    def __init__(self, tmp: Path, name: str, origin_port: int, *, cache: str,
                 toml: str = "", seed: str | None = None) -> None:
        config = tmp / f"{name}.toml"
        config.write_text(toml)
        self.node = MeshNode(tmp, name, dc="east", seed=seed, preset="local",
                             extra=["--config", str(config), "--cache", cache])
        self.tmp, self.origin_port = tmp, origin_port
        self.worker: Proc | None = None
        self.start()

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def peer(self) -> str:
        return self.node.peer

    def start(self) -> None:
        self.node.start()
        wait_until(self.node.health, timeout=20, what=f"{self.name}'s admin listener")
        if self.worker is None or not self.worker.alive():
            self.worker = worker(self.tmp, self.node, f"http://127.0.0.1:{self.origin_port}",
                                 concurrency=128, tag=f"-{self.node.runs}")
        wait_until(lambda: self.node.workers_of() >= 1, timeout=20, what=f"{self.name}'s worker")

    def kill9(self) -> None:
        assert self.node.proc is not None
        self.node.proc.kill9()

    def pause(self) -> None:
        assert self.node.proc is not None
        self.node.proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.node.proc is not None
        self.node.proc.signal(signal.SIGCONT)

    def alive_ids(self) -> set[str]:
        return {i for i, (state, _) in self.node.views().items() if state == "alive"} | {self.name}

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.http, timeout=timeout)
        try:
            conn.request(method, path, headers={"Host": HOST, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def cached(self, path: str, headers: dict[str, str] | None = None) -> bytes | None:
        """The body this node holds for `path` (only-if-cached never reaches the origin)."""
        status, _, body = self.request("GET", path, {"Cache-Control": "only-if-cached",
                                                     **(headers or {})})
        return body if status == 200 else None

    def purge(self, url: str) -> dict[str, object]:
        """POST /_scale0/purge on the admin listener, as `scale0 purge` does."""
        conn = http.client.HTTPConnection("127.0.0.1", self.node.admin, timeout=10)
        try:
            form = urllib.parse.urlencode({"url": url})
            conn.request("POST", "/_scale0/purge", body=form,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (resp.status, body)
            return dict(json.loads(body))
        finally:
            conn.close()

    def metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.admin, timeout=10)
        try:
            conn.request("GET", "/_scale0/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def log(self) -> str:
        return self.node.log_tail(60000)

    def stop(self) -> None:
        self.node.stop()
        if self.worker is not None:
            self.worker.stop()


def converge(nodes: list[CacheNode], timeout: float = 20.0) -> None:
    names = {n.name for n in nodes}
    wait_until(lambda: all(n.alive_ids() >= names for n in nodes), timeout=timeout,
               what="every node alive in every view")


def puts_flow(src: CacheNode, dsts: list[CacheNode], tag: str) -> None:
    """Subscriptions settle after the views agree: probe until a put from `src` lands."""
    for i in range(200):
        path = f"/probe-{tag}-{src.name}-{i}"
        src.request("GET", path)
        try:
            wait_until(lambda p=path: all(d.cached(p) for d in dsts), timeout=0.5)  # type: ignore[misc]
            return
        except AssertionError:
            continue
    raise AssertionError(f"puts from {src.name} never reached {[d.name for d in dsts]}")


class VaryOrigin:
    """A counting origin whose answers may vary: `/vary/*` on Accept-Encoding (Vary
    sent), `/race/*` a new version per request (v1, v2, ...), `/reflect/*` the
    X-Host it was given (a poisonable origin), the rest a fixed body;
    `/big/*` 8 KiB. All `max-age=600`."""

    def __init__(self) -> None:
        import threading
        from collections import Counter
        from http.server import BaseHTTPRequestHandler
        from typing import Any

        from testkit.origin import serve_in_thread

        self.counts: Counter[str] = Counter()
        lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    origin.counts[self.path] += 1
                    n = origin.counts[self.path]
                fields = [("Cache-Control", "max-age=600")]
                if self.path.startswith("/vary/"):
                    coding = "gzip" if "gzip" in self.headers.get("Accept-Encoding", "") else "id"
                    body = f"{coding} {self.path}".encode()
                    fields.append(("Vary", "Accept-Encoding"))
                elif self.path.startswith("/race/"):
                    body = f"v{n} {self.path}".encode()
                elif self.path.startswith("/reflect/"):  # a poisonable origin
                    seen = self.headers.get("X-Host") or self.headers.get("Host")
                    body = f"host={seen} {self.path}".encode()
                elif self.path.startswith("/big/"):
                    body = b"b" * 8192
                else:
                    body = f"v1 {self.path}".encode()
                self.send_response(200)
                for name, value in [*fields, ("Content-Length", str(len(body)))]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = serve_in_thread(Handler)
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
