"""A worker handler that takes 0.2 s (`scale0 worker --app slowapp:handle`): slots stay busy."""

from __future__ import annotations

import asyncio

from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    await asyncio.sleep(0.2)  # the backend's own work, not a synchronisation
    return Response(200, Headers([("Content-Type", "text/plain"), ("Cache-Control", "no-store")]),
                    f"slow answer for {request.target}\n".encode())
