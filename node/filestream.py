"""A file's bytes as a streamed body: the static stage's answers too large to read at once."""

from __future__ import annotations

import asyncio
import os
import weakref


class FileStream:
    """A `BodyStream` over `length` bytes of an open file from `offset`.

    Each chunk is read with pread in the default executor, so a slow disk never
    blocks the event loop. Owns the descriptor: closed at the end, on cancel,
    or when the stream is dropped unread."""

    def __init__(self, fd: int, offset: int, length: int, chunk_size: int) -> None:
        self._fd = fd
        self._pos = offset
        self._left = length
        self._chunk = chunk_size
        self._reading = False
        self._closed = False
        self._finalizer = weakref.finalize(self, os.close, fd)

    async def read(self) -> bytes:
        if self._closed or self._left <= 0:
            self._close()
            return b""
        n = min(self._chunk, self._left)
        self._reading = True
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                None, os.pread, self._fd, n, self._pos
            )
        finally:
            self._reading = False
        if self._closed:  # cancelled while the read was in the executor
            self._finalizer()
            return b""
        if not data:  # the file shrank under us: end early rather than hang
            self._close()
            return b""
        self._pos += len(data)
        self._left -= len(data)
        if self._left <= 0:
            self._close()
        return data

    def cancel(self) -> None:
        self._close()

    def _close(self) -> None:
        self._closed = True
        if not self._reading:  # else read() closes it when the executor returns
            self._finalizer()
