"""Turn any HTTP/1.1 backend into a worker handler: a keep-alive client on asyncio.

`UpstreamClient(base_url, max_connections)` is a handler (`await client(request)`)
that forwards method, target, headers and body to the origin and returns its
answer. Responses are parsed by httptools (llhttp, in C): Tornado's
simple_httpclient proxied only ~1k req/s here. Each pooled connection is an
`asyncio.Protocol` feeding llhttp from `data_received` and waking the waiting
exchange through a future (asyncio streams cost ~3x the CPU per request). Bodies
stream both ways in chunks with backpressure (uploads wait on `pause_writing`,
downloads `pause_reading` while the reader's channel is full), so memory stays
bounded whatever their size; repeated response headers (several Set-Cookie) keep
their order. Connection refused or reset becomes a 502 with a reason, the
request's deadline a 504 (waiting for one of the `max_connections` slots counts
towards it); a cancelled request closes its connection.

A broken origin is treated as nginx's proxy module treats one: a response head
that is not valid HTTP/1.x (llhttp's strict checks: CR/LF/NUL in a value, two
Content-Lengths, Content-Length with chunked), larger than `MAX_HEAD`, with a
status outside 100-599, a Transfer-Encoding other than chunked, or a 101 we
never asked for is a 502; interim 1xx answers (100, 103) are skipped. Once the
head is out, a body that breaks (reset, bad chunk, short, silent for
`read_timeout`) fails the stream, which the worker turns into ABORT, so a
truncated body is never passed on as complete.

Connections are reused only after a complete response the origin agreed to keep
alive and nothing after it: bytes past the end of a response (a body longer than
its Content-Length, a 204 with a body, an answer nobody asked for arriving while
the connection sat idle) close the connection, so they never become the next
request's answer. A request on a reused connection that the origin had already
closed is retried once on a fresh one (the usual keep-alive race) if its method
is idempotent and its body is bytes; a POST is not resent (RFC 9110 §9.2.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

from node.body import BodyChannel
from node.http import BodyStream, Headers, Request, Response
from node.worker.deadlines import DeadlineSweep

CHUNK = 256 * 1024
READ = 64 * 1024
MAX_HEAD = 64 * 1024  # a response head (status line, headers, 1xx heads) larger is a 502
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-connection", "expect"})
_HOP_BY_HOP_B = frozenset(name.encode() for name in HOP_BY_HOP)
_DROP = HOP_BY_HOP | {"content-length"}  # request fields we never forward as they came
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_HEAD, _DONE = 1, 2  # what an exchange waits for: the response head, or all of it


class _Stale(Exception):
    """A reused connection was closed by the origin before any answer."""


class _Invalid(Exception):
    """The origin's response is not one we pass on (the reason says why): a 502."""


class _Extra(Exception):
    """Bytes came after the end of the response: raised to stop llhttp parsing them."""


class _Parse:
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
            raise _Invalid(f"response head larger than {MAX_HEAD // 1024} KiB")
        # Sorted here, once per field: hop-by-hop fields are never forwarded, and the two
        # that frame the body are kept aside (no second pass over the head for them).
        lname = name.lower()
        if lname in _HOP_BY_HOP_B:
            if lname == b"transfer-encoding":
                self.te.append(value.decode("latin-1"))
            return
        if lname == b"content-length" and self.cl is None:
            self.cl = value.decode("latin-1")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

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
            raise _Invalid("upgrade (101) without our asking") from None
        except httptools.HttpParserError as exc:
            inner = exc.__context__
            if isinstance(inner, _Extra):
                self.extra = True
                return
            if isinstance(inner, _Invalid):
                raise inner from None
            raise _Invalid(f"invalid response ({exc})") from None
        if not self.headers_done and self.fed > MAX_HEAD:
            raise _Invalid(f"response head larger than {MAX_HEAD // 1024} KiB")


