"""One exchange's `request_conn` on the fast wire: Tornado's HTTPConnection, rebuilt.

A delegate (node.front.Front, a tornado.web.Application) writes its response
through this object exactly as through Tornado's HTTP1Connection: the framing
decision is `wirerules.frame_response_head` (Tornado's rules), the head and the
first chunk leave in one transport write, and every write returns a future
that resolves once the connection's outgoing buffer is under its high-water
mark (backpressure; an already-resolved future when it is). Writing to a
closed connection gives a future failed with StreamClosedError, like Tornado.
Not thread-safe: one event loop, one exchange at a time per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from tornado import httputil, iostream

from node.responsehead import FieldMap, Framing, frame
from node.serialtasks import SerialTasks
from node.wirerules import format_chunk, frame_response_head


class Wire(Protocol):
    """What an exchange needs from its connection (node.fastwire._Wire)."""

    closed: bool
    loop: asyncio.AbstractEventLoop  # the connection's (asking asyncio costs a getpid)
    tasks: SerialTasks  # runs the connection's answers, one after another

    def send(self, data: bytes) -> asyncio.Future[None]: ...

    def exchange_finished(self, conn: FastHTTPConnection) -> None: ...

    def close(self) -> None: ...


class FieldLookup(Protocol):
    """What an exchange reads of the request's fields: Tornado's HTTPHeaders, or the
    lane's node.http.Headers."""

    def get(self, name: str, /) -> str | None: ...


class Context:
    """Tornado's per-connection context: what HTTPServerRequest reads from it."""

    __slots__ = ("address", "protocol", "remote_ip")

    def __init__(self, address: object, protocol: str) -> None:
        self.address = address
        self.protocol = protocol
        if isinstance(address, tuple) and address:
            self.remote_ip = str(address[0])
        else:
            self.remote_ip = "0.0.0.0"  # unix socket or unknown peer, as Tornado says

    def __str__(self) -> str:
        return self.remote_ip


def _failed() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(iostream.StreamClosedError())
    future.exception()  # retrieved: nobody has to await it
    return future


class FastHTTPConnection(httputil.HTTPConnection):
    """The HTTPConnection a delegate answers one request through."""

    def __init__(self, wire: Wire, context: Context, start_line: httputil.RequestStartLine,
                 headers: FieldLookup, *, keep_alive: bool, max_body_size: int,
                 body_timeout: float) -> None:
        self.wire = wire
        self.context = context
        self.start_line = start_line
        self.request_headers = headers
        self.disconnect_on_finish = not keep_alive
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.close_callback: Callable[[], None] | None = None
        self.read_finished = False
        self.write_finished = False
        self.response_started = False
        self._framing: Framing | None = None
        self._remaining: int | None = None

    # -- Tornado's HTTPConnection -------------------------------------------------
    def write_headers(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                      headers: httputil.HTTPHeaders,
                      chunk: bytes | None = None) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        framing = frame_response_head(self.start_line, self.request_headers.get("Connection"),
                                      self.disconnect_on_finish, start_line, headers)
        return self._send_head(framing, chunk)

    def write_fields(self, status: int, reason: str, fields: FieldMap,
                     chunk: bytes | None = None) -> asyncio.Future[None]:
        """write_headers for a head already in node.responsehead's form (node.front's
        answers): no HTTPHeaders in between. `fields` is changed as write_headers
        changes its headers."""
        start = self.start_line
        framing = frame(start.method, start.version, status, reason, fields,
                        request_connection=self.request_headers.get("Connection"),
                        close=self.disconnect_on_finish)
        return self._send_head(framing, chunk)

    def keeps_alive_bodied(self) -> bool:
        """Whether this exchange's answer may have its head from responsehead.bodied_head:
        an HTTP/1.1 request, not HEAD, whose connection stays open."""
        start = self.start_line
        return (not self.disconnect_on_finish and start.version == "HTTP/1.1"
                and start.method != "HEAD")

    def write_head(self, head: bytes, length: int,
                   chunk: bytes | None = None) -> asyncio.Future[None]:
        """write_fields for a head responsehead.bodied_head wrote: a body of `length`
        bytes follows it, and the connection stays open."""
        return self._send_head(Framing(head, False, length, False), chunk)

    def _send_head(self, framing: Framing, chunk: bytes | None) -> asyncio.Future[None]:
        self._framing = framing
        self._remaining = framing.expected
        self.disconnect_on_finish = framing.close
        self.response_started = True
        if self.wire.closed:
            return _failed()
        data = framing.head
        if chunk:
            data += self._format(chunk)
        return self.wire.send(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self.wire.closed:
            return _failed()
        return self.wire.send(self._format(chunk))

    def finish(self) -> None:
        if self._remaining and not self.wire.closed:
            self.wire.close()
            raise httputil.HTTPOutputError(
                f"Tried to write {self._remaining} bytes less than Content-Length")
        if self._framing is not None and self._framing.chunking and not self.wire.closed:
            self.wire.send(b"0\r\n\r\n")
        self.write_finished = True
        # Never called once the answer is out (fastproto), and it is the delegate's bound
        # method: kept, it closes a cycle (delegate -> this -> callback -> delegate) that
        # only the garbage collector frees, a request's objects at a time (§34).
        self.close_callback = None
        if not self.read_finished:
            # The answer went out before the body was read: closing is the only way
            # not to read it all (Tornado does the same).
            self.disconnect_on_finish = True
        self.wire.exchange_finished(self)

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self.close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        self.max_body_size = max_body_size

    def set_body_timeout(self, timeout: float) -> None:
        self.body_timeout = timeout

    def close(self) -> None:
        """Abort the connection (what HTTP1Connection.close does)."""
        self.wire.close()

    def detach(self) -> iostream.IOStream:
        raise NotImplementedError("the fast wire cannot hand its socket over (no websockets)")

    # -- helpers --------------------------------------------------------------------
    def _format(self, chunk: bytes) -> bytes:
        framing = self._framing
        if framing is None:  # Tornado's deprecated form: a pre-encoded head via write()
            return chunk
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining < 0:
                self.wire.close()
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        return format_chunk(chunk, framing.chunking)
