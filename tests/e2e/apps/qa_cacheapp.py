"""A worker handler whose answers are cacheable for ten minutes
(`scale0 worker --app qa_cacheapp:handle`): the body names the target and the worker's pid."""

from __future__ import annotations

import os

from node.http import Headers, Request, Response


async def handle(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain"),
                                  ("Cache-Control", "max-age=600")]),
                    f"{request.target} from {os.getpid()}\n".encode())
