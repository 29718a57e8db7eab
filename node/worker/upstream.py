"""Turn any HTTP/1.1 backend into a worker handler: a keep-alive client on asyncio.

`UpstreamClient(base_url, max_connections)` is a handler (`await client(request)`)
that forwards method, target, headers and body to the origin and returns its
answer. Responses are parsed by httptools (llhttp, in C): Tornado's
simple_httpclient proxied only ~1k req/s here. Bodies stream both ways in
chunks with backpressure, so memory stays bounded whatever their size; repeated
response headers (several Set-Cookie) keep their order. Connection refused or
reset becomes a 502 with a reason, the request's deadline a 504.

Connections are reused only after a complete response the origin agreed to keep
alive. A request on a reused connection that the origin had already closed is
retried once on a fresh one (the usual keep-alive race), if its body is bytes.
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
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-connection", "expect"})


class _Stale(Exception):
    """A reused connection was closed by the origin before any answer."""


@dataclass(eq=False)
class _Parse:
    """httptools callbacks: collect status, headers and body pieces."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    done: bool = False
    got_bytes: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(bytes(body))

    def on_message_complete(self) -> None:
        # Asked now: llhttp resets its flags once the message is complete.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()
        self.done = True


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.reused = reader, writer, False

    def close(self) -> None:
        self.writer.close()


def _strip(headers: Headers) -> list[tuple[str, str]]:
    named = {v.strip().lower() for v in headers.get_all("Connection") for v in v.split(",")}
    drop = HOP_BY_HOP | named
    return [(k, v) for k, v in headers if k.lower() not in drop]


class UpstreamClient:
    """A handler forwarding requests to the HTTP/1.1 origin at `base_url`."""

    def __init__(self, base_url: str, max_connections: int = 32, *,
                 connect_timeout: float = 5.0, default_timeout: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT][/PREFIX], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.authority = url.netloc
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
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
        try:
            async with asyncio.timeout(max(0.001, timeout)):
                for attempt in (0, 1):
                    conn = await self._get(fresh=attempt > 0)
                    try:
                        resp = await self._exchange(conn, request)
                        released = True  # the body pump releases it now
                        return resp
                    except _Stale:
                        conn.close()
                        if not isinstance(request.body, bytes):
                            break
            return Response.error(502, "the upstream closed the connection before answering")
        except TimeoutError:
            return Response.error(504, f"upstream {self.authority} did not answer in time")
        except ConnectionRefusedError:
            return Response.error(502, f"upstream {self.authority} refused the connection")
        except httptools.HttpParserError as exc:
            return Response.error(502, f"upstream {self.authority} sent an invalid response "
                                       f"({type(exc).__name__})")
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
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ * 2)
        return _Conn(reader, writer)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        assert self._sem is not None
        self._sem.release()
        if reusable and len(self._idle) < self._max:
            self._idle.append(conn)
        else:
            conn.close()

    async def _exchange(self, conn: _Conn, request: Request) -> Response:
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
        w.write(head.encode("latin-1"))
        if isinstance(body, bytes):
            if body:
                w.write(body)
        else:
            await self._send_stream(w, body, chunked=not request.headers.get("Content-Length"))
        p = _Parse()
        parser = p.parser = httptools.HttpResponseParser(p)
        try:
            await w.drain()
            while not p.headers_done:
                data = await conn.reader.read(READ)
                if not data:
                    raise ConnectionResetError("closed before the response headers")
                p.got_bytes = True
                parser.feed_data(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused and not p.got_bytes:
                raise _Stale() from exc
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise
        status = parser.get_status_code()
        out = Headers((k, v) for k, v in p.headers if k.lower() not in HOP_BY_HOP)
        if request.method == "HEAD" or status in (204, 304):
            self._release(conn, parser.should_keep_alive() and status >= 200 and p.got_bytes)
            return Response(status, out, b"")
        length = p_len(p.headers)
        # Small bodies of known length are read here: one frame, no channel.
        while not p.done and length is not None and length <= CHUNK:
            data = await conn.reader.read(READ)
            if not data:
                conn.close()
                raise ConnectionResetError("closed in the middle of the response body")
            parser.feed_data(data)
        if p.done:
            self._release(conn, p.keep_alive)
            return Response(status, out, b"".join(p.body))
        chan = BodyChannel(8)
        task = asyncio.create_task(self._pump(conn, parser, p, chan, length))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return Response(status, out, chan)

    async def _send_stream(self, w: asyncio.StreamWriter, body: BodyStream, chunked: bool) -> None:
        while chunk := await body.read():
            w.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await w.drain()  # bounded memory: wait for the socket before reading more
        if chunked:
            w.write(b"0\r\n\r\n")

    async def _pump(self, conn: _Conn, parser: httptools.HttpResponseParser, p: _Parse,
                    chan: BodyChannel, length: int | None) -> None:
        """Feed the response body into `chan`, holding the socket back while it is full."""
        ok = False
        try:
            while True:
                pieces, p.body = p.body, []
                for piece in pieces:
                    await chan.put(piece)
                if p.done:
                    break
                data = await conn.reader.read(READ)
                if not data:
                    chunked = any(k.lower() == "transfer-encoding" for k, _ in p.headers)
                    if length is None and not chunked:
                        break  # body delimited by the connection's end (RFC 9112 §6.3)
                    raise ConnectionResetError("closed in the middle of the response body")
                parser.feed_data(data)
            chan.finish()
            ok = p.done and p.keep_alive
        except BodyError:
            pass  # the reader went away: drop the connection, the rest is unwanted
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
