"""A worker handler that records every request it starts (`scale0 worker --app countapp:handle`).

Each request appends one line "METHOD TARGET BODY_LEN" to the file named by COUNT_FILE
before its work begins, so a test can tell how many times a POST was executed even when
the worker is killed mid-request. `?ms=N` makes the work take N ms (default 0);
`?kib=N` answers N KiB.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import parse_qs, urlsplit

from node.body import read_body
from node.http import Headers, Request, Response


def _record(line: str) -> None:
    # One short append, before the work starts: a kill -9 after it still leaves the trace.
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as out:
        out.write(line)


async def handle(request: Request) -> Response:
    body = await read_body(request.body, 64 * 1024 * 1024)
    _record(f"{request.method} {request.target} {len(body)}\n")
    query = parse_qs(urlsplit(request.target).query)
    ms = int(query.get("ms", ["0"])[0])
    if ms:
        await asyncio.sleep(ms / 1000)  # the backend's own work, not a synchronisation
    kib = int(query.get("kib", ["0"])[0])
    payload = b"x" * (kib * 1024) if kib else f"done {request.method} {request.target}\n".encode()
    return Response(200, Headers([("Content-Type", "text/plain"), ("Cache-Control", "no-store")]),
                    payload)
