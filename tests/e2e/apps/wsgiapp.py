"""A WSGI application for end-to-end tests (`scale0 worker --wsgi wsgiapp:app`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    doc = {"api": "wsgi", "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
           "query": environ.get("QUERY_STRING", ""), "body_len": len(body),
           "host": environ.get("HTTP_HOST")}
    start_response("200 OK", [("Content-Type", "application/json"), ("Set-Cookie", "w=1"),
                              ("Set-Cookie", "v=2")])
    return [json.dumps(doc).encode()]
