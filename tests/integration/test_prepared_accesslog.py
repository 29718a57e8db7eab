"""The access line of a prepared answer is the slow path's line for the same request, but
for its duration: request fields the log was asked for included (credentials redacted),
for cache hits and static files, as text and as JSON (real fast wire on loopback)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest
from integration.test_fasthit import Clock, Origin, exchange, get, serve
from integration.test_staticfast import files, start, stop

from node.accesslog import AccessLog
from node.cachestage import CacheStage
from node.fastwire import new_event_loop
from node.front import Front

pytestmark = pytest.mark.timeout(60)

WALL = 1_790_000_000.25
FIELDS = ("User-Agent: curl/8.5 (x86_64)\r\nAuthorization: Bearer s3cret-token\r\n"
          "X-Trace: one\r\nx-trace:  two \r\nCookie: id=s3cret-cookie\r\n")
ASKED = ("User-Agent", "Authorization", "X-Trace", "Cookie", "Host", "X-Absent")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def access_log(fmt: str) -> tuple[AccessLog, Lines]:
    logger = logging.getLogger(f"test.prepared.access.{fmt}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lines = Lines()
    logger.handlers = [lines]
    return AccessLog(fmt, node="n1", extra_headers=ASKED, logger=logger,
                     wall=lambda: WALL), lines


def without_duration(line: str) -> str:
    if line.startswith("{"):
        record = json.loads(line)
        del record["duration_ms"]
        return json.dumps(record)
    return re.sub(r" \d+\.\dms ", " - ", line)


def request(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: Example.com\r\nX-Request-Id: r-1\r\n{FIELDS}"
            "\r\n").encode()


def check(lines: list[str], slow: int, fast: int, outcome: str) -> None:
    assert without_duration(lines[fast]) == without_duration(lines[slow])
    assert "s3cret" not in "\n".join(lines)  # redacted, as the slow path does
    text = lines[fast]
    for piece in ("curl/8.5", "one,", "two", "[redacted]", outcome, "r-1", "example.com"):
        assert piece in text, (piece, text)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_prepared_hit_is_logged_as_the_slow_hit(fmt: str) -> None:
    async def scenario(port: int, stage: CacheStage, origin: Origin, clock: Clock,
                       front: Front) -> None:
        access, lines = access_log(fmt)
        front.access_log = stage.hits.access = access
        await exchange(port, get("/a"))  # a miss, stored (a request with Authorization
        # is not stored for: RFC 9111 §3.5; a stored answer serves it all the same)
        await exchange(port, request("/a"))  # a slow hit, offered
        hits = stage.counts["hit"]
        await exchange(port, request("/a"))  # prepared
        assert stage.counts["hit"] == hits + 1 and len(lines.lines) == 3
        check(lines.lines, 1, 2, "hit")

    serve(scenario)


def test_a_prepared_file_is_logged_as_the_slow_one(tmp_path: Path) -> None:
    async def main() -> None:
        site = await start(files(tmp_path))
        try:
            access, lines = access_log("text")
            site.front.access_log = site.statics.access = access
            for _ in range(2):  # slow and offered, then prepared
                await exchange(site.port, request("/s/logo.png"))
            assert site.statics.served == 1
            check(lines.lines, 0, 1, "static")
        finally:
            await stop(site)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
