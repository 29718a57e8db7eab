"""One pooled connection to an HTTP/1.1 origin, and the parse of one response on it.

node.worker.upstream's client keeps these in its pool. Each is an `asyncio.Protocol`:
llhttp (httptools) is fed straight from `data_received` and the waiting exchange is
woken through a future — no StreamReader buffer, no copies, no read task (asyncio
streams cost about three times the CPU per request). What a broken origin can do to
a response (see node.worker.upstream's docstring) is refused here, as `Invalid`.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol, cast

import httptools

from node.body import BodyChannel

MAX_HEAD: Final = 64 * 1024  # a response head (status line, headers, 1xx heads) larger is a 502
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-connection", "expect"})
_HOP_BY_HOP_B: Final = frozenset(name.encode() for name in HOP_BY_HOP)
WANT_HEAD, WANT_ALL = 1, 2  # what an exchange waits for: the response head, or all of it


class Pool(Protocol):
    """What a connection needs of the client that pools it."""

    read_timeout: float  # between two reads of a streamed body
    authority: str  # for the reasons in failures

    def release(self, conn: PooledConnection, reusable: bool) -> None: ...

    def forget(self, conn: PooledConnection) -> None: ...  # out of the idle list, if there


class Stale(Exception):
    """A reused connection was closed by the origin before any answer."""


class Invalid(Exception):
    """The origin's response is not one we pass on (the reason says why): a 502."""


class _Extra(Exception):
    """Bytes came after the end of the response: raised to stop llhttp parsing them."""


_END_TO_END, _CONTENT_LENGTH, _TRANSFER_ENCODING, _HOP = range(4)
_NAMES: Final[dict[bytes, tuple[str, int]]] = {}  # a field name as it came → (its text, its kind)
_NAMES_KEPT = 512  # an origin's names repeat; a hostile one's random names clear the cache


def _name(name: bytes) -> tuple[str, int]:
    """What `name` is to a proxy (`_NAMES` caches it): an origin sends the same few names
    on every response, and their lower-casing and decoding were most of a field's cost."""
    lname = name.lower()
    kind = (_CONTENT_LENGTH if lname == b"content-length" else
            _TRANSFER_ENCODING if lname == b"transfer-encoding" else
            _HOP if lname in _HOP_BY_HOP_B else _END_TO_END)
    if len(_NAMES) >= _NAMES_KEPT:
        _NAMES.clear()
    known = _NAMES[name] = (name.decode("latin-1"), kind)
    return known


