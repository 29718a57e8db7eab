"""A purge while a fill is in flight: the answer the origin gave to a request sent before
the purge is the old content, and must not be stored after it (nor replicated).

Real `scale0 node` and `scale0 worker` processes; an origin in a thread that holds the
request until the test has purged (events, no sleeps)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from testkit.cachemesh import CacheNode

pytestmark = pytest.mark.timeout(90)


class GatedOrigin:
    """Answers /news with 'v1' (held until `release`) the first time, 'v2' after."""

    def __init__(self) -> None:
        self.arrived, self.release = threading.Event(), threading.Event()
        self.version = 0
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.version += 1
                body = f"v{origin.version}".encode()
                if origin.version == 1:
                    origin.arrived.set()
                    origin.release.wait(30)
                self.send_response(200)
                self.send_header("Cache-Control", "max-age=600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_fill_begun_before_a_purge_is_not_stored(tmp_path: Path) -> None:
    origin = GatedOrigin()
    node = CacheNode(tmp_path, "p1", origin.port, cache="memory")
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(node.request, "GET", "/news")
            assert origin.arrived.wait(30)
            node.purge("http://www.example.test/news")  # the new content is published
            origin.release.set()
            assert first.result(timeout=30)[2] == b"v1"  # that client saw the old one
        status, fields, body = node.request("GET", "/news")
        assert (status, body) == (200, b"v2"), (fields.get("x-cache"), node.log())
    finally:
        node.stop()
        origin.server.shutdown()
