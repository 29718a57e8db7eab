"""Turn any HTTP/1.1 backend into a worker handler: a keep-alive client on asyncio.

`UpstreamClient(base_url, max_connections)` is a handler (`await client(request)`)
that forwards method, target, headers and body to the origin and returns its
answer. Responses are parsed by httptools (llhttp, in C): Tornado's
simple_httpclient proxied only ~1k req/s here. Each pooled connection is an
`asyncio.Protocol` feeding llhttp from `data_received` and waking the waiting
exchange through a future (node.worker.upstreamconn; asyncio streams cost ~3x the
CPU per request). Bodies
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
import logging
import time
from collections import deque
from typing import Final
from urllib.parse import urlsplit

from node.body import BodyChannel
from node.http import BodyStream, Headers, Request, Response
from node.ratelog import RateLimitedLog
from node.worker.deadlines import DeadlineSweep
from node.worker.upstreamconn import (
    HOP_BY_HOP,
    WANT_ALL,
    WANT_HEAD,
    Invalid,
    PooledConnection,
    Stale,
)

CHUNK: Final = 256 * 1024
READ: Final = 64 * 1024
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_DROP: Final = HOP_BY_HOP | {"content-length"}  # request fields we never forward as they came
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
log = logging.getLogger("scale0.worker.upstream")


def request_head(request: Request, prefix: str, authority: str) -> bytes:
    """The head of `request` as it goes to the origin at `authority` (whose base path is
    `prefix`): hop-by-hop fields dropped, and those its Connection names; our own framing
    (Content-Length, or chunked for a stream of unknown length); a Host if it has none.

    The fields are filtered by the lower-cased names `Headers` keeps (`without`: C-level
    scans when nothing goes, which is almost always) and written with one join, not a
    formatted line and a `lower()` per field. Names are tokens (node.protocol checks
    every REQUEST's)."""
    rh = request.headers
    drop = _DROP
    if "connection" in rh:
        drop = _DROP | {name.strip().lower() for v in rh.get_all("Connection")
                        for name in v.split(",")}
    kept = rh.without(drop)
    body = request.body
    if not isinstance(body, bytes):
        sent_length = rh.get("Content-Length")
        framing = (f"Content-Length: {sent_length}\r\n" if sent_length else
                   "Transfer-Encoding: chunked\r\n")
    elif body or request.method not in _NO_BODY_METHODS:
        framing = f"Content-Length: {len(body)}\r\n"
    else:
        framing = ""
    host = "" if "host" in kept else f"Host: {authority}\r\n"
    fields = "\r\n".join(map(": ".join, kept))
    end = "\r\n" if fields else ""
    return (f"{request.method} {prefix}{request.target} HTTP/1.1\r\n{host}{fields}{end}"
            f"{framing}\r\n").encode("latin-1")


class UpstreamClient:
    """A handler forwarding requests to the HTTP/1.1 origin at `base_url`."""

    def __init__(self, base_url: str, max_connections: int = 32, *,
                 connect_timeout: float = 5.0, default_timeout: float = 30.0,
                 read_timeout: float = 60.0) -> None:
        url = urlsplit(base_url)
        if "@" in url.netloc:  # never echoed: it may hold a password
            raise ValueError("the upstream URL carries a user name or password, which would "
                             "never be sent to the origin: give it as http://HOST[:PORT][/PREFIX]")
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT][/PREFIX], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.authority = url.netloc
        # What failed and where goes to this log (at most a line a second per kind); the
        # client's 502/504 says what, not where, as nginx's and Varnish's error pages do.
        self._failures = RateLimitedLog(log)
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self.read_timeout = read_timeout  # between two reads of a streamed body
        self._max = max_connections
        self._idle: list[PooledConnection] = []
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
        deadline = self._deadlines.start(loop, asyncio.current_task(loop),
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
                conn = (self._pooled() if attempt == 0 else None) or await self._connect(loop)
                try:
                    resp = await self._exchange(conn, request)
                except Stale:
                    conn.abort()
                    if not retry:
                        break
                    continue
                except BaseException:
                    conn.abort()  # timeouts and cancellation too: no socket is left behind
                    raise
                held = False  # released with the connection now (at once, or by the stream)
                return resp
            return self._failed(502, "closed the connection before answering")
        except asyncio.CancelledError:
            # Ours if the deadline fired and nobody else cancelled the task as well.
            if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
                return self._failed(504, "did not answer in time")
            raise
        except TimeoutError:  # connect_timeout
            return self._failed(504, "did not answer in time")
        except ConnectionRefusedError:
            return self._failed(502, "refused the connection")
        except Invalid as invalid:
            return self._failed(502, f"sent {invalid}")
        except (OSError, EOFError) as exc:
            # The exception's text may name the origin's address (asyncio's "Connect call
            # failed ('10.0.0.5', 8000)"): the client gets its kind, the log all of it.
            return self._failed(502, f"failed: {type(exc).__name__}", f"{exc}")
        finally:
            self._deadlines.end(deadline)
            if held:
                self._free_slot()

    def _failed(self, status: int, what: str, detail: str = "") -> Response:
        """The answer to a request the origin failed: `what` happened, for the client;
        the worker's log adds where (and `detail`)."""
        self._failures.warn(what, "upstream %s %s%s", self.authority, what,
                            f" ({detail})" if detail else "")
        return Response.error(status, f"upstream {what}")

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

    def _pooled(self) -> PooledConnection | None:
        """An idle connection still fit for a request, if there is one (no coroutine: the
        usual case under load)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.clean():
                conn.reused = True
                return conn
            conn.abort()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> PooledConnection:
        conn = PooledConnection(self, loop)
        async with asyncio.timeout(self.connect_timeout):
            await loop.create_connection(lambda: conn, self.host, self.port)
        return conn

    def release(self, conn: PooledConnection, reusable: bool) -> None:
        """The exchange (or its stream) is over: the slot is free, the connection pooled
        if it is clean, else closed."""
        self._free_slot()
        conn.active = False
        if reusable and len(self._idle) < self._max and conn.clean():
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: PooledConnection) -> None:
        """Take `conn` out of the idle list (it got bytes or closed while idle)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    async def _exchange(self, conn: PooledConnection, request: Request) -> Response:
        """One request on `conn`: on success the connection is released (or handed to the
        response's stream); on any exception the caller closes it."""
        body = request.body
        head = request_head(request, self.prefix, self.authority)
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
            await conn.wait(WANT_HEAD)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused and not conn.got_bytes and isinstance(body, bytes):
                raise Stale() from exc
            raise
        parser = conn.parser
        assert parser is not None
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise Invalid(f"status {status}, outside 100-599")
        te = ",".join(conn.te) if conn.te else ""
        if te and te.strip().lower() != "chunked":
            raise Invalid(f"Transfer-Encoding {te[:40]!r}, not chunked")  # nginx: the same
        out = Headers(conn.headers)  # hop-by-hop fields were left out while parsing
        if request.method == "HEAD" or status in (204, 304):
            # No body, whatever the head says; bytes after the head keep the connection out
            # of the pool (for a HEAD, llhttp takes them for a body).
            if conn.done:
                keep = conn.keep_alive and not conn.extra
            else:
                keep = parser.should_keep_alive() and not conn.body and conn.error is None
            self.release(conn, keep)
            return Response(status, out, b"")
        length = None
        if conn.cl is not None:
            try:
                length = int(conn.cl)
            except ValueError:
                pass
        if not conn.done and length is not None and length <= CHUNK:
            # Small bodies of known length are read here: one frame, no channel.
            await conn.wait(WANT_ALL)
        if conn.done:
            data = b"".join(conn.body) if len(conn.body) != 1 else conn.body[0]
            conn.body = []  # an idle pooled connection must not hold the last body's pieces
            self.release(conn, conn.keep_alive and not conn.extra)
            return Response(status, out, data)
        conn.content_length, conn.chunked = length, bool(te)
        chan = BodyChannel(8, on_cancel=conn.on_chan_cancel, on_read=conn.on_chan_read)
        conn.stream(chan)
        return Response(status, out, chan)

    async def _send_stream(self, conn: PooledConnection, body: BodyStream, chunked: bool) -> None:
        transport = conn.transport
        assert transport is not None
        while chunk := await body.read():
            conn.check()
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()  # bounded memory: wait for the socket before reading more
        conn.check()
        if chunked:
            transport.write(b"0\r\n\r\n")

