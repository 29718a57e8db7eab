"""The fast wire's per-connection protocol: llhttp events → a Tornado delegate, in order.

See node.fastwire for the design; this module is the connection itself.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import httptools
from tornado import httputil

from node.errors import BodyTooLarge, ClientError, HeadersTooLarge, Scale0Error
from node.fastconn import Context, FastHTTPConnection
from node.hitcache import SLOW_FIELDS
from node.serialtasks import SerialTasks
from node.statichits import codings_of
from node.wirerules import (
    HeadFacts,
    PlainHead,
    check_request_head,
    error_response,
    plain_fields,
    plain_head,
    request_headers,
)

if TYPE_CHECKING:
    from node.fastwire import FastHTTPServer

log = logging.getLogger("scale0.fastwire")

_JOIN_BELOW: Final = 16 * 1024  # smaller bodies are copied behind the head; larger go by writev



def start_line(method: str, target: str, version: str) -> httputil.RequestStartLine:
    """Tornado's RequestStartLine, built as the tuple it is: a namedtuple's own `__new__`
    is an interpreted lambda, one Python call a request for the compiled front."""
    return tuple.__new__(httputil.RequestStartLine, (method, target, version))

class Shortcut(Protocol):
    """Answers some requests before a delegate sees them (node.hitcache.HitCache)."""

    max_head: int  # larger request heads are not offered

    def ready(self) -> bool: ...  # anything prepared to answer with? (else it is not asked)

    def answer(self, scheme: str, host: bytes, target: bytes, request_id: bytes | None, *,
               client: str, codings: int,
               fields: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None: ...

class Lane(Protocol):
    """Serves plain requests without Tornado's objects (node.front.Front.lane).

    A bodyless GET or HEAD that no mounted Tornado handler could claim needs none of
    HTTPHeaders, HTTPServerRequest or the delegate calls that build them: the lane
    turns llhttp's fields into the delegate's own request at once (`plain_request`),
    then the exchange goes on as any other (`start_plain`: finish, the answer, the
    connection's state are the same code)."""

    max_head: int  # larger request heads go the usual way (the delegate's 431 rule)

    def plain_request(self, head: PlainHead, context: Context) -> Any | None:
        """The delegate's request for `head`; None: it must go the usual way."""
        ...

    def start_plain(self, wire: object, conn: FastHTTPConnection,
                    request: Any) -> httputil.HTTPMessageDelegate:
        """The exchange for `request`, as `start_request` + `headers_received` make it."""
        ...


_HEAD: Final = 0
_BODY: Final = 1
_END: Final = 2
_ERROR: Final = 3
_LANE: Final = 4
_LANE_HEAD: Final = 16  # what the delegate's head count adds to ours: method, version, spaces


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Per-listener limits (one documented object; the defaults suit a public port)."""

    max_header_size: int = 32 * 1024  # request line + fields → 431 above
    max_body_size: int = 1 << 30  # default per request; delegates may lower it → 413
    header_timeout: float = 30.0  # first byte of a head → its end (slowloris)
    idle_timeout: float = 75.0  # keep-alive wait for the next request
    body_timeout: float = 120.0  # while a request body is read
    high_water: int = 64 * 1024  # outgoing bytes buffered before writers wait
    low_water: int = 16 * 1024
    no_keep_alive: bool = False
    backlog: int = 1024
    max_connections_per_client: int = 256  # open connections from one address; 0 = no limit


class WireProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: FastHTTPServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.tasks = SerialTasks(self.loop)  # the delegate's answers, in one task
        self.transport: asyncio.Transport | None = None
        self.context = Context(None, "https" if server.ssl_context else "http")
        self.parser = httptools.HttpRequestParser(self)
        self.events: collections.deque[tuple[int, Any, Any]] = collections.deque()
        self.closed = False
        self.deadline = 0.0  # loop time after which the sweep closes us; 0: none
        self.conn: FastHTTPConnection | None = None  # the exchange being served
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self.waiting = False  # a delegate's awaitable is pending
        self.dead_parser = False
        self.write_paused = False
        self.read_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.ready.set_result(None)
        self.received = 0
        # parser state for the head being read
        self.in_head = False
        self.head_bytes = 0  # parsed: request line and fields
        self.head_raw = 0  # raw bytes of reads that fell wholly inside the head
        self.completed = 0  # messages ended during the current read
        self.facts = HeadFacts(None, False, False, False)
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.plain = False  # the shortcut found the fields plain (wirerules.plain_fields)
        self.head_started = 0.0  # loop time the current head began (for the access log)
        self.answered = False  # the current message was answered by the shortcut

    # -- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.context = Context(transport.get_extra_info("peername"), self.context.protocol)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(self.limits.high_water, self.limits.low_water)
        self.deadline = self.loop.time() + min(self.limits.header_timeout,
                                               self.limits.idle_timeout)
        self.server._added(self)

    def data_received(self, data: bytes) -> None:
        if self.dead_parser or self.closed:
            return
        was_in_head = self.in_head
        self.completed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
        else:
            if self.in_head and (was_in_head or not self.completed):
                # llhttp keeps a partial field to itself, so count raw bytes; a read
                # that also ended an earlier message is not counted (bounded undercount)
                self.head_raw += len(data)
                if self.head_raw > self.limits.max_header_size:
                    self._queue_error(HeadersTooLarge(self._too_large_headers()))
        self._pump()
        if self.events and not self.read_paused and not self.closed:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        return False  # half-closed clients get no answer: close, as Tornado does

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.events.clear()
        self.tasks.close()
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("the client closed the connection"))
                waiter.exception()
        self.drain_waiters.clear()
        conn, delegate = self.conn, self.delegate
        self.conn = self.delegate = None
        if conn is not None and delegate is not None:
            try:
                if not conn.read_finished:
                    delegate.on_connection_close()
                elif not conn.write_finished and conn.close_callback is not None:
                    callback, conn.close_callback = conn.close_callback, None
                    callback()
            except Exception:
                log.exception("delegate failed on connection close")
        self.server._removed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._maybe_resume_reading()

    # -- llhttp callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_started = self.loop.time()
        self.head_bytes = self.head_raw = 0
        self.url = b""
        self.fields = []
        self.plain = False
        if self.conn is None:
            self.deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.limits.max_header_size:
            raise HeadersTooLarge(self._too_large_headers())

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            raise ClientError("trailer fields after a chunked body are not supported")
        self.fields.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_header_size:
            raise HeadersTooLarge(self._too_large_headers())

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        # Asked once: each is a call into httptools that builds its answer anew (the
        # version a formatted string).
        raw_method, raw_version = parser.get_method(), parser.get_http_version()
        shortcut = self.server.shortcut
        if (shortcut is not None and self.conn is None and not self.events
                and not self.write_paused and self.head_bytes <= shortcut.max_head
                and shortcut.ready() and self._shortcut(shortcut, raw_method, raw_version)):
            return
        lane = self.server.lane
        if lane is not None and self.head_bytes + _LANE_HEAD <= lane.max_head:
            head = plain_head(raw_method, raw_version, self.url, self.fields, plain=self.plain,
                              no_keep_alive=self.limits.no_keep_alive)
            if head is not None:
                request = lane.plain_request(head, self.context)
                if request is not None:
                    self.events.append((_LANE, (head, request), lane))
                    return
        method = raw_method.decode("latin1")
        version = "HTTP/" + raw_version
        target = self.url.decode("latin1")
        try:
            headers = request_headers(self.fields, plain=self.plain)
        except httputil.HTTPInputError as exc:
            raise ClientError(str(exc)) from exc
        facts = check_request_head(method, target, version, headers,
                                   no_keep_alive=self.limits.no_keep_alive)
        start = start_line(method, target, version)
        self.events.append((_HEAD, (start, headers), facts))

    def on_body(self, body: bytes) -> None:
        self.events.append((_BODY, body, None))

    def on_message_complete(self) -> None:
        self.completed += 1
        if self.answered:
            self.answered = False  # answered from on_headers_complete: nothing to hand on
            return
        self.events.append((_END, None, None))

    def _shortcut(self, shortcut: Shortcut, method: bytes, version: str) -> bool:
        """Answer a plain GET from a prepared answer (node.hitcache, node.statichits),
        before any request object exists; False: the request goes the usual way.

        Plain means: HTTP/1.1 GET, origin-form target, one Host, keep-alive by default,
        no field the hit decision reads or that frames a body (SLOW_FIELDS), and every
        field valid by Tornado's rules (the slow path would answer 400 otherwise). The
        shortcut also gets what the client accepts of Accept-Encoding (static files vary
        on it) and the fields, for the access log."""
        if (method != b"GET" or version != "1.1" or not self.url.startswith(b"/")
                or self.server.stopping or self.limits.no_keep_alive):
            return False
        host = rid = accept = None
        for name, value in self.fields:
            lname = name.lower()
            if lname == b"host":
                if host is not None:
                    return False
                host = value
            elif lname == b"x-request-id":
                if rid is None:
                    rid = value
            elif lname == b"accept-encoding":  # joined as Headers.get_joined joins them
                coding = value.strip(b" \t")
                accept = coding if accept is None else accept + b", " + coding
            elif lname in SLOW_FIELDS:
                return False
        if host is None or not plain_fields(self.fields):
            return False
        self.plain = True  # a miss goes on to request_headers, which need not ask again
        context = self.context
        found = shortcut.answer(context.protocol, host.strip(b" \t").lower(), self.url, rid,
                                client=context.remote_ip, codings=codings_of(accept),
                                fields=self.fields)
        if found is None:
            return False
        head, body = found
        transport = self.transport
        if transport is not None and not self.closed:
            if len(body) < _JOIN_BELOW:
                transport.write(head + body)  # one send: no delayed-ACK stall
            else:
                transport.writelines((head, body))  # one writev, no copy of the body
        self.answered = True
        self.deadline = self.loop.time() + self.limits.idle_timeout
        if self.write_paused:
            self._pause_reading()  # a client that does not read stops being read
        return True

    # -- parser outcomes ------------------------------------------------------------
    def _too_large_headers(self) -> str:
        return f"request headers larger than {self.limits.max_header_size} bytes"

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, Scale0Error):
            self._queue_error(cause)
        else:
            self._queue_error(ClientError(f"malformed request: {exc}"))

    def _queue_error(self, error: Scale0Error) -> None:
        self.dead_parser = True
        self.in_head = False
        self.events.append((_ERROR, error, None))

    def _upgrade(self) -> None:
        """Upgrade or CONNECT: nothing after the head is HTTP we could read, so the
        request is answered (Front refuses CONNECT) and the connection closed."""
        self.dead_parser = True
        events = self.events
        for i in range(len(events) - 1, -1, -1):
            kind, a, facts = events[i]
            if kind == _HEAD:
                events[i] = (kind, a, dataclasses.replace(facts, keep_alive=False))
                if i == len(events) - 1 or events[-1][0] != _END:
                    events.append((_END, None, None))
                break

    # -- handing events to the delegate ---------------------------------------------
    def _pump(self) -> None:
        events = self.events
        while events and not self.waiting and not self.closed:
            conn = self.conn
            if conn is not None and conn.read_finished:
                return  # the previous answer is still being written: wait for it
            kind, a, b = events.popleft()
            if kind == _HEAD:
                self._start(a[0], a[1], b)
            elif kind == _BODY:
                self._body(a)
            elif kind == _END:
                self._end()
            elif kind == _LANE:
                self._start_plain(a[0], a[1], b)
            else:
                self._fail(a)
        if not events:
            self._maybe_resume_reading()

    def _start(self, start: httputil.RequestStartLine, headers: httputil.HTTPHeaders,
               facts: HeadFacts) -> None:
        limits = self.limits
        keep = facts.keep_alive and not self.server.stopping
        conn = FastHTTPConnection(self, self.context, start, headers, keep_alive=keep,
                                  max_body_size=limits.max_body_size,
                                  body_timeout=limits.body_timeout)
        self.conn = conn
        self.facts = facts
        self.received = 0
        try:
            delegate = self.server.delegate.start_request(self, conn)
            self.delegate = delegate
            self._wait(delegate.headers_received(start, headers), self._after_headers)
        except Exception as exc:
            self._delegate_failed(exc)

    def _start_plain(self, head: PlainHead, request: Any, lane: Lane) -> None:
        """`_start` for a request the lane took: no body, so nothing to wait for."""
        limits = self.limits
        keep = head.keep_alive and not self.server.stopping
        start = start_line(head.method, head.target, head.version)
        conn = FastHTTPConnection(self, self.context, start, request.headers, keep_alive=keep,
                                  max_body_size=limits.max_body_size,
                                  body_timeout=limits.body_timeout)
        self.conn = conn
        self.received = 0
        self.deadline = 0.0
        try:
            self.delegate = lane.start_plain(self, conn, request)
        except Exception as exc:
            self._delegate_failed(exc)

    def _after_headers(self) -> None:
        conn = self.conn
        if conn is None:
            return
        facts = self.facts
        if facts.expect_continue and not conn.write_finished:
            self.send(b"HTTP/1.1 100 (Continue)\r\n\r\n")
        if facts.content_length is not None and facts.content_length > conn.max_body_size:
            self._fail(BodyTooLarge(f"request body larger than {conn.max_body_size} bytes"))
            return
        if facts.has_body:
            self.deadline = self.loop.time() + conn.body_timeout
        else:
            self.deadline = 0.0

    def _body(self, chunk: bytes) -> None:
        conn, delegate = self.conn, self.delegate
        if conn is None or delegate is None:
            return
        self.received += len(chunk)
        if self.received > conn.max_body_size:
            self._fail(BodyTooLarge(f"request body larger than {conn.max_body_size} bytes"))
            return
        if conn.write_finished:
            return  # answered already; the rest is dropped, then the connection closes
        try:
            self._wait(delegate.data_received(chunk), None)
        except Exception as exc:
            self._delegate_failed(exc)

    def _end(self) -> None:
        conn, delegate = self.conn, self.delegate
        if conn is None or delegate is None:
            return
        conn.read_finished = True
        self.deadline = 0.0
        if conn.write_finished:
            self.exchange_finished(conn)
            return
        try:
            delegate.finish()
        except Exception as exc:
            self._delegate_failed(exc)

    def _wait(self, result: Any, then: Any) -> None:
        """Go on at once when `result` is None or done; else pause until it is."""
        if result is None:
            if then is not None:
                then()
            return
        future = asyncio.ensure_future(result)
        if future.done():
            self._resolved(future, then)
            return
        self.waiting = True
        self._pause_reading()
        future.add_done_callback(lambda f: self._resumed(f, then))

    def _resumed(self, future: asyncio.Future[Any], then: Any) -> None:
        self.waiting = False
        if self.closed:
            return
        self._resolved(future, then)
        self._pump()

    def _resolved(self, future: asyncio.Future[Any], then: Any) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            self._delegate_failed(exc)
        elif then is not None:
            then()

    def _delegate_failed(self, exc: BaseException) -> None:
        if isinstance(exc, httputil.HTTPInputError):  # Tornado: malformed input → 400
            self._fail(ClientError(str(exc)))
            return
        log.error("delegate failed", exc_info=exc)
        self.close()

    def _fail(self, error: Scale0Error) -> None:
        """Answer `error` unless an answer already began, then close — lingering, since
        closing with unread bytes makes the kernel reset the connection, which can
        destroy the answer before the client reads it."""
        self.events.clear()
        self.dead_parser = True
        conn = self.conn
        if conn is None or not conn.response_started:  # else only the close is left
            self.send(error_response(error.status, error.reason))
        if conn is None:  # no exchange began: nobody else logs this answer
            self._log_refused(error.status, error.reason)
        log.info("closing %s: %s", self.context, error.reason)
        self._linger()

    def _log_refused(self, status: int, reason: str) -> None:
        log_refused = getattr(self.server.delegate, "log_refused", None)
        if log_refused is None:
            return
        try:
            method = self.parser.get_method().decode("latin1")
        except httptools.HttpParserError:
            method = ""  # not read yet
        target = self.url[:2048].decode("latin1")
        started = self.head_started or self.loop.time()
        log_refused(status, reason, client=self.context.remote_ip, method=method,
                    target=target, duration=self.loop.time() - started)

    def _linger(self) -> None:
        """Close after the answer without a reset: stop sending, read and drop what the
        client still sends for a moment (nginx's lingering close), then let go."""
        self.events.clear()
        self.dead_parser = True
        transport = self.transport
        if transport is None or self.closed or not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self.deadline = self.loop.time() + min(2.0, self.limits.header_timeout)
        self.waiting = False
        if self.read_paused and not self.write_paused:
            self.read_paused = False
            transport.resume_reading()

    # -- what FastHTTPConnection calls ----------------------------------------------
    def send(self, data: bytes) -> asyncio.Future[None]:
        transport = self.transport
        if self.closed or transport is None:
            return self.ready
        transport.write(data)
        if not self.write_paused:
            return self.ready
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.drain_waiters.append(waiter)
        return waiter

    def exchange_finished(self, conn: FastHTTPConnection) -> None:
        if conn is not self.conn:
            return
        if conn.disconnect_on_finish or self.server.stopping:
            if conn.read_finished:
                self.close()
            else:  # answered before the body was read (413, 503, ...): the client is still
                self._linger()  # sending, and a plain close would reset its connection
            return
        if not conn.read_finished:
            return  # _end closes or finishes once the body is in
        self.conn = self.delegate = None
        limits = self.limits
        timeout = limits.header_timeout if self.in_head else limits.idle_timeout
        self.deadline = self.loop.time() + timeout
        if self.events:
            self.loop.call_soon(self._pump)

    def close(self) -> None:
        """Flush what is buffered, then close."""
        self.dead_parser = True  # a TLS transport may still hand us data while it closes
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- reading on and off -----------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (self.read_paused and not self.waiting and not self.write_paused
                and not self.events and not self.closed and self.transport is not None):
            self.read_paused = False
            self.transport.resume_reading()

    @property
    def idle(self) -> bool:
        return self.conn is None and not self.events and not self.in_head

    def expired(self, now: float) -> None:
        """The sweep found our deadline passed."""
        if self.conn is not None and not self.conn.read_finished and not self.dead_parser:
            log.info("body timeout reading from %s", self.context)  # not a lingering close
        elif self.conn is None and self.in_head and not self.dead_parser:
            # A head that never ended (slowloris): closed without an answer, logged as 408.
            self._log_refused(408, "the request head did not arrive in time")
        self.deadline = 0.0
        if self.transport is not None:
            self.transport.abort()
