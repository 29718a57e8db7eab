"""A counting origin web server in a thread, for tests that must know how often the
origin was asked (coalescing, replication): per path, and how many at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (Cache-Control value, body) for a path
Answer = Callable[[str], tuple[str, bytes]]


class CountingOrigin:
    """Answers every GET after `delay` seconds (the origin's latency) with `answer(path)`."""

    def __init__(self, answer: Answer, delay: float = 0.3) -> None:
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path
                with origin.lock:
                    origin.counts[path] += 1
                    origin.in_flight += 1
                    origin.max_in_flight[path] = max(origin.max_in_flight[path], origin.in_flight)
                time.sleep(delay)  # the origin's latency, not synchronisation
                with origin.lock:
                    origin.in_flight -= 1
                cache_control, body = answer(path)
                self.send_response(200)
                self.send_header("Cache-Control", cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = serve_in_thread(Handler)
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_in_thread(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded HTTP server on a free loopback port, serving in a daemon thread."""
    # The stdlib default backlog is 5: hundreds of concurrent connections would
    # be dropped by the kernel and retried for seconds. Raise it before binding.
    server_class = type("Origin", (ThreadingHTTPServer,), {"request_queue_size": 1024})
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
