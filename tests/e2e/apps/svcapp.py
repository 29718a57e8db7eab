"""Python-API worker handlers that say which service answered (`--app svcapp:blue`).

/cached answers with max-age (for cache hits); /slow?ms=N answers after N
milliseconds (a request in flight during SIGTERM); everything else is no-store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from node.body import read_body
from node.http import Headers, Request, Response


def _answer(colour: str) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        await read_body(request.body, 1 << 20)
        path, _, query = request.target.partition("?")
        if path == "/slow":
            ms = int(query.removeprefix("ms=") or "500") if query.startswith("ms=") else 500
            await asyncio.sleep(min(ms, 10_000) / 1000)  # the slow backend being simulated
        cache = "public, max-age=300" if path == "/cached" else "no-store"
        doc = {"service": colour, "target": request.target}
        return Response(200, Headers([("Content-Type", "application/json"),
                                      ("Cache-Control", cache)]), json.dumps(doc).encode())
    return handle


blue = _answer("blue")
green = _answer("green")
