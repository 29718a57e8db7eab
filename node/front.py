"""The front door: Tornado's HTTP/1.1 wire turned into plain Requests and back.

An `HTTPServerConnectionDelegate` (not a RequestHandler) so the pipeline never
sees Tornado and the wire can be swapped later. Per request, `_Exchange`:
checks limits as early as it can (header bytes → 431; a declared
Content-Length over the limit → 413 before any body is read; a chunked body
that grows past it → 413 as soon as it does), settles the target and Host,
and starts the pipeline — at once with a streamed body (a `BodyChannel` whose
full buffer holds Tornado's reads back: `data_received` returns the put), or
after the body for small ones. The response is framed here: no body for
HEAD/1xx/204/304, Content-Length when the length is known, chunked otherwise;
a streamed body is written chunk by chunk, each write awaited (backpressure),
and cancelled if the client goes away, which also cancels the pipeline task.

Tornado closes the connection without an answer when the headers exceed its
own buffer, so that buffer is set above our limit: headers between the two
get a 431; beyond it (4 times the limit) the connection is simply closed.
A mounted Tornado application (`AppMount`, node.inapp) may claim a request before
the pipeline sees it; it writes through an `AppAnswer`, which stamps, logs and
counts its answer like ours.

Per-host https rules (`https_policy`, node.tls) apply here to every answer: on http
a redirect host's 308 comes before the mount; on https our answers (400/413/431,
the pipeline's and its errors) and a mounted app's heads carry HSTS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http.client import responses as _PHRASES
from typing import TYPE_CHECKING, Any, Final, Protocol

from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from node.accesslog import AccessLog
from node.body import BodyChannel, read_body
from node.errors import ClientError
from node.fastconn import Context, FastHTTPConnection
from node.http import Body, BodyError, Headers, Request, Response
from node.inapp import AppAnswer, Stamping, TornadoAppMount
from node.proxyheaders import Target, normalise_target
from node.querysecrets import logged_target
from node.ratelog import RateLimitedLog
from node.responsehead import BadField, FieldMap, bodied_head, field_map
from node.tls import STS, HttpsPolicy, policy_target
from node.wirerules import PlainHead

if TYPE_CHECKING:
    from node.hitcache import HitCache

__all__ = ["AppMount", "Front", "FrontLimits", "Handler", "Listener", "TornadoAppMount",
           "bound_port"]  # TornadoAppMount lives in node.inapp now

log = logging.getLogger("scale0.front")
_refused = RateLimitedLog(log)  # a broken upstream must not write a warning per request

Handler = Callable[[Request], Awaitable[Response]]
_NO_BODY_STATUS: Final = (204, 304)
CLIENT_CLOSED: Final = 499  # nginx's status for a request whose client left before the answer


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_header_size: int = 32 * 1024
    max_body_size: int = 1 << 30
    buffer_body_below: int = 64 * 1024  # smaller declared bodies are read whole first
    idle_timeout: float = 75.0
    header_timeout: float = 30.0  # first byte of a head → its end (slowloris)
    body_timeout: float = 120.0
    chunk_size: int = 64 * 1024
    # A streamed upload buffers this many chunks (of at most chunk_size bytes in all, each)
    # before the client's reads are held: what waits in a queue for a worker is bounded.
    body_channel_chunks: int = 8


class Listener(Protocol):
    """What drain needs of a listening server (Tornado's HTTPServer, node.fastwire's)."""

    def stop(self) -> None: ...

    async def close_all_connections(self) -> None: ...


class AppMount(Stamping, Protocol):
    """Something that may answer a request itself before the pipeline (issue 7); its
    answers are stamped and counted as its `Stamping` says (node.inapp)."""

    def find(self, server_conn: object, request_conn: httputil.HTTPConnection,
             start_line: httputil.RequestStartLine,
             headers: httputil.HTTPHeaders) -> httputil.HTTPMessageDelegate | None: ...

    def may_claim(self, host: str, path: str, fields: Headers) -> bool:
        """Whether `find` could take such a request (False lets the lane skip it)."""
        ...


class Front(httputil.HTTPServerConnectionDelegate):
    """The HTTP listener's delegate; one per listener, shared by its connections."""

    def __init__(self, handle: Handler, *, limits: FrontLimits | None = None,
                 scheme: str = "http", mount: AppMount | None = None) -> None:
        self.handle = handle
        self.limits = limits or FrontLimits()
        self.scheme = scheme
        self.mount = mount
        self.access_log: AccessLog | None = None  # set (and swapped on SIGHUP) by node.server
        self.draining = False
        self._in_flight: set[_Exchange] = set()
        # Made by `wait_idle` when it has exchanges to wait for, set by the last to end: an
        # Event flipped per request would cost two interpreted calls on an idle node.
        self._idle: asyncio.Event | None = None
        self._servers: list[Listener] = []
        self._shortcut: HitCache | None = None
        # Redirects and HSTS per host (node.tls), read per request: SIGHUP swaps the policy.
        self.https_policy: Callable[[], HttpsPolicy | None] = lambda: None

    @property
    def shortcut(self) -> HitCache | None:
        """Prepared answers the fast wire gives before this delegate sees the request
        (node.hitcache: on https with the HSTS field we would add); None while draining
        (every answer says close)."""
        return None if self.draining else self._shortcut

    @shortcut.setter
    def shortcut(self, hits: HitCache | None) -> None:
        if hits is not None:  # heads our 431 rule could refuse never take the shortcut
            hits.max_head = min(hits.max_head, self.limits.max_header_size // 2)
        self._shortcut = hits

    @property
    def lane(self) -> Front:
        """Plain requests (a bodyless GET or HEAD in origin form: node.wirerules.plain_head)
        reach the pipeline without Tornado's HTTPHeaders on the fast wire
        (node.fastproto.Lane): an exchange's own cost was a third of a proxied request's.
        Per-host https rules apply there too (HSTS; a redirected host goes the usual way
        for its 308), and so does a mounted app: a request its rules could match goes
        the usual way (`AppMount.may_claim`), where it gets Tornado's request object."""
        return self

    @property
    def max_head(self) -> int:
        return self.limits.max_header_size

    def plain_request(self, head: PlainHead, context: Context) -> Request | None:
        """The Request for a plain head, as `_Exchange` would make it; None when the host
        is redirected to https (the usual way answers the 308)."""
        policy = self.https_policy()
        if (policy is not None and self.scheme != "https"
                and policy.redirect(head.host, head.target) is not None):
            return None
        fields = Headers(head.fields)
        mount = self.mount
        if mount is not None and mount.may_claim(head.host, head.target.partition("?")[0],
                                                 fields):
            return None  # the usual way asks the app (node.inapp.TornadoAppMount.find)
        return Request(method=head.method, target=head.target, headers=fields,
                       scheme=self.scheme, host=head.host, client=context.remote_ip)

    def start_plain(self, server_conn: object, conn: FastHTTPConnection,
                    request: Request) -> _Exchange:
        """The exchange for a lane's request: what `headers_received` leaves for a request
        without a body (the pipeline starts at `finish`)."""
        exchange = _Exchange(self, server_conn, conn)
        exchange.version = conn.start_line.version
        if self.scheme == "https" and (policy := self.https_policy()) is not None:
            exchange.hsts = policy.hsts(request.host)
        exchange._begin()
        exchange.request = request
        return exchange

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def log_refused(self, status: int, reason: str, *, client: str, method: str, target: str,
                    duration: float) -> None:
        """An answer the wire gave before any exchange began — a malformed request (400),
        a head too large (431), a head that never ended (408, nothing sent): in the access
        log like any other, as nginx logs its own 400s and 408s."""
        access = self.access_log
        if access is None:
            return
        request = Request(method=method or "-", target=target or "-", headers=Headers(),
                          scheme=self.scheme, client=client)
        access.log(request, Response.error(status, reason), sent_bytes=0, duration=duration,
                   status=status)

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Exchange(self, server_conn, request_conn)

    def listen(self, port: int, host: str = "", ssl_options: Any = None,
               reuse_port: bool = False) -> HTTPServer:
        """Bind and serve on `host:port` (port 0: any free one; see `bound_port`).

        `reuse_port` lets several node processes share the port (SO_REUSEPORT)."""
        limits = self.limits
        server = HTTPServer(
            self, ssl_options=ssl_options, no_keep_alive=False, xheaders=False,
            decompress_request=False, chunk_size=limits.chunk_size,
            max_header_size=limits.max_header_size * 4, max_body_size=1 << 62,
            # Tornado has one knob for the wait for a request head, whether the connection
            # is idle or a head is trickling in (slowloris): the shorter of the two limits.
            idle_connection_timeout=min(limits.idle_timeout, limits.header_timeout),
            body_timeout=limits.body_timeout,
        )
        server.add_sockets(bind_sockets(port, host or None, reuse_port=reuse_port))
        self._servers.append(server)
        return server

    def adopt(self, server: Listener) -> None:
        """Drain `server` with this delegate's own listeners (another wire layer's server)."""
        self._servers.append(server)

    async def drain(self, grace: float) -> bool:
        """Stop accepting, let in-flight exchanges finish (up to `grace` s), close the
        connections. True if everything finished in time."""
        self.draining = True
        for server in self._servers:
            server.stop()
        try:
            await asyncio.wait_for(self.wait_idle(), grace)
            finished = True
        except TimeoutError:
            finished = False
        for server in self._servers:
            await server.close_all_connections()
        return finished

    async def wait_idle(self) -> None:
        """Return once no exchange is in flight."""
        while self._in_flight:
            idle = self._idle
            if idle is None:
                idle = self._idle = asyncio.Event()
            await idle.wait()
            if self._idle is idle:  # the next wait (a new exchange may have started) makes its own
                self._idle = None

    def _started(self, exchange: _Exchange) -> None:
        self._in_flight.add(exchange)

    def _ended(self, exchange: _Exchange) -> None:
        self._in_flight.discard(exchange)
        if not self._in_flight and self._idle is not None:  # `drain` waits for this
            self._idle.set()


def bound_port(server: HTTPServer) -> int:
    """The port a listener bound (useful after `listen(0)`)."""
    for sock in server._sockets.values():
        return int(sock.getsockname()[1])
    raise RuntimeError("the server has no listening socket")


def _header_bytes(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> int:
    size = len(start_line.method) + len(start_line.path) + len(start_line.version) + 4
    return size + sum(len(k) + len(v) + 4 for k, v in headers.get_all())


def _content_length(values: list[str], chunked: bool) -> int:
    """The declared body length; ClientError when it is ambiguous (a smuggling risk)."""
    if not values:
        return 0
    if chunked:
        raise ClientError("both Content-Length and Transfer-Encoding: refusing an ambiguous body")
    pieces = {p.strip() for v in values for p in v.split(",")}
    if len(pieces) != 1 or not next(iter(pieces)).isdigit():
        raise ClientError(f"invalid Content-Length {', '.join(values)[:60]!r}")
    return int(pieces.pop())


class _Exchange(httputil.HTTPMessageDelegate):
    """One request and its response on one connection."""

    def __init__(self, front: Front, server_conn: object,
                 conn: httputil.HTTPConnection) -> None:
        self.front = front
        self.server_conn = server_conn
        self.conn = conn
        self.inner: httputil.HTTPMessageDelegate | None = None
        self.request: Request | None = None
        self.version = "HTTP/1.1"
        self.channel: BodyChannel | None = None
        self.buffered: list[bytes] | None = None
        self.received = 0
        self.task: asyncio.Task[None] | None = None
        self.too_large = False
        self.gone = False
        self.response_started = False
        self.done = False
        self.hold: asyncio.Future[None] | None = None
        self.out_body: Body = b""
        self.sent = 0  # body bytes of a streamed answer, for the access log
        self.started_at = time.monotonic()
        self.hsts: str | None = None  # Strict-Transport-Security for every answer we write
        # The fast wire's connection knows its loop: asyncio.get_running_loop() would cost a
        # getpid system call a request (CPython 3.11 checks for a fork on every call).
        self.loop = (conn.wire.loop if isinstance(conn, FastHTTPConnection)
                     else asyncio.get_running_loop())
        self.job: Callable[[], Coroutine[Any, Any, None]] | None = None  # as submitted
        self.running = False  # `_run` has begun
        self.cancelled_early = False  # cancelled before `_run` began: it answers at once

    # -- HTTPMessageDelegate ---------------------------------------------------
    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        front = self.front
        self.version = start_line.version
        sts: list[tuple[str, str]] = []  # HSTS for a mounted app's head
        policy = front.https_policy()
        if policy is not None:  # before the mount: its routes get the same rules
            where = policy_target(start_line, headers, front.scheme)
            if front.scheme == "https":
                self.hsts = policy.hsts(where.host if where else headers.get("Host", ""))
                if self.hsts:
                    sts.append((STS, self.hsts))
            elif where is not None:
                redirect = policy.redirect(where.host, where.target)
                if redirect is not None:  # and close: the client's next stop is https
                    self._begin()
                    self.request = self._request(start_line, headers, where)  # logged
                    return self._reject(redirect)
        if (mount := front.mount) is not None:
            answer = AppAnswer(self.conn, sts)
            inner = mount.find(self.server_conn, answer, start_line, headers)
            if inner is not None:
                self.inner = inner  # the mounted app owns the exchange from here
                answer.claim(mount, front.access_log, start_line, headers, front.scheme)
                front._started(self)  # a drain waits for in-node answers too
                answer.on_end = self._end
                return inner.headers_received(start_line, headers)
        self._begin()
        limit = front.limits
        if _header_bytes(start_line, headers) > limit.max_header_size:
            self._refused(start_line)
            return self._reject(Response.error(
                431, f"request headers larger than {limit.max_header_size} bytes"))
        chunked = "Transfer-Encoding" in headers
        try:
            length = _content_length(headers.get_list("Content-Length"), chunked)
            target = normalise_target(start_line.method, start_line.path,
                                      headers.get_list("Host"), start_line.version, front.scheme)
        except ClientError as exc:
            self._refused(start_line)
            return self._reject(Response.error(exc.status, exc.reason))
        self.request = self._request(start_line, headers, target)
        if length > limit.max_body_size:
            return self._reject(Response.error(
                413, f"request body larger than {limit.max_body_size} bytes"))
        if chunked or length >= limit.buffer_body_below:
            self.channel = BodyChannel(capacity=limit.body_channel_chunks,
                                       max_bytes=limit.body_channel_chunks * limit.chunk_size)
            self.request.body = self.channel
            self._start()
        elif length:
            self.buffered = []
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.inner is not None:
            return self.inner.data_received(chunk)
        self.received += len(chunk)
        if self.received > self.front.limits.max_body_size:
            return self._body_too_large()
        if self.buffered is not None:
            self.buffered.append(chunk)
            return None
        if self.channel is not None:
            return self._feed(self.channel, chunk)
        return None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        if self.request is None or self.too_large:
            return
        if self.channel is not None:
            self.channel.finish()
        else:
            self.request.body = b"".join(self.buffered or ())
            self.buffered = None
            self._start()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()
            return
        if self.done:
            return
        self.gone = True
        if self.channel is not None:
            self.channel.fail("the client closed the connection")
        if self.request is not None and not self.response_started:
            # Logged like nginx's 499: the client left before any answer began.
            self._access(CLIENT_CLOSED, Response(CLIENT_CLOSED, outcome="client-closed"))
        if self.task is not None:
            self._cancel()
        else:
            self._end()
        self._release_hold()

    def _begin(self) -> None:
        """This exchange is ours (not a mounted app's): count it, hear the client leave."""
        self.front._started(self)
        set_close_callback = getattr(self.conn, "set_close_callback", None)
        if set_close_callback is not None:  # HTTP1Connection: told when the client leaves
            set_close_callback(self.on_connection_close)

    def _refused(self, start_line: httputil.RequestStartLine) -> None:
        """The request as the access line of an answer given before it was understood
        (400, 431) shows it: method and target as sent, bounded."""
        context = getattr(self.conn, "context", None)
        self.request = Request(method=start_line.method[:32], target=start_line.path[:2048],
                               headers=Headers(), scheme=self.front.scheme,
                               client=str(getattr(context, "remote_ip", "") or ""))

    def _request(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders,
                 target: Target) -> Request:
        fields = Headers(headers.get_all())
        if target.host:
            fields.set("Host", target.host)
        context = getattr(self.conn, "context", None)
        return Request(
            method=start_line.method, target=target.target, headers=fields,
            scheme=target.scheme, host=target.host,
            client=str(getattr(context, "remote_ip", "") or ""),
        )

    # -- request side ----------------------------------------------------------
    async def _feed(self, channel: BodyChannel, chunk: bytes) -> None:
        try:
            await channel.put(chunk)
        except BodyError:
            pass  # nobody reads any more (the answer went out early): drop the rest

    def _body_too_large(self) -> Awaitable[None]:
        """Stop reading, tell the pipeline, answer 413 unless an answer already began."""
        if not self.too_large:
            self.too_large = True
            if self.channel is not None:
                self.channel.fail("request body larger than the limit")
            if self.task is not None and not self.response_started:
                self._cancel()  # _run answers 413 once the pipeline has unwound
        if self.hold is None:
            self.hold = self.loop.create_future()
        return self.hold  # released when the connection closes or the answer is out

    def _release_hold(self) -> None:
        if self.hold is not None and not self.hold.done():
            self.hold.set_result(None)

    def _start(self) -> None:
        conn = self.conn
        if isinstance(conn, FastHTTPConnection):  # the connection's one task (serialtasks)
            self.job = self._run  # kept: `cancel` knows the job by identity
            self.task = conn.wire.tasks.submit(self.job)
        else:
            self.task = self.loop.create_task(self._run())

    def _cancel(self) -> None:
        """Stop the pipeline of this exchange (its client left, or sent too much)."""
        if self.done:
            return
        if not self.running:
            # Not begun (waiting for its turn, or a task not yet stepped into, where a
            # cancellation would skip `_run` and its clean-up): told when it begins.
            self.cancelled_early = True
            return
        conn = self.conn
        if isinstance(conn, FastHTTPConnection):
            if self.job is not None:
                conn.wire.tasks.cancel(self.job)
        elif self.task is not None:
            self.task.cancel()

    async def _reject(self, response: Response) -> None:
        """Answer at once, without reading the body, and close the connection."""
        self.too_large = True  # suppresses pipeline start in finish()
        try:
            await self._write(response, close=True)
        finally:
            self._end()

    # -- response side ---------------------------------------------------------
    async def _run(self) -> None:
        assert self.request is not None
        self.running = True
        try:
            try:
                if self.cancelled_early:
                    raise asyncio.CancelledError
                response = await self.front.handle(self.request)
            except asyncio.CancelledError:
                if self.gone or not self.too_large:
                    raise
                limit = self.front.limits.max_body_size
                response = Response.error(413, f"request body larger than {limit} bytes")
            await self._write(response, close=self.too_large)
        except asyncio.CancelledError:
            pass  # the client left; its streams were cancelled on the way out
        except Exception:  # a bug here must not leave the connection hanging
            log.exception("failed to answer %s", self._describe())
            self._close()
        finally:
            if self.channel is not None:
                self.channel.cancel()
            self._end()
            self.job = None  # a bound method of ours: kept, a cycle only the collector frees

    async def _write(self, response: Response, close: bool = False) -> None:
        request = self.request
        method = request.method if request is not None else ""
        status = response.status
        if not 200 <= status <= 999:  # 1xx would need an upgrade path we do not have
            response = Response.error(502, f"upstream sent an unusable status {status}")
            status = 502
        no_body = method == "HEAD" or status in _NO_BODY_STATUS
        body: Body = response.body
        conn = self.conn
        # The usual answer (a whole body, kept alive, on the fast wire, nothing of ours to
        # add) has its head written straight from its fields (responsehead.bodied_head);
        # the rest, and a head that refuses that way, goes through a FieldMap.
        head: bytes | None = None
        if (isinstance(body, bytes) and not no_body and not close and not self.hsts
                and not self.front.draining and isinstance(conn, FastHTTPConnection)
                and conn.keeps_alive_bodied()):
            try:
                head = bodied_head(status, _PHRASES.get(status, "Unknown"), response.headers,
                                   len(body))
            except BadField:
                pass  # the usual way refuses it, and says why
        fields: FieldMap = {}
        if head is None:
            try:
                fields = field_map(response.headers, status, no_body)
            except BadField as exc:  # refused before a byte is out: the client gets a 502
                if not isinstance(response.body, bytes):
                    response.body.cancel()
                _refused.warn("unwritable", "answer to %s refused: %s", self._describe(), exc)
                response = Response.error(502, f"upstream sent an unwritable field: {exc}")
                status = 502
                fields = field_map(response.headers, status, no_body)
            body = response.body
            if self.hsts and STS not in fields:  # an upstream's own value stands
                fields[STS] = [self.hsts]
            if self.front.draining or close:
                fields["Connection"] = ["close"]
            if no_body:
                if not isinstance(body, bytes):
                    body.cancel()
                body = b""
            elif not isinstance(body, bytes) and self.version == "HTTP/1.0":
                try:  # no chunked encoding in HTTP/1.0: learn the length first
                    body = await read_body(body, self.front.limits.max_body_size)
                except BodyError as broken:
                    return await self._write(
                        Response.error(502, f"upstream body failed: {broken}"), close)
            if isinstance(body, bytes) and not no_body:
                fields["Content-Length"] = [str(len(body))]
            elif not isinstance(body, bytes) and "Content-Length" in response.headers:
                fields["Content-Length"] = [response.headers.get("Content-Length") or "0"]
        self.response_started = True
        self.out_body = body
        try:
            first = (body or None) if isinstance(body, bytes) else None
            if head is not None and isinstance(conn, FastHTTPConnection) and isinstance(
                    body, bytes):  # (as checked above: told again for the type checker)
                await conn.write_head(head, len(body), first)
            else:
                await self._write_head(status, fields, first)
            if not isinstance(body, bytes):
                await self._stream(body)
            self.conn.finish()
        except asyncio.CancelledError:
            if not isinstance(body, bytes):
                body.cancel()
            raise
        except (iostream.StreamClosedError, httputil.HTTPOutputError, ValueError) as gone:
            if not isinstance(body, bytes):
                body.cancel()
            log.info("response to %s aborted: %s", self._describe(), gone)
            self._close()
        finally:
            self._release_hold()
            self._access(status, response)

    def _write_head(self, status: int, fields: FieldMap,
                    first: bytes | None) -> Awaitable[None]:
        """The head (and a whole body) in one write: straight from `fields` on the fast
        wire, through Tornado's HTTPHeaders on Tornado's."""
        reason = _PHRASES.get(status, "Unknown")
        if isinstance(self.conn, FastHTTPConnection):
            return self.conn.write_fields(status, reason, fields, first)
        headers = httputil.HTTPHeaders()
        for name, values in fields.items():
            for value in values:
                headers.add(name, value)
        start = httputil.ResponseStartLine("HTTP/1.1", status, reason)
        return self.conn.write_headers(start, headers, first)

    async def _stream(self, body: Any) -> None:
        while True:
            try:
                chunk = await body.read()
            except BodyError as exc:
                # Headers are out: the only honest signal left is an aborted message.
                log.warning("upstream body failed mid-response to %s: %s", self._describe(), exc)
                self._close()
                raise iostream.StreamClosedError() from exc
            if not chunk:
                return
            self.sent += len(chunk)
            await self.conn.write(chunk)

    def _close(self) -> None:
        close = getattr(self.conn, "close", None)
        if close is not None:
            close()

    def _end(self) -> None:
        if not self.done:
            self.done = True
            self.front._ended(self)

    def _describe(self) -> str:
        r = self.request
        # a log line's text: no user info and no secret query values (node.querysecrets)
        return f"{r.method} {r.host}{logged_target(r.target)} [{r.request_id}]" if r else "a client"

    def _access(self, status: int, response: Response) -> None:
        access = self.front.access_log
        if access is None:
            return
        r = self.request or Request(method="-", target="-", headers=Headers())  # refused early
        body = self.out_body
        access.log(r, response, sent_bytes=len(body) if isinstance(body, bytes) else self.sent,
                   duration=time.monotonic() - self.started_at, status=status)