class _Conn(_Parse, asyncio.Protocol):
    """One pooled connection: llhttp is fed straight from `data_received`, and the waiting
    exchange is woken through a future (no StreamReader buffer, no copies, no read task).

    Three states: idle in the pool (`active` false: any byte or close drops it), in an
    exchange (a coroutine waits on `_waiter` for the head or the whole response), or
    streaming a body into `chan` (callbacks only, no task: `pause_reading` while the
    channel is full, `read_timeout` between two reads)."""

    __slots__ = ("_drain", "_last", "_loop", "_paused", "_read_timer", "_waiter", "_want",
                 "active", "chan", "chunked", "client", "content_length", "error", "lost",
                 "lost_exc", "reused", "transport", "write_paused")

    def __init__(self, client: UpstreamClient, loop: asyncio.AbstractEventLoop) -> None:
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
        self._want = _HEAD
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
        except _Invalid as exc:
            self._fail(exc)
            return
        chan = self.chan
        if chan is not None:
            self._stream_more(chan)
        elif self._waiter is not None and (self.done or (self.headers_done
                                                         and self._want == _HEAD)):
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
            with contextlib.suppress(ValueError):
                self.client._idle.remove(self)
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
        """Until the head (`_HEAD`) or the whole response (`_DONE`) is in; raises why not."""
        while True:
            error = self.error
            if isinstance(error, _Invalid):
                raise error  # whatever was parsed (a 101 "completes"), the response is refused
            if self.done or (want == _HEAD and self.headers_done):
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
        with contextlib.suppress(ValueError):
            self.client._idle.remove(self)
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
            self._stream_end(self.error if isinstance(self.error, _Invalid) else self.lost_exc)
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
            self.client._release(self, self.keep_alive and not self.extra)
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
            self.client._release(self, False)

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
            self.client._release(self, False)
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
        self.client._release(self, False)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None


