"""A streamed upload whose request waits (for a worker, in the queue) holds a bounded
number of bytes in the node, not a bounded number of socket reads: each chunk is what a
read returned (up to 256 KiB on uvloop), so eight of them held 2 MiB per waiting upload
where 8 x 64 KiB was meant — 300 uploads queued at a 2-slot worker took 600 MB.

A Front on the fast wire on loopback; its handler takes the request and waits without
reading the body, as a request in the worker queue does; a client sends 16 MiB."""

from __future__ import annotations

import asyncio

from testkit.nodeproc import poll
from testkit.wires import serve_front

from node.body import BodyChannel
from node.front import Front, FrontLimits
from node.http import Request, Response

SIZE = 16 * 1024 * 1024


async def test_an_upload_waiting_for_a_worker_holds_at_most_its_window() -> None:
    taken: list[Request] = []
    release = asyncio.Event()

    async def waiting(request: Request) -> Response:
        taken.append(request)
        await release.wait()  # in the queue: nothing reads the body
        return Response(503)

    front = Front(waiting)
    port, stop = await serve_front(front, "fast")
    writer = None
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n\r\n".encode())
        block = b"u" * (1024 * 1024)

        async def send() -> None:
            assert writer is not None
            for _ in range(SIZE // len(block)):
                writer.write(block)
                await writer.drain()

        sending = asyncio.create_task(send())
        await poll(lambda: taken, "the request to reach the handler")
        channel = taken[0].body
        assert isinstance(channel, BodyChannel)
        await poll(lambda: channel.full, "the upload's channel to fill")
        limits = FrontLimits()
        window = limits.body_channel_chunks * limits.chunk_size
        held = sum(len(chunk) for chunk in channel._chunks)
        # Full at the window; the chunk that made it full may pass it by one read.
        assert held <= window + 256 * 1024, f"{held} bytes held for a request nobody reads"
        sending.cancel()
    finally:
        release.set()
        if writer is not None:
            writer.close()
        stop()
