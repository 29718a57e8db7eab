"""Streaming bodies: a bounded channel between a producer and a consumer task.

The producer (a worker's BODY frames, a client upload) `put`s chunks and is
held back once `capacity` chunks wait unread — that is the backpressure that
keeps a 1 GiB transfer's memory bounded. The consumer `read`s. Either side can
end it: `finish()` (complete), `fail(reason)` (producer broke), `cancel()`
(consumer left; `on_cancel` lets the producer stop its work, e.g. tell a worker).
One event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from node.http import Body, BodyError


class BodyChannel:
    """A `BodyStream` fed by a producer task."""

    __slots__ = (
        "_bytes",
        "_cancelled",
        "_capacity",
        "_chunks",
        "_done",
        "_error",
        "_max_bytes",
        "_on_cancel",
        "_on_read",
        "_readable",
        "_writable",
    )

    def __init__(
        self,
        capacity: int = 8,
        on_cancel: Callable[[], None] | None = None,
        on_read: Callable[[int], None] | None = None,
        max_bytes: int = 0,
    ) -> None:
        self._capacity = capacity
        # Also full at this many bytes (0: chunks only). A producer whose chunks are
        # whatever a socket read returned (up to 256 KiB on uvloop) needs it: eight of
        # those held 2 MiB per upload waiting in a queue, where 8 x 64 KiB was meant.
        self._max_bytes = max_bytes
        self._bytes = 0
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: str | None = None
        self._cancelled = False
        self._on_cancel = on_cancel
        self._on_read = on_read  # told the size of each chunk consumed (credit-based flow control)
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # -- producer side --------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def full(self) -> bool:
        return len(self._chunks) >= self._capacity or 0 < self._max_bytes <= self._bytes

    def put_nowait(self, chunk: bytes) -> None:
        """Queue a chunk without waiting (the producer does its own flow control)."""
        if self._done or self._cancelled or not chunk:
            return
        self._chunks.append(chunk)
        self._bytes += len(chunk)
        self._readable.set()
        if self.full:
            self._writable.clear()

    async def put(self, chunk: bytes) -> None:
        """Queue a chunk, waiting while the channel is full. Raises BodyError if cancelled."""
        while self.full and not self._cancelled:
            await self._writable.wait()
        if self._cancelled:
            raise BodyError("the reader went away")
        self.put_nowait(chunk)

    def finish(self) -> None:
        self._done = True
        self._readable.set()

    def fail(self, reason: str) -> None:
        if not self._done:
            self._error = reason
            self._done = True
            self._readable.set()

    # -- consumer side (BodyStream) --------------------------------------------
    async def read(self) -> bytes:
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise BodyError(self._error)
                return b""
            if self._cancelled:
                raise BodyError("cancelled")
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._bytes -= len(chunk)
        if not self.full:
            self._writable.set()
        if self._on_read is not None:
            self._on_read(len(chunk))
        return chunk

    def cancel(self) -> None:
        if self._cancelled or (self._done and not self._chunks):
            self._cancelled = True
            return
        self._cancelled = True
        self._chunks.clear()
        self._bytes = 0
        self._readable.set()
        self._writable.set()
        if self._on_cancel is not None:
            self._on_cancel()


class BodyTooLong(BodyError):
    """The body is longer than the reader's limit (not broken: only too big to hold)."""


async def read_body(body: Body, limit: int) -> bytes:
    """The whole body as bytes; BodyTooLong if it is longer than `limit`, BodyError if the
    stream broke off."""
    if isinstance(body, bytes):
        if len(body) > limit:
            raise BodyTooLong(f"body longer than {limit} bytes")
        return body
    parts: list[bytes] = []
    size = 0
    while chunk := await body.read():
        size += len(chunk)
        if size > limit:
            body.cancel()
            raise BodyTooLong(f"body longer than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class BytesStream:
    """A `BodyStream` over bytes already in memory, read in chunks of `chunk_size`."""

    __slots__ = ("_chunk_size", "_data", "_pos")

    def __init__(self, data: bytes, chunk_size: int = 256 * 1024) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk_size = chunk_size

    async def read(self) -> bytes:
        chunk = bytes(self._data[self._pos : self._pos + self._chunk_size])
        self._pos += len(chunk)
        return chunk

    def cancel(self) -> None:
        self._pos = len(self._data)
