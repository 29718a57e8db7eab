"""`UpstreamClient`'s flow control and clean-up, on real sockets, on asyncio's loop and on
uvloop (what `scale0 worker` runs): an upload is read from its source only as fast as the
origin takes it, a streamed response only as fast as its reader takes it, and a request
cancelled anywhere (waiting for a slot, for the answer, in the middle of a body) leaves no
socket, task or slot behind."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
from testkit.hostileorigin import HostileOrigin
from testkit.nodeproc import poll

from node.body import BodyChannel
from node.http import Headers, Request
from node.worker.upstream import UpstreamClient

pytestmark = pytest.mark.timeout(60)
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
Main = Callable[[HostileOrigin, UpstreamClient], Awaitable[None]]
LEAD = 32 << 20  # bytes one side may be ahead of the other: kernel and transport buffers


def req(target: str, method: str = "GET", body: Any = b"", deadline: float = 0.0,
        headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, target, Headers(headers or []), body, deadline=deadline)


def open_sockets() -> int:
    """Sockets only: libuv keeps a /dev/null descriptor from a server's first accept on."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # the listing's own descriptor, closed since
    return count


def run(loop: str, main: Main, conns: int = 1) -> None:
    """Run `main` with a fresh HostileOrigin and client on `loop`; afterwards the client
    still serves (its slots came back) and nothing is left open."""
    async def outer() -> None:
        fds = open_sockets()
        tasks = len(asyncio.all_tasks())
        origin = HostileOrigin()
        port = await origin.start()
        client = UpstreamClient(f"http://127.0.0.1:{port}", conns)
        try:
            await main(origin, client)
            for _ in range(conns + 1):
                ok = await client(req("/ok"))
                assert (ok.status, ok.body) == (200, b"ok"), "the client stopped serving"
        finally:
            await client.close()
        await poll(lambda: origin.open_conns == 0, "the origin's connections to close")
        await poll(lambda: len(asyncio.all_tasks()) <= tasks, "no task left")
        await origin.close()
        await poll(lambda: open_sockets() <= fds, "no socket left open")

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(outer(), 45))


class CountingUpload:
    """A BodyStream of `total` bytes that checks, at each read, that it is never more than
    LEAD bytes ahead of what the origin has read: without write backpressure the client
    would pull all of it at once (nothing here ever waits) and buffer it."""

    def __init__(self, total: int, received: Callable[[], int]) -> None:
        self.total, self.produced, self.received = total, 0, received
        self.max_lead = 0
        self.block = b"u" * (256 * 1024)

    async def read(self) -> bytes:
        lead = self.produced - self.received()
        self.max_lead = max(self.max_lead, lead)
        assert lead <= LEAD, f"the upload ran {lead} bytes ahead of the origin"
        if self.produced >= self.total:
            return b""
        self.produced += len(self.block)
        return self.block

    def cancel(self) -> None:
        self.produced = self.total


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_an_upload_is_read_only_as_fast_as_the_origin_takes_it(loop: str, length: bool) -> None:
    total = 160 << 20
    received = 0

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        chunked = b"chunked" in head.lower()
        end = b"0\r\n\r\n"
        tail = b""
        while True:  # bounded by the upload's size: the client stops at `total`
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)
            tail = (tail + data)[-5:]
            if (chunked and tail == end) or (not chunked and received >= total):
                break
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d"
                     % (len(str(received)), received))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(origin, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}", 2)
        try:
            up = CountingUpload(total, lambda: received)
            headers = [("Content-Length", str(total))] if length else []
            r = await client(req("/up", "PUT", up, headers=headers))
            assert r.status == 200, r.body
            assert int(r.body) >= total  # type: ignore[arg-type]
            assert up.produced == total and 0 < up.max_lead <= LEAD
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main(), 45))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_streamed_response_is_read_only_as_fast_as_it_is_consumed(loop: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        r = await client(req("/huge"))  # 1 GiB, written as fast as the client takes it
        assert r.status == 200 and isinstance(r.body, BodyChannel)
        consumed = 0
        for _ in range(200):
            consumed += len(await r.body.read())
            # A slow reader: the loop runs, the origin writes; without pause_reading the
            # client would keep reading it all into the channel.
            for _ in range(10):
                await asyncio.sleep(0)
            assert origin.sent - consumed <= LEAD, (origin.sent, consumed)
        r.body.cancel()  # the reader leaves: the connection closes, the slot comes back

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancelled_request_leaves_no_socket_and_no_slot(loop: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        waiting = asyncio.create_task(client(req("/silent")))
        await poll(lambda: origin.seen["silent"] == 1, "the origin to get the request")
        queued = asyncio.create_task(client(req("/silent")))  # one connection: waits
        # Its deadline passes while it waits for the slot: a 504, not a wait for ever.
        late = await client(req("/silent", deadline=time.monotonic() + 0.2))
        assert late.status == 504, late.body
        queued.cancel()
        waiting.cancel()
        for task in (queued, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert origin.seen["silent"] == 1  # the queued ones never reached it
        await poll(lambda: origin.open_conns == 0, "the cancelled request's connection")

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_keep_alive_heads_and_small_bodies_on_either_loop(loop: str) -> None:
    async def main(origin: HostileOrigin, client: UpstreamClient) -> None:
        for path in ("ok", "interim", "long", "nocontent", "ok"):
            r = await client(req(f"/{path}"))
            assert r.status in (200, 204) and r.body in (b"ok", b"")
        head = await client(req("/ok", "HEAD"))
        assert (head.status, head.body) == (200, b"")
        r = await client(req("/ok"))  # after a HEAD, on a parser that expects no body
        assert (r.status, r.body) == (200, b"ok")
        assert len(client._idle) == 1
        # An idle connection keeps nothing of the answer it carried (a few MiB each, 64
        # connections: a worker's memory after a spike, see node.heaptrim).
        assert client._idle[0].body == []

    run(loop, main)
