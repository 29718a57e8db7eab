"""A client that leaves before any answer began is logged like nginx's 499, on both wires."""

from __future__ import annotations

import asyncio
import json

import pytest
from testkit.logcapture import capture
from testkit.wires import serve_front

from node.accesslog import AccessLog
from node.fastwire import new_event_loop
from node.front import Front
from node.http import Request, Response


@pytest.mark.parametrize("wire", ["fast", "tornado"])
def test_a_client_that_leaves_before_the_answer_is_logged_499(wire: str) -> None:
    async def main() -> None:
        logger, records = capture(f"test.client_closed.{wire}")
        reached, cancelled = asyncio.Event(), asyncio.Event()

        async def slow(request: Request) -> Response:
            reached.set()
            try:
                await asyncio.Event().wait()  # a backend that takes forever
            finally:
                cancelled.set()
            raise AssertionError("unreachable")

        front = Front(slow)
        front.access_log = AccessLog("json", node="t1", logger=logger)
        port, stop = await serve_front(front, wire)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n")
            await asyncio.wait_for(reached.wait(), 10)
            writer.close()
            await asyncio.wait_for(cancelled.wait(), 10)  # the pipeline was cancelled
            (line,) = records.lines
            entry = json.loads(line)
            assert (entry["status"], entry["outcome"]) == (499, "client-closed")
            assert (entry["method"], entry["target"]) == ("GET", "/slow")
        finally:
            stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