class UpstreamClient:
    """A handler forwarding requests to the HTTP/1.1 origin at `base_url`."""

    def __init__(self, base_url: str, max_connections: int = 32, *,
                 connect_timeout: float = 5.0, default_timeout: float = 30.0,
                 read_timeout: float = 60.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT][/PREFIX], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.authority = url.netloc
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self.read_timeout = read_timeout  # between two reads of a streamed body
        self._max = max_connections
        self._idle: list[_Conn] = []
        # Slots (at most max_connections exchanges or streams at once): a counter and the
        # futures of those waiting for one; cheaper than asyncio.Semaphore per request.
        self._busy = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        # Deadlines of the requests in flight: one timer for all (node.worker.deadlines).
        self._deadlines = DeadlineSweep()

    async def __call__(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        wait = (request.deadline - time.monotonic() if request.deadline
                else self.default_timeout)
        deadline = self._deadlines.start(loop, asyncio.current_task(),
                                         loop.time() + max(0.001, wait))
        held = False  # this call holds a slot (until an exchange hands it to its response)
        retry = request.method in IDEMPOTENT and isinstance(request.body, bytes)
        try:
            if self._busy < self._max:
                self._busy += 1
            else:
                await self._acquire(loop)
            held = True
            for attempt in (0, 1):
                conn = await self._get(loop, fresh=attempt > 0)
                try:
                    resp = await self._exchange(conn, request)
                except _Stale:
                    conn.abort()
                    if not retry:
                        break
                    continue
                except BaseException:
                    conn.abort()  # timeouts and cancellation too: no socket is left behind
                    raise
                held = False  # released with the connection now (at once, or by the stream)
                return resp
            return Response.error(502, f"upstream {self.authority} closed the connection "
                                       "before answering")
        except asyncio.CancelledError:
            # Ours if the deadline fired and nobody else cancelled the task as well.
            if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
                return Response.error(504, f"upstream {self.authority} did not answer in time")
            raise
        except TimeoutError:  # connect_timeout
            return Response.error(504, f"upstream {self.authority} did not answer in time")
        except ConnectionRefusedError:
            return Response.error(502, f"upstream {self.authority} refused the connection")
        except _Invalid as exc:
            return Response.error(502, f"upstream {self.authority} sent {exc}")
        except (OSError, EOFError) as exc:
            return Response.error(502, f"upstream {self.authority} failed: "
                                       f"{type(exc).__name__} {exc}".strip())
        finally:
            self._deadlines.end(deadline)
            if held:
                self._free_slot()

    async def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    # -- inside ----------------------------------------------------------------
    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed a slot just as we were cancelled: pass it on
            raise

    def _free_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the waiter; _busy stays
                return
        self._busy -= 1

    async def _get(self, loop: asyncio.AbstractEventLoop, fresh: bool) -> _Conn:
        idle = self._idle
        while idle and not fresh:
            conn = idle.pop()
            if conn.clean():
                conn.reused = True
                return conn
            conn.abort()
        conn = _Conn(self, loop)
        async with asyncio.timeout(self.connect_timeout):
            await loop.create_connection(lambda: conn, self.host, self.port)
        return conn

    def _release(self, conn: _Conn, reusable: bool) -> None:
        """The exchange (or its stream) is over: the slot is free, the connection pooled
        if it is clean, else closed."""
        self._free_slot()
        conn.active = False
        if reusable and len(self._idle) < self._max and conn.clean():
            self._idle.append(conn)
        else:
            conn.close()

    def _head(self, request: Request) -> bytes:
        rh = request.headers
        named = rh.get_all("Connection")
        drop = _DROP if not named else _DROP | {
            v.strip().lower() for v in named for v in v.split(",")}
        body = request.body
        lines = [f"{request.method} {self.prefix}{request.target} HTTP/1.1\r\n"]
        if "host" not in rh or "host" in drop:
            lines.append(f"Host: {self.authority}\r\n")
        lines += [f"{k}: {v}\r\n" for k, v in rh if k.lower() not in drop]
        if not isinstance(body, bytes):
            sent_length = rh.get("Content-Length")
            lines.append(f"Content-Length: {sent_length}\r\n" if sent_length else
                         "Transfer-Encoding: chunked\r\n")
        elif body or request.method not in _NO_BODY_METHODS:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def _exchange(self, conn: _Conn, request: Request) -> Response:
        """One request on `conn`: on success the connection is released (or handed to the
        response's stream); on any exception the caller closes it."""
        body = request.body
        head = self._head(request)
        transport = conn.transport
        assert transport is not None
        conn.begin()
        try:
            if isinstance(body, bytes):
                # One write, one send() for a small body.
                if not body:
                    transport.write(head)
                elif len(body) <= READ:
                    transport.write(head + body)
                else:
                    transport.write(head)
                    transport.write(body)
            else:
                transport.write(head)
                await self._send_stream(conn, body,
                                        chunked=not request.headers.get("Content-Length"))
            await conn.wait(_HEAD)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused and not conn.got_bytes and isinstance(body, bytes):
                raise _Stale() from exc
            raise
        parser = conn.parser
        assert parser is not None
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise _Invalid(f"status {status}, outside 100-599")
        te = ",".join(conn.te)
        if te and te.strip().lower() != "chunked":
            raise _Invalid(f"Transfer-Encoding {te[:40]!r}, not chunked")  # nginx: the same
        out = Headers(conn.headers)  # hop-by-hop fields were left out while parsing
        if request.method == "HEAD" or status in (204, 304):
            # No body, whatever the head says; bytes after the head keep the connection out
            # of the pool (for a HEAD, llhttp takes them for a body).
            if conn.done:
                keep = conn.keep_alive and not conn.extra
            else:
                keep = parser.should_keep_alive() and not conn.body and conn.error is None
            self._release(conn, keep)
            return Response(status, out, b"")
        length = None
        if conn.cl is not None:
            with contextlib.suppress(ValueError):
                length = int(conn.cl)
        if not conn.done and length is not None and length <= CHUNK:
            # Small bodies of known length are read here: one frame, no channel.
            await conn.wait(_DONE)
        if conn.done:
            data = b"".join(conn.body) if len(conn.body) != 1 else conn.body[0]
            self._release(conn, conn.keep_alive and not conn.extra)
            return Response(status, out, data)
        conn.content_length, conn.chunked = length, bool(te)
        chan = BodyChannel(8, on_cancel=conn.on_chan_cancel, on_read=conn.on_chan_read)
        conn.stream(chan)
        return Response(status, out, chan)

    async def _send_stream(self, conn: _Conn, body: BodyStream, chunked: bool) -> None:
        transport = conn.transport
        assert transport is not None
        while chunk := await body.read():
            conn.check()
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()  # bounded memory: wait for the socket before reading more
        conn.check()
        if chunked:
            transport.write(b"0\r\n\r\n")

