"""A response body streamed to the client while the cache keeps a copy of it.

The cache stage stores a streamed answer only once it is complete: `TeeBody`
hands every chunk on at once (no added latency) and collects at most `limit`
bytes beside it. A body that grows past the limit is still streamed, just not
kept; one that breaks, or a client that leaves, ends the collecting too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from node.http import BodyStream


@dataclass(slots=True)
class TeeBody:
    """A BodyStream passing chunks to the client while keeping a copy of at most `limit` bytes."""

    _inner: BodyStream
    _limit: int
    _on_complete: Callable[[bytes], None]
    _on_abort: Callable[[], None]
    _parts: list[bytes] | None = field(default_factory=list)
    _size: int = 0
    _ended: bool = False

    async def read(self) -> bytes:
        try:
            chunk = await self._inner.read()
        except BaseException:
            self._abort()
            raise
        if chunk:
            if self._parts is not None:
                self._size += len(chunk)
                if self._size > self._limit:
                    self._abort()  # too large to store: stop collecting, keep streaming
                else:
                    self._parts.append(chunk)
        elif not self._ended and self._parts is not None:
            self._ended = True
            body, self._parts = b"".join(self._parts), None
            self._on_complete(body)
        return chunk

    def cancel(self) -> None:
        self._abort()
        self._inner.cancel()

    def _abort(self) -> None:
        if not self._ended:
            self._ended = True
            self._parts = None
            self._on_abort()
