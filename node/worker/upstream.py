"""Turn any HTTP/1.1 backend into a worker handler: a keep-alive client on asyncio.

`UpstreamClient(base_url, max_connections)` is a handler (`await client(request)`)
that forwards method, target, headers and body to the origin and returns its
answer. Responses are parsed by httptools (llhttp, in C): Tornado's
simple_httpclient proxied only ~1k req/s here. Bodies stream both ways in
chunks with backpressure, so memory stays bounded whatever their size; repeated
response headers (several Set-Cookie) keep their order. Connection refused or
reset becomes a 502 with a reason, the request's deadline a 504.

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
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from node.body import BodyChannel
from node.http import BodyError, BodyStream, Headers, Request, Response

CHUNK = 256 * 1024
READ = 64 * 1024
MAX_HEAD = 64 * 1024  # a response head (status line, headers, 1xx heads) larger is a 502
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-connection", "expect"})


class _Stale(Exception):
    """A reused connection was closed by the origin before any answer."""


class _Invalid(Exception):
    """The origin's response is not one we pass on (the reason says why): a 502."""


class _Extra(Exception):
    """Bytes came after the end of the response: raised to stop llhttp parsing them."""


@dataclass(eq=False)
class _Parse:
    """httptools callbacks: collect status, headers and body pieces."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    done: bool = False
    got_bytes: bool = False
    keep_alive: bool = False
    extra: bool = False  # bytes followed the response: the connection is not reusable
    interim: bool = False  # inside a 1xx head, which is skipped
    head_bytes: int = 0  # bytes of header fields in the final head
    fed: int = 0  # raw bytes fed before the final head ended (1xx heads included)
    parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        if self.done:
            raise _Extra()  # a second response in the same read: never part of this one

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field: not forwarded (the head has gone out already)
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            raise _Invalid(f"response head larger than {MAX_HEAD // 1024} KiB")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code() if self.parser is not None else 0
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            self.headers.clear()
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


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.reused = reader, writer, False

    def close(self) -> None:
        self.writer.close()

    def clean(self) -> bool:
        """Open, and nothing unread: bytes that came after a complete response (or while the
        connection sat idle) were never asked for, and must not answer the next request."""
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and not getattr(self.reader, "_buffer", b""))


def _strip(headers: Headers) -> list[tuple[str, str]]:
    named = {v.strip().lower() for v in headers.get_all("Connection") for v in v.split(",")}
    drop = HOP_BY_HOP | named
    return [(k, v) for k, v in headers if k.lower() not in drop]


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
        self._sem: asyncio.Semaphore | None = None
        self._pumps: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps weak ones

    async def __call__(self, request: Request) -> Response:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._max)
        timeout = (request.deadline - time.monotonic() if request.deadline
                   else self.default_timeout)
        await self._sem.acquire()
        released = False
        retry = request.method in IDEMPOTENT and isinstance(request.body, bytes)
        try:
            async with asyncio.timeout(max(0.001, timeout)):
                for attempt in (0, 1):
                    conn = await self._get(fresh=attempt > 0)
                    try:
                        resp = await self._exchange(conn, request)
                        released = True  # the body pump releases it now
                        return resp
                    except _Stale:
                        if not retry:
                            break
            return Response.error(502, f"upstream {self.authority} closed the connection "
                                       "before answering")
        except TimeoutError:
            return Response.error(504, f"upstream {self.authority} did not answer in time")
        except ConnectionRefusedError:
            return Response.error(502, f"upstream {self.authority} refused the connection")
        except _Invalid as exc:
            return Response.error(502, f"upstream {self.authority} sent {exc}")
        except (OSError, EOFError) as exc:
            return Response.error(502, f"upstream {self.authority} failed: "
                                       f"{type(exc).__name__} {exc}".strip())
        finally:
            if not released:
                self._sem.release()

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    # -- inside ----------------------------------------------------------------
    async def _get(self, fresh: bool) -> _Conn:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.clean():
                conn.reused = True
                return conn
            conn.close()
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ * 2)
        return _Conn(reader, writer)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        assert self._sem is not None
        self._sem.release()
        if reusable and len(self._idle) < self._max and conn.clean():
            self._idle.append(conn)
        else:
            conn.close()

    async def _exchange(self, conn: _Conn, request: Request) -> Response:
        """One request on `conn`; the connection is released or closed whatever happens."""
        try:
            return await self._exchange_on(conn, request)
        except BaseException:
            conn.close()  # timeouts and cancellation too: no socket is left behind
            raise

    async def _exchange_on(self, conn: _Conn, request: Request) -> Response:
        body = request.body
        headers = [(k, v) for k, v in _strip(request.headers) if k.lower() != "content-length"]
        if "host" not in {k.lower() for k, _ in headers}:
            headers.insert(0, ("Host", self.authority))
        if not isinstance(body, bytes):
            sent_length = request.headers.get("Content-Length")
            headers.append(("Content-Length", sent_length) if sent_length else
                           ("Transfer-Encoding", "chunked"))
        elif body or request.method not in ("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"):
            headers.append(("Content-Length", str(len(body))))
        head = f"{request.method} {self.prefix}{request.target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        w = conn.writer
        p = _Parse()
        parser = p.parser = httptools.HttpResponseParser(p)
        try:
            w.write(head.encode("latin-1"))
            if isinstance(body, bytes):
                if body:
                    w.write(body)
            else:
                await self._send_stream(w, body, chunked=not request.headers.get("Content-Length"))
            await w.drain()
            while not p.headers_done:
                data = await conn.reader.read(READ)
                if not data:
                    raise ConnectionResetError("closed before the response headers")
                p.got_bytes = True
                p.feed(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused and not p.got_bytes and isinstance(body, bytes):
                raise _Stale() from exc
            raise
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise _Invalid(f"status {status}, outside 100-599")
        te = ",".join(v for k, v in p.headers if k.lower() == "transfer-encoding")
        if te and te.strip().lower() != "chunked":
            raise _Invalid(f"Transfer-Encoding {te[:40]!r}, not chunked")  # nginx: the same
        out = Headers((k, v) for k, v in p.headers if k.lower() not in HOP_BY_HOP)
        if request.method == "HEAD" or status in (204, 304):
            # No body, whatever the head says; anything sent after it keeps the connection
            # out of the pool (clean()).
            keep = p.keep_alive if p.done else parser.should_keep_alive()
            self._release(conn, keep and not p.extra)
            return Response(status, out, b"")
        length = p_len(p.headers)
        # Small bodies of known length are read here: one frame, no channel.
        while not p.done and length is not None and length <= CHUNK:
            data = await conn.reader.read(READ)
            if not data:
                raise ConnectionResetError("closed in the middle of the response body")
            p.feed(data)
        if p.done:
            self._release(conn, p.keep_alive and not p.extra)
            return Response(status, out, b"".join(p.body))
        chan = BodyChannel(8)
        task = asyncio.create_task(self._pump(conn, p, chan, length, bool(te)))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return Response(status, out, chan)

    async def _send_stream(self, w: asyncio.StreamWriter, body: BodyStream, chunked: bool) -> None:
        while chunk := await body.read():
            w.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await w.drain()  # bounded memory: wait for the socket before reading more
        if chunked:
            w.write(b"0\r\n\r\n")

    async def _pump(self, conn: _Conn, p: _Parse, chan: BodyChannel, length: int | None,
                    chunked: bool) -> None:
        """Feed the response body into `chan`, holding the socket back while it is full.

        An origin silent for `read_timeout` between two reads (nginx's proxy_read_timeout)
        fails the stream: the request's deadline no longer applies once the head went out,
        and a stalled origin must not hold a slot and a socket for ever."""
        ok = False
        try:
            while True:
                pieces, p.body = p.body, []
                for piece in pieces:
                    await chan.put(piece)
                if p.done:
                    break
                async with asyncio.timeout(self.read_timeout):
                    data = await conn.reader.read(READ)
                if not data:
                    if length is None and not chunked:
                        break  # body delimited by the connection's end (RFC 9112 §6.3)
                    raise ConnectionResetError("closed in the middle of the response body")
                p.feed(data)
            chan.finish()
            ok = p.done and p.keep_alive and not p.extra
        except BodyError:
            pass  # the reader went away: drop the connection, the rest is unwanted
        except TimeoutError:
            chan.fail(f"upstream {self.authority} sent nothing for {self.read_timeout:g} s "
                      "in the middle of the response")
        except Exception as exc:
            chan.fail(f"upstream {self.authority} broke off the response: {type(exc).__name__}")
        finally:
            self._release(conn, ok)


def p_len(headers: list[tuple[str, str]]) -> int | None:
    """The response's Content-Length, or None when absent or invalid."""
    for k, v in headers:
        if k.lower() == "content-length":
            with contextlib.suppress(ValueError):
                return int(v)
            return None
    return None
