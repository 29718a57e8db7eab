"""An HTTP origin on raw asyncio sockets that misbehaves byte by byte, on purpose.

The first path segment picks the misbehaviour (`/garbage`, `/reset`, ...; see
`SCENARIOS`); anything else is a well-formed keep-alive `200 ok`. Requests are
read in a loop on each connection, so keep-alive reuse by the client is real.
`HostileOrigin` runs in the test's own loop (integration tests) or, with
`python -m testkit.hostileorigin PORT`, as a process of its own (e2e tests).
Counters (`seen`, `open_conns`, `sent`) let tests check what reached it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

W = asyncio.StreamWriter
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"


class HostileOrigin:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()  # requests per first path segment
        self.methods: Counter[str] = Counter()  # "METHOD /segment" per request
        self.open_conns = 0
        self.sent = 0  # body bytes written by /huge
        self.extra_sent = asyncio.Event()  # /longlater wrote its extra response
        self.server: asyncio.Server | None = None
        self._writers: set[W] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: W) -> None:
        self.open_conns += 1
        self._writers.add(writer)
        served = 0
        try:
            while served < 10_000:  # bounded: a test never needs more on one connection
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ", 2)[:2]
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                name = target.decode().lstrip("/").split("/", 1)[0].split("?", 1)[0]
                served += 1
                self.seen[name] += 1
                self.methods[f"{method.decode()} /{name}"] += 1
                scenario = SCENARIOS.get(name, _ok)
                if not await scenario(self, writer, reader, served):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        finally:
            self.open_conns -= 1
            self._writers.discard(writer)
            writer.close()


Scenario = Callable[[HostileOrigin, W, asyncio.StreamReader, int], Awaitable[bool]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__.strip("_")] = fn
    return fn


def _send(raw: bytes, keep: bool = False) -> Scenario:
    async def answer(_o: HostileOrigin, w: W, _r: asyncio.StreamReader, _n: int) -> bool:
        w.write(raw)
        await w.drain()
        return keep

    return answer


def _head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_ok = _send(OK, keep=True)
SCENARIOS.update({
    "ok": _ok,
    "garbage": _send(b"HTTX/1.1 200 OK\r\n\r\nxx"),
    "bighead": _send(_head("HTTP/1.1 200 OK", *(f"X-Pad-{i}: {'p' * 1000}" for i in range(70)),
                           "Content-Length: 2") + b"ok"),
    # Over every limit (the 64 KiB head, the worker protocol's 96 KiB string / 24 Ki fields):
    # 20 KB and 300 fields, which a node now takes, were refused here once.
    "bigvalue": _send(_head("HTTP/1.1 200 OK", f"X-Big: {'v' * 100_000}", "Content-Length: 2")
                      + b"ok", keep=True),
    "manyheaders": _send(_head("HTTP/1.1 200 OK", *(f"X-N{i}: v" for i in range(30_000)),
                               "Content-Length: 2") + b"ok", keep=True),
    "cr": _send(b"HTTP/1.1 200 OK\r\nX-Split: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\n"
                b"ok"),
    "lf": _send(b"HTTP/1.1 200 OK\r\nX-Split: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\n"
                b"ok"),
    "nul": _send(b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
    "twocl": _send(_head("HTTP/1.1 200 OK", "Content-Length: 2", "Content-Length: 12")
                   + b"okSMUGGLEDxx"),
    "clte": _send(_head("HTTP/1.1 200 OK", "Content-Length: 2", "Transfer-Encoding: chunked")
                  + b"2\r\nok\r\n0\r\n\r\n"),
    "tegzip": _send(_head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip") + b"ok"),
    "badchunk": _send(_head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked")
                      + b"%x\r\n%b\r\nzz\r\nxx\r\n0\r\n\r\n" % (300_000, b"c" * 300_000)),
    "short": _send(_head("HTTP/1.1 200 OK", "Content-Length: 100000") + b"x" * 10),
    "shortbig": _send(_head("HTTP/1.1 200 OK", "Content-Length: 1000000") + b"x" * 300_000),
    "long": _send(_head("HTTP/1.1 200 OK", "Content-Length: 2") + b"ok" + SMUGGLED, keep=True),
    "interim": _send(_head("HTTP/1.1 100 Continue") + _head("HTTP/1.1 103 Early Hints",
                                                             "Link: </a.css>; rel=preload")
                     + OK, keep=True),
    "upgrade": _send(_head("HTTP/1.1 101 Switching Protocols", "Upgrade: x", "Connection: upgrade")
                     + b"raw bytes", keep=True),
    "nocontent": _send(_head("HTTP/1.1 204 No Content", "Content-Length: 5") + b"hello",
                       keep=True),
    "notmodified": _send(_head("HTTP/1.1 304 Not Modified", "Content-Length: 5") + b"hello",
                         keep=True),
    "weird": _send(_head("HTTP/1.1 999 Weird", "Content-Length: 2") + b"ok", keep=True),
    "http10": _send(_head("HTTP/1.0 200 OK", "X-Old: 1") + b"h" * 300_000),
    "http10small": _send(_head("HTTP/1.0 200 OK") + b"hello"),
})


@scenario
async def _longlater(o: HostileOrigin, w: W, _r: asyncio.StreamReader, _n: int) -> bool:
    """A complete answer, then (in its own write) a second, unasked-for one."""
    w.write(_head("HTTP/1.1 200 OK", "Content-Length: 2") + b"ok")
    await w.drain()
    w.write(SMUGGLED)
    await w.drain()
    o.extra_sent.set()
    return True


@scenario
async def _silent(_o: HostileOrigin, _w: W, r: asyncio.StreamReader, _n: int) -> bool:
    """Accept the request, never answer; hold the connection until the client leaves."""
    while await r.read(65536):
        pass
    return False


@scenario
async def _drip(_o: HostileOrigin, w: W, _r: asyncio.StreamReader, _n: int) -> bool:
    """The status line one byte a second (well past any test's deadline)."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(1.0)  # the origin's misbehaviour, not a synchronisation
    return False


@scenario
async def _stall(_o: HostileOrigin, w: W, r: asyncio.StreamReader, _n: int) -> bool:
    """Headers and part of a large body, then nothing: the connection stays open."""
    w.write(_head("HTTP/1.1 200 OK", "Content-Length: 1000000") + b"s" * 300_000)
    await w.drain()
    while await r.read(65536):
        pass
    return False


@scenario
async def _reset(_o: HostileOrigin, w: W, _r: asyncio.StreamReader, _n: int) -> bool:
    """Part of a large body, then a TCP reset (SO_LINGER 0), not an orderly close."""
    w.write(_head("HTTP/1.1 200 OK", "Content-Length: 1000000") + b"r" * 300_000)
    await w.drain()
    sock = w.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()
    return False


@scenario
async def _racy(_o: HostileOrigin, w: W, _r: asyncio.StreamReader, n: int) -> bool:
    """Keep-alive for the first request; close without answering the second on the same
    connection (the origin's idle close racing the client's reuse)."""
    if n > 1:
        return False
    w.write(OK)
    await w.drain()
    return True


@scenario
async def _huge(o: HostileOrigin, w: W, _r: asyncio.StreamReader, _n: int) -> bool:
    """A 1 GiB body, written as fast as the client takes it."""
    total = 1 << 30
    w.write(_head("HTTP/1.1 200 OK", f"Content-Length: {total}"))
    block = b"\0" * (256 * 1024)
    for _ in range(total // len(block)):
        w.write(block)
        await w.drain()
        o.sent += len(block)
    return True


async def _main(port: int) -> None:
    origin = HostileOrigin()
    await origin.start(port)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
