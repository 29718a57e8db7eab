"""Backends for tests/e2e/test_proxy_e2e.py's migration tests (apps that sat behind nginx).

`handle` (`--app migrateapps:handle`) answers every GET with a shared, cacheable
representation that varies on Accept-Encoding (so no prepared fast-wire hit serves it:
the cache stage does). `stream_app` (`--wsgi migrateapps:stream_app`) is a Flask-style
streaming response: it yields "first\\n" at once, then waits (at most 20 s) until the
file named by the `gate` query parameter exists before yielding "second\\n" — as a
server-sent-events view waits for its next event. `lm_app` validates by Last-Modified
alone and, as Flask (Werkzeug) does, sends its 304s without Last-Modified.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain"),
                                  ("Cache-Control", "public, max-age=300"),
                                  ("Vary", "Accept-Encoding")]),
                    f"cached {request.target}\n".encode())


def stream_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    gate = parse_qs(environ["QUERY_STRING"]).get("gate", [""])[0]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])

    def body() -> Iterator[bytes]:
        yield b"first\n"
        end = time.monotonic() + 20.0
        while gate and not os.path.exists(gate) and time.monotonic() < end:
            time.sleep(0.01)  # the app's own wait for its next event
        yield b"second\n"

    return body()


LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
_served = [0]


def lm_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    _served[0] += 1
    if environ.get("HTTP_IF_MODIFIED_SINCE") == LAST_MODIFIED:
        start_response("304 NOT MODIFIED", [("X-Served", str(_served[0]))])
        return []
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=0"),
                              ("Last-Modified", LAST_MODIFIED), ("X-Served", str(_served[0]))])
    return [f"full answer {_served[0]}\n".encode()]