class ResponseParse:
    """httptools callbacks: collect status, headers and body pieces of one response."""

    __slots__ = ("body", "cl", "done", "extra", "fed", "got_bytes", "head_bytes", "headers",
                 "headers_done", "interim", "keep_alive", "parser", "te")

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[str, str]] = []  # the end-to-end fields, in order
        self.te: list[str] = []  # Transfer-Encoding values (hop-by-hop: not in `headers`)
        self.cl: str | None = None  # the first Content-Length
        self.body: list[bytes] = []
        self.headers_done = False
        self.done = False
        self.got_bytes = False
        self.keep_alive = False
        self.extra = False  # bytes followed the response: the connection is not reusable
        self.interim = False  # inside a 1xx head, which is skipped
        self.head_bytes = 0  # bytes of header fields in the final head
        self.fed = 0  # raw bytes fed before the final head ended (1xx heads included)

    def on_message_begin(self) -> None:
        if self.done:
            raise _Extra()  # a second response in the same read: never part of this one

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field: not forwarded (the head has gone out already)
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            raise Invalid(f"response head larger than {MAX_HEAD // 1024} KiB")
        # Sorted here, once per field: hop-by-hop fields are never forwarded, and the two
        # that frame the body are kept aside (no second pass over the head for them).
        known = _NAMES.get(name)
        if known is None:
            known = _name(name)
        text, kind = known
        if kind == _END_TO_END:
            self.headers.append((text, value.decode("latin-1")))
        elif kind == _CONTENT_LENGTH:
            if self.cl is None:
                self.cl = value.decode("latin-1")
            self.headers.append((text, value.decode("latin-1")))
        elif kind == _TRANSFER_ENCODING:
            self.te.append(value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code() if self.parser is not None else 0
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            self.headers.clear()
            self.te.clear()
            self.cl = None
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(bytes(body))

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        # Asked now: llhttp resets its flags once the message is complete.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()
        self.done = True

    def feed(self, data: bytes) -> None:
        """Feed `data` to llhttp; callback exceptions come back as themselves."""
        assert self.parser is not None
        if self.extra:
            return  # the response ended before these; the connection will be closed
        if not self.headers_done:
            self.fed += len(data)  # bounds partial lines httptools buffers, and 1xx floods
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise Invalid("upgrade (101) without our asking") from None
        except httptools.HttpParserError as exc:
            inner = exc.__context__
            if isinstance(inner, _Extra):
                self.extra = True
                return
            if isinstance(inner, Invalid):
                raise inner from None
            raise Invalid(f"invalid response ({exc})") from None
        if not self.headers_done and self.fed > MAX_HEAD:
            raise Invalid(f"response head larger than {MAX_HEAD // 1024} KiB")


class PooledConnection(ResponseParse, asyncio.Protocol):
    """One pooled connection: llhttp is fed straight from `data_received`, and the waiting
    exchange is woken through a future (no StreamReader buffer, no copies, no read task).

    Three states: idle in the pool (`active` false: any byte or close drops it), in an
    exchange (a coroutine waits on `_waiter` for the head or the whole response), or
    streaming a body into `chan` (callbacks only, no task: `pause_reading` while the
    channel is full, `read_timeout` between two reads)."""

    __slots__ = ("_drain", "_last", "_loop", "_paused", "_read_timer", "_waiter", "_want",
                 "active", "chan", "chunked", "client", "content_length", "error", "lost",
                 "lost_exc", "reused", "transport", "write_paused")

    def __init__(self, client: Pool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.client = client
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.active = False
        self.lost = False
        self.lost_exc: Exception | None = None  # what connection_lost was told
        self.error: BaseException | None = None  # why the exchange cannot go on
        self._waiter: asyncio.Future[None] | None = None
        self._want = WANT_HEAD
        self._drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self.chan: BodyChannel | None = None
        self._paused = False  # reading held back: the channel is full
        self._read_timer: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last read while streaming
        self.content_length: int | None = None  # of the body being streamed
        self.chunked = False

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            # Nobody asked: an answer arriving while the connection sat idle (or after the
            # exchange gave up) must never become the next request's answer.
            self._drop()
            return
        self.got_bytes = True
        if self.error is not None:
            return  # already failed: the exchange closes the connection
        try:
            self.feed(data)
        except Invalid as exc:
            self._fail(exc)
            return
        chan = self.chan
        if chan is not None:
            self._stream_more(chan)
        elif self._waiter is not None and (self.done or (self.headers_done
                                                         and self._want == WANT_HEAD)):
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed origin connection is of no use

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc
        if self.chan is not None:
            self._stream_end(exc)
        elif self.active:
            if exc is None:
                exc = ConnectionResetError("closed before the response headers"
                                           if not self.headers_done else
                                           "closed in the middle of the response body")
            self._fail(exc)
        else:
            self.error = self.error or ConnectionResetError("closed while idle")
            self.client.forget(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # the upload's check() raises why

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- the exchange's side -------------------------------------------------------
    def begin(self) -> None:
        """Start an exchange: a fresh parse state (a fresh parser unless the last
        response ended cleanly, e.g. a HEAD's llhttp still expects the body)."""
        reuse = self.done and not self.extra and self.parser is not None
        self.reset()
        if not reuse:
            self.parser = httptools.HttpResponseParser(self)
        self.active = True

    def clean(self) -> bool:
        """Open and nothing unread: bytes after a complete response (or while the connection
        sat idle) were never asked for, and must not answer the next request."""
        return not self.lost and self.error is None and not self.extra

    async def wait(self, want: int) -> None:
        """Until the head (`WANT_HEAD`) or the whole response (`WANT_ALL`) is in; raises why not."""
        while True:
            error = self.error
            if isinstance(error, Invalid):
                raise error  # whatever was parsed (a 101 "completes"), the response is refused
            if self.done or (want == WANT_HEAD and self.headers_done):
                return  # a close right after what we wait for is no failure (yet)
            if error is not None:
                raise error
            # Woken with a result, never an exception: a waiter whose task was cancelled
            # meanwhile would log "exception never retrieved"; the loop re-checks `error`.
            self._want = want
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def check(self) -> None:
        """Raise if the connection can no longer carry the exchange (during an upload)."""
        if self.error is not None:
            raise self.error
        if self.lost:
            raise ConnectionResetError("closed during the upload")

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark: an upload is
        read from its source only as fast as the origin takes it."""
        while self.write_paused:
            self.check()  # also after connection_lost, which leaves write_paused as it was
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.chan is not None:
            self._stream_end(exc)
            return
        if self.error is None:
            self.error = exc
        self._wake()
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()  # nothing more is wanted from this connection

    def _drop(self) -> None:
        """Out of the pool and closed (idle, or nobody waits for what comes)."""
        self.active = False
        self.error = self.error or ConnectionResetError("dropped")
        self.client.forget(self)
        self.abort()

    def close(self) -> None:
        self.active = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, unsent bytes dropped: nothing is left behind (timeouts, cancellation)."""
        self.active = False
        self._cancel_read_timer()
        if self.transport is not None:
            self.transport.abort()

    # -- streaming a body ----------------------------------------------------------
    def stream(self, chan: BodyChannel) -> None:
        """Feed the rest of the response body into `chan` from the protocol's callbacks."""
        self.chan = chan
        self._stream_more(chan)
        if self.chan is None:
            return  # already complete
        if self.error is not None or self.lost:
            # Broke or closed between the head and now (a clean close may end the body).
            self._stream_end(self.error if isinstance(self.error, Invalid) else self.lost_exc)
            return
        self._last = self._loop.time()
        self._read_timer = self._loop.call_at(self._last + self.client.read_timeout,
                                              self._read_check)

    def _stream_more(self, chan: BodyChannel) -> None:
        pieces = self.body
        if pieces:
            self.body = []
            for piece in pieces:
                chan.put_nowait(piece)
        if self.done:
            self.chan = None
            chan.finish()
            self._cancel_read_timer()
            self.client.release(self, self.keep_alive and not self.extra)
        elif chan.full and not self._paused and self.transport is not None:
            # Backpressure: the kernel buffers fill and the origin stops sending.
            self._paused = True
            self.transport.pause_reading()
        else:
            self._last = self._loop.time()

    def on_chan_read(self, _size: int) -> None:
        chan = self.chan
        if self._paused and chan is not None and not chan.full and not self.lost:
            self._paused = False
            self._last = self._loop.time()
            if self.transport is not None:
                self.transport.resume_reading()
            if self._read_timer is None:
                self._read_timer = self._loop.call_at(self._last + self.client.read_timeout,
                                                      self._read_check)

    def on_chan_cancel(self) -> None:
        """The reader went away: the rest of the body is unwanted, the connection too."""
        if self.chan is not None:
            self.chan = None
            self.abort()
            self.client.release(self, False)

    def _read_check(self) -> None:
        """nginx's proxy_read_timeout: an origin silent for `read_timeout` between two reads
        fails the stream (the request's deadline no longer applies once the head went out).
        One timer per stream, moved on lazily rather than re-armed on every read; none while
        reading is paused for the reader."""
        self._read_timer = None
        chan = self.chan
        if chan is None or self._paused:
            return
        timeout = self.client.read_timeout
        due = self._last + timeout
        if self._loop.time() >= due - 0.002:
            self.chan = None
            chan.fail(f"upstream {self.client.authority} sent nothing for {timeout:g} s "
                      "in the middle of the response")
            self.abort()
            self.client.release(self, False)
        else:
            self._read_timer = self._loop.call_at(due, self._read_check)

    def _stream_end(self, exc: BaseException | None) -> None:
        """The connection closed or the body broke while streaming: fail the stream, so a
        truncated body is never passed on as complete."""
        chan = self.chan
        if chan is None:
            return
        self.chan = None
        if exc is None and self.content_length is None and not self.chunked:
            chan.finish()  # a body delimited by the connection's end (RFC 9112 §6.3)
        else:
            name = type(exc).__name__ if exc is not None else "ConnectionResetError"
            chan.fail(f"upstream {self.client.authority} broke off the response: {name}")
        self.abort()
        self.client.release(self, False)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
