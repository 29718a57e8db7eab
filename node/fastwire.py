"""The fast HTTP/1.1 wire: httptools (llhttp) on an asyncio.Protocol, serving any
Tornado `HTTPServerConnectionDelegate` (node.front.Front, a tornado.web.Application).

Per connection, llhttp's callbacks turn bytes into events (head, body piece,
end, error) in a queue; `_pump` hands them to the delegate in Tornado's order:
`start_request`, `headers_received`, `data_received`..., `finish`, or
`on_connection_close` if the connection ends first. When a delegate method
returns an awaitable, the queue waits for it and reading pauses (request-body
flow control). Requests are served one at a time: a pipelined request waits
in the queue until the previous response is finished, so answers go out in
order; the queue holds at most one socket read, because reading pauses while
it is not empty. Reading also pauses while the outgoing buffer is over its
high-water mark, so a client that does not read cannot make us buffer.

Limits: header bytes (llhttp has none: counted here → 431), body bytes
(`set_max_body_size` → 413), and one deadline per connection checked by a
per-server sweep (cheaper than a timer per request): header timeout from the
first byte of a head (slowloris), idle timeout between requests, body timeout
while a body is read. Checks llhttp lacks are in node.wirerules.

TLS (`ssl_context`, the --https listener): the loop's own TLS layer wraps each
connection with that one context, so its `sni_callback` (node.tls.CertStore)
picks the certificate per handshake and a SIGHUP reload applies to the next
handshake without touching open connections. A connection is handed to us
(`connection_made`) only once its handshake is done; until then it is bounded by
`ssl_handshake_timeout` = the header timeout (nginx counts the handshake in
client_header_timeout too). A failed handshake — plaintext, TLS 1.0/1.1, a client
that refuses our certificate — never reaches the protocol: the loop closes it and
logs an OSError only in debug mode (a TLS 1.0/1.1 client gets the protocol_version
alert first: node.tls.FlushingSSLObject). Our close sends close_notify and waits at most
`_TLS_SHUTDOWN` seconds for the client's, then aborts. Prepared answers
(`shortcut`) are served over TLS as over plain TCP: an https slot's prepared head
carries the HSTS field the https front adds (node.hitcache.https_fields), and the
connection's scheme is part of the key, so http and https never share an answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from typing import Any

from tornado import httputil

from node.fastproto import Lane, Shortcut, WireLimits, WireProtocol

__all__ = ["FastHTTPServer", "WireLimits", "new_event_loop"]

_TOO_MANY_BODY = b"too many connections from your address\n"
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
             b"Retry-After: 1\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY))
_TLS_SHUTDOWN = 5.0  # seconds a closing TLS connection waits for the client's close_notify


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (it is a dependency), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class FastHTTPServer:
    """Listeners serving one delegate over the fast wire (plain TCP, or TLS)."""

    def __init__(self, delegate: httputil.HTTPServerConnectionDelegate, *,
                 limits: WireLimits | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.delegate = delegate
        self.limits = limits or WireLimits()
        self.ssl_context = ssl_context
        self.stopping = False
        self._servers: list[asyncio.Server] = []
        self._wires: set[WireProtocol] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._per_client: Counter[str] = Counter()
        self.refused = 0  # connections refused by max_connections_per_client
        # The delegate's lane for plain requests (node.front.Front.lane), if it has one:
        # asked once, as a delegate's mounted app is fixed when it is made.
        self.lane: Lane | None = getattr(delegate, "lane", None)

    @property
    def shortcut(self) -> Shortcut | None:
        """The delegate's prepared answers (node.front.Front.shortcut), if it has any."""
        found: Shortcut | None = getattr(self.delegate, "shortcut", None)
        return found

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        tls = self.ssl_context
        server = await loop.create_server(
            lambda: WireProtocol(self), host or None, port, reuse_port=reuse_port or None,
            ssl=tls, backlog=self.limits.backlog,
            ssl_handshake_timeout=self.limits.header_timeout if tls else None,
            ssl_shutdown_timeout=min(_TLS_SHUTDOWN, self.limits.header_timeout) if tls else None)
        self._servers.append(server)
        if self._sweeper is None:
            self._sweep()
        # typeshed says a tuple; uvloop's is a list, which compiled code (`make compiled`)
        # would refuse at this read if it were typed.
        listening: Any = server
        return int(listening.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._wires)

    @property
    def busy_connections(self) -> int:
        """Connections with an exchange in progress (what a drain waits for)."""
        return sum(1 for w in self._wires if not w.idle)

    def buffered_bytes(self) -> int:
        """Outgoing bytes waiting in our transports' buffers."""
        return sum(w.transport.get_write_buffer_size() for w in self._wires
                   if w.transport is not None)

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer."""
        self.stopping = True
        for server in self._servers:
            server.close()
        for wire in list(self._wires):
            if wire.idle:
                wire.close()

    async def close_all_connections(self, grace: float = 10.0) -> None:
        """Close every connection (buffered output is flushed first; after `grace`
        seconds the stragglers are aborted)."""
        for wire in list(self._wires):
            wire.close()
        try:
            await asyncio.wait_for(self._all_closed.wait(), grace)
        except TimeoutError:
            for wire in list(self._wires):
                if wire.transport is not None:
                    wire.transport.abort()
            await self._all_closed.wait()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _added(self, wire: WireProtocol) -> None:
        client = wire.context.remote_ip
        cap = self.limits.max_connections_per_client
        if cap and self._per_client[client] >= cap:
            # One address holding this many connections is a flood or a leak: refuse the
            # newcomer at once (nginx's limit_conn answers 503 too) and keep the others.
            self.refused += 1
            if wire.transport is not None:
                wire.transport.write(_TOO_MANY)
                wire.transport.close()
            return
        self._per_client[client] += 1
        self._wires.add(wire)
        self._all_closed.clear()
        if self.stopping:
            # A TLS handshake that finished after stop(): the connection is idle, so it
            # closes now, as stop() closed the idle ones (a plain one cannot arrive then).
            wire.close()

    def _removed(self, wire: WireProtocol) -> None:
        if wire not in self._wires:
            return  # refused at _added: never counted, never shown to the delegate
        self._wires.discard(wire)
        client = wire.context.remote_ip
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]
        if not self._wires:
            self._all_closed.set()
        self.delegate.on_close(wire)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for wire in list(self._wires):
            if wire.deadline and wire.deadline <= now:
                wire.expired(now)
        limits = self.limits
        tick = min(limits.header_timeout, limits.idle_timeout, limits.body_timeout) / 4
        self._sweeper = loop.call_later(max(0.02, min(tick, 1.0)), self._sweep)
