"""`scale0 purge --admin` pointed at something that is not an admin listener (the node's
public port, whose origin answers a POST with a web page) says so, as `scale0 mesh` does,
instead of "cannot reach the node's admin listener: Expecting value: line 1 column 1"."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from testkit.procs import scale0_bin

pytestmark = pytest.mark.timeout(60)


class WebPage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>thanks for your order</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join()


def test_a_web_page_is_not_taken_for_an_unreachable_admin(web: int) -> None:
    done = subprocess.run([scale0_bin(), "purge", "--admin", f"127.0.0.1:{web}",
                           "http://www.example.com/news"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "cannot reach" not in done.stderr and "Expecting value" not in done.stderr, done.stderr
    assert done.stderr == (f"scale0 purge: http://127.0.0.1:{web}/_scale0/purge did not answer "
                           "JSON; is this the node's admin address (--admin, default "
                           "127.0.0.1:8081)?\n")
