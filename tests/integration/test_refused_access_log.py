"""Answers the fast wire gives before any exchange begins are in the access log.

nginx logs the 400s it answers itself and the 408 of a head that never ended; an
operator looking for why clients fail looks there first. Before, only requests that
reached the front door's exchange were logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st
from testkit.logcapture import capture

from node.accesslog import AccessLog, shown_target
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


def test_the_front_s_own_400_and_431_are_logged_with_the_request_and_no_password() -> None:
    """Refused by the front door (not the wire): an absolute-form target with user info,
    an ambiguous body, headers over the front's own limit. The line names method and
    target — with a password a client put in the URL shown as ***."""

    async def main() -> None:
        logger, records = capture("test.refused_access_log.front")
        front = Front(ok)
        front.limits = dataclasses.replace(front.limits, max_header_size=1024)
        front.access_log = AccessLog("json", node="t1", logger=logger)
        server = FastHTTPServer(front, limits=LIMITS)
        port = await server.listen("127.0.0.1", 0)
        try:
            for raw in (b"GET http://bob:s3cret@a.test/abs HTTP/1.1\r\nHost: a.test\r\n\r\n",
                        b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1, 2\r\n\r\n",
                        b"GET /big HTTP/1.1\r\nHost: a.test\r\nX-B: " + b"b" * 1500 + b"\r\n\r\n"):
                got = await _closed_after(port, raw)
                assert got.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), got[:40]
            entries = [json.loads(line) for line in records.lines]
            assert [(e["status"], e["method"], e["target"]) for e in entries] == [
                (400, "GET", "http://***@a.test/abs"), (400, "POST", "/up"),
                (431, "GET", "/big")]
            assert not any("s3cret" in line for line in records.lines)
        finally:
            server.stop()
            await server.close_all_connections()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


SCHEMES = st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,8}", fullmatch=True)
USERINFO = st.text(st.characters(blacklist_characters="/?#@"), max_size=20)


@given(SCHEMES, USERINFO, st.text(max_size=40))
def test_a_logged_target_never_shows_user_info(scheme: str, userinfo: str, rest: str) -> None:
    assert shown_target(f"{scheme}://{userinfo}@{rest}") == f"{scheme}://***@{rest}"


@given(st.text(max_size=60))
def test_a_logged_target_is_shown_once_and_for_all(target: str) -> None:
    shown = shown_target(target)
    assert shown_target(shown) == shown
    if "@" not in target:
        assert shown == target
