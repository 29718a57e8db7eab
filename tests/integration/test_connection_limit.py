"""One address may hold only so many connections to the fast wire; others keep theirs."""

from __future__ import annotations

import asyncio

import tornado.web

from node.fastwire import FastHTTPServer, WireLimits, new_event_loop


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    return await asyncio.wait_for(reader.read(4096), 5)


async def _main() -> None:
    server = FastHTTPServer(tornado.web.Application([(r"/", Hello)]),
                            limits=WireLimits(max_connections_per_client=3))
    port = await server.listen("127.0.0.1", 0)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for reader, writer in held:  # each is served (and counted once it is open)
        assert b"hello" in await _exchange(reader, writer)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await asyncio.wait_for(reader.read(), 5)  # answered, then closed by the server
    assert refused.startswith(b"HTTP/1.1 503") and b"too many connections" in refused
    assert server.refused == 1
    for r, w in held:  # the three that were in still work
        assert b"hello" in await _exchange(r, w)
    _, w0 = held.pop()
    w0.close()
    await w0.wait_closed()
    for _ in range(200):  # the server notices the close, then has room again
        if server.connections == 2:
            break
        await asyncio.sleep(0.01)  # polling a real condition with a bound
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert b"hello" in await _exchange(reader, writer)
    writer.close()
    for _, w in held:
        w.close()
    server.stop()
    await server.close_all_connections(1.0)


def test_connections_per_client_are_capped() -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_main())
