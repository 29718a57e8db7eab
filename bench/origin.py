"""A fast benchmark origin: asyncio + httptools on uvloop, answering from memory.

It must be much faster than whatever it stands behind, so that a benchmark
measures the proxy and not the origin (Tornado would cap everything near 6k
req/s here). `/bytes/N` answers N bytes; `?delay=MS` waits first; every answer
carries `Cache-Control: max-age=3600` unless `?nocache=1`. It counts requests
and prints the count on `/_count`.

    python -m bench.origin --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket

import httptools

_count = 0


def nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: an answer written in pieces must not wait for a delayed ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LlhttpProtocol(asyncio.Protocol):
    """A connection whose bytes go to llhttp (the bench's origin, bench.skeleton's node);
    a malformed request is answered 400 and the connection closed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()


class OriginProtocol(LlhttpProtocol):
    """`/bytes/N`, `?delay=MS`, `?nocache=1` and `/_count` (the module docstring)."""

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        global _count
        url = httptools.parse_url(self.url)
        path = url.path.decode()
        query = (url.query or b"").decode()
        keep_alive = self.parser.should_keep_alive()
        if path == "/_count":
            body = str(_count).encode()
            self._send(body, "no-store", keep_alive)
            return
        _count += 1
        size = 1024
        if path.startswith("/bytes/"):
            with contextlib.suppress(ValueError):
                size = max(0, min(int(path[7:]), 64 * 1024 * 1024))
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        cache = "no-store" if params.get("nocache") else "public, max-age=3600"
        body = b"x" * size
        delay_ms = float(params.get("delay", "0") or 0)
        if delay_ms > 0:
            asyncio.get_running_loop().call_later(
                delay_ms / 1000, self._send, body, cache, keep_alive
            )
        else:
            self._send(body, cache, keep_alive)

    def _send(self, body: bytes, cache: str, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        lines = [
            "HTTP/1.1 200 OK",
            "Content-Type: application/octet-stream",
            f"Content-Length: {len(body)}",
            f"Cache-Control: {cache}",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n").encode()
        self.transport.write(head + b"\r\n" + body)
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(OriginProtocol, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"origin listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
