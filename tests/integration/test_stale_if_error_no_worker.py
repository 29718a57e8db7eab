"""stale-if-error with no worker left anywhere: the stale answer at once, not at the deadline.

nginx's `proxy_cache_use_stale error` answers from the stale entry as soon as the
upstream refuses the connection. Here a whole Node runs in the test's loop with an
in-process SDK worker; once the worker is gone and the entry is stale, a GET must be
answered STALE well before the service's 30 s timeout — and a URL with nothing stored
still waits for a worker as before (the fast failure is only for a caller with an
answer of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from testkit.nodeproc import node_from, poll
from testkit.nodetoml import loopback_listeners

from node.http import Headers, Request, Response
from node.worker.sdk import Worker

TIMEOUT = 30.0


async def stale_ok(request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain"),
                                  ("Cache-Control", "max-age=0, stale-if-error=300")]),
                    b"kept")


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def test_a_stale_entry_is_served_at_once_when_no_worker_is_left(tmp_path: Path) -> None:
    async def main() -> None:
        toml = ('cache = "memory"\naccess_log = false\n' + loopback_listeners("s1")
                + f"default_timeout = {TIMEOUT}\n")
        async with node_from(tmp_path, toml) as node:
            assert node.broker is not None
            broker = node.broker
            worker = Worker(broker.bound_endpoint, ["default"], 2, stale_ok,
                            heartbeat_interval=0.2)
            task = asyncio.create_task(worker.run())
            try:
                await poll(lambda: broker.has_free_slot("default"), "the worker")
                status, _, body = await get(node.http_port, "/page")
                assert (status, body) == (200, b"kept")
            finally:
                await worker.stop(0.5)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await poll(lambda: broker.capacity("default")[0] == 0, "the worker gone")
            started = time.monotonic()
            status, fields, body = await asyncio.wait_for(get(node.http_port, "/page"),
                                                          TIMEOUT / 3)
            assert (status, body, fields.get("x-cache")) == (200, b"kept", "STALE")
            assert time.monotonic() - started < TIMEOUT / 3
            # Nothing stored for this one: it still waits for a worker (here: its deadline
            # is not reached before the test gives up waiting).
            waiting = asyncio.create_task(get(node.http_port, "/never-stored"))
            done, _ = await asyncio.wait({waiting}, timeout=1.0)
            assert not done, "a request without a fallback must wait for a worker"
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting

    asyncio.run(main())
