"""The node's own CPU per request, in one process, against the floor in the same run.

    python -m bench request [--requests N] [--rounds R]

No sockets and no other process: a request's bytes are handed to the fast wire's
protocol (node.fastproto.WireProtocol) over an in-memory transport, answered by
node.front.Front and node.pipeline.Pipeline with a dispatcher that returns 1 KiB
from memory, and the answer's bytes are taken back. So the figure is what the node
itself spends on a request — llhttp, the exchange (these GETs take the fast wire's
lane, node.fastproto.Lane), the pipeline, proxy headers, the response head — without
the kernel, wrk or a worker, and it moves
much less with the machine's load than a wrk run (min of R rounds of CPU time).

Rows: wrk's request (Host only) and a browser's (bench.tools.BROWSER_HEADERS, 13
fields), each without and with the cache stage (a no-store answer, the miss path), the
miss path once more with the access log on (text lines into a buffer, as the node
writes them), and once without the lane (the Tornado-shaped exchange every request took
before it, and requests with a body or a mounted app still take);
the reference is the floor any Python server on this loop pays: an asyncio.Protocol
feeding llhttp and answering the same bytes. Ratios are against that floor.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable
from typing import Any

import httptools
import uvloop

from bench.tools import BROWSER_HEADERS

BODY = b"x" * 1024
ANSWER_FIELDS = [("Content-Type", "text/plain"), ("Cache-Control", "no-store"),
                 ("Date", "Fri, 27 Nov 2026 21:00:00 GMT")]


class _Transport(asyncio.Transport):
    """Takes what the protocol writes and wakes the driver; everything else is a no-op."""

    def __init__(self, written: asyncio.Event) -> None:
        super().__init__()
        self.written = written
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.set()

    def writelines(self, data: Iterable[Any]) -> None:
        self.written.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


class _Floor(asyncio.Protocol):
    """The reference: llhttp on asyncio.Protocol, the same answer built once."""

    ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n"
              + BODY)

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(self.ANSWER)


def _node_protocol(cache: bool, logged: bool = False, lane: bool = True) -> asyncio.Protocol:
    from cache.memory import MemoryStore
    from node.cacheconfig import CacheConfig
    from node.cachestage import CacheStage
    from node.fastproto import WireProtocol
    from node.fastwire import FastHTTPServer
    from node.front import Front
    from node.http import Headers, Request, Response
    from node.pipeline import Pipeline
    from node.services import ServiceMap

    class Memory:
        async def dispatch(self, service: str, request: Request) -> Response:
            return Response(200, Headers(ANSWER_FIELDS), BODY)

    stages = [CacheStage(MemoryStore(), CacheConfig(), node_id="bench")] if cache else []
    pipeline = Pipeline([], ServiceMap.from_specs(()), stages, Memory(), "bench")
    front = Front(pipeline.handle)
    if logged:  # as operators run: a text line per request into the node's line buffer
        from node.accesslog import AccessLog
        lines: list[str] = []
        front.access_log = AccessLog("text", node="bench", sink=lines.append)
    server = FastHTTPServer(front)
    if not lane:  # the way a request the lane does not take goes (a body, a mounted app)
        server.lane = None
    return WireProtocol(server)


async def _cost(protocol: asyncio.Protocol, request: bytes, n: int, rounds: int) -> float:
    """Best CPU µs per request over `rounds` rounds of `n` requests, one at a time."""
    written = asyncio.Event()
    protocol.connection_made(_Transport(written))
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            written.clear()
            protocol.data_received(request)
            await written.wait()
            await asyncio.sleep(0)  # let the exchange finish behind its answer
        best = min(best, (time.process_time() - start) / n * 1e6)
    protocol.connection_lost(None)  # as a closed connection: its task ends
    await asyncio.sleep(0)
    return best


async def run(n: int, rounds: int) -> None:
    heads = {"wrk (Host only)": "", "browser (13 fields)":
             "".join(f"{h}\r\n" for h in BROWSER_HEADERS)}
    print(f"{'request':22s} {'path':28s} {'µs/req':>8s} {'/ floor':>8s}")
    for label, extra in heads.items():
        request = f"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n".encode()
        floor = await _cost(_Floor(), request, n, rounds)
        print(f"{label:22s} {'floor: Protocol + llhttp':28s} {floor:8.1f} {1.0:8.2f}")
        for name, cache, logged, lane in (
                ("node, no cache stage", False, False, True),
                ("node, miss (no-store)", True, False, True),
                ("node, miss, access log on", True, True, True),
                ("node, miss, no lane", True, False, False)):
            cost = await _cost(_node_protocol(cache, logged, lane), request, n, rounds)
            print(f"{label:22s} {name:28s} {cost:8.1f} {cost / floor:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench request", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="per round (default 5000)")
    ap.add_argument("--rounds", type=int, default=5, help="the best one counts (default 5)")
    args = ap.parse_args()
    uvloop.run(run(max(100, args.requests), max(1, args.rounds)))


if __name__ == "__main__":
    main()
