"""A worker handler that holds each request `?ms=N` milliseconds, whatever its method
(`scale0 worker --app heldapp:handle`), and names the worker's pid in the answer, so a
test can tell who answered a request another worker held first."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import parse_qs, urlsplit

from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    query = parse_qs(urlsplit(request.target).query)
    await asyncio.sleep(int(query.get("ms", ["0"])[0]) / 1000)  # the backend's work
    return Response(200, Headers([("Content-Type", "text/plain"), ("Cache-Control", "no-store")]),
                    f"{request.method} held by {os.getpid()}\n".encode())
