"""A Python-API worker handler for end-to-end tests (`scale0 worker --app pyapp:handle`)."""

from __future__ import annotations

import json

from node.body import read_body
from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    body = await read_body(request.body, 1 << 20)
    doc = {"api": "python", "method": request.method, "target": request.target,
           "body_len": len(body), "via": request.headers.get("Via"),
           "xff": request.headers.get("X-Forwarded-For")}
    return Response(200, Headers([("Content-Type", "application/json"),
                                  ("Set-Cookie", "p=1"), ("Set-Cookie", "q=2")]),
                    json.dumps(doc).encode())
