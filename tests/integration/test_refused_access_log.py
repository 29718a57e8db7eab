"""Answers the fast wire gives before any exchange begins are in the access log.

nginx logs the 400s it answers itself and the 408 of a head that never ended; an
operator looking for why clients fail looks there first. Before, only requests that
reached the front door's exchange were logged.
"""

from __future__ import annotations

import asyncio
import json

from testkit.logcapture import capture

from node.accesslog import AccessLog
from node.fastwire import FastHTTPServer, WireLimits, new_event_loop
from node.front import Front
from node.http import Headers, Request, Response

LIMITS = WireLimits(max_header_size=2048, header_timeout=0.5, idle_timeout=30.0)


async def ok(request: Request) -> Response:
    return Response(200, Headers(), b"ok")


async def _closed_after(port: int, data: bytes) -> bytes:
    """Send `data`; everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def test_the_wire_s_own_400_431_and_408_are_logged() -> None:
    async def main() -> None:
        logger, records = capture("test.refused_access_log")
        front = Front(ok)
        front.access_log = AccessLog("json", node="t1", logger=logger)
        server = FastHTTPServer(front, limits=LIMITS)
        port = await server.listen("127.0.0.1", 0)
        try:
            got = await _closed_after(port, b"GET /x HTTP/1.1\r\nHost a.test\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 400 ")
            big = b"GET /big?q=1 HTTP/1.1\r\nHost: a.test\r\nX-Big: " + b"b" * 4096 + b"\r\n\r\n"
            got = await _closed_after(port, big)
            assert got.startswith(b"HTTP/1.1 431 ")
            got = await _closed_after(port, b"GET /slow HTTP/1.1\r\nHost: a.t")  # never ends
            assert got == b""  # cut without an answer
            entries = [json.loads(line) for line in records.lines]
            assert [(e["status"], e["method"], e["target"]) for e in entries] == [
                (400, "GET", "/x"), (431, "GET", "/big?q=1"), (408, "GET", "/slow")]
            assert all(e["client"] == "127.0.0.1" for e in entries)
            await _closed_after(port, b"GET /fine HTTP/1.1\r\nHost: a.test\r\n"
                                      b"Connection: close\r\n\r\n")
            assert json.loads(records.lines[-1])["status"] == 200  # logged once, as before
            assert len(records.lines) == 4
        finally:
            server.stop()
            await server.close_all_connections()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
