"""A Python-API worker for Scale0: `scale0 worker --app hello_worker:handle`.

Run with this folder on PYTHONPATH (or install it as a package); see
docs/python-workers.md. The handler runs on the worker's event loop, one task per
request: await, never block.
"""

from __future__ import annotations

import json

from node.body import BodyTooLong, read_body
from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    if request.path == "/echo" and request.method == "POST":
        try:
            body = await read_body(request.body, 1 << 20)  # bytes or a stream: 1 MiB at most
        except BodyTooLong:
            return Response.error(413, "1 MiB at most")
        doc = {"got": len(body), "type": request.headers.get("content-type")}
        return Response(200, Headers([("Content-Type", "application/json")]),
                        json.dumps(doc).encode())
    text = f"hello from {request.host or 'nowhere'}: {request.method} {request.target}\n"
    return Response(200, Headers([("Content-Type", "text/plain; charset=utf-8"),
                                  ("Cache-Control", "no-store")]),
                    text.encode())
