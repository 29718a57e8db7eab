"""A Front served on either wire layer, for tests that run on both."""

from __future__ import annotations

from collections.abc import Callable

from node.fastwire import FastHTTPServer
from node.front import Front, bound_port


async def serve_front(front: Front, wire: str) -> tuple[int, Callable[[], None]]:
    """Listen on a free loopback port with the `fast` or `tornado` wire; (port, stop).
    The fast wire's server is adopted, so `front.drain()` covers it too."""
    if wire == "fast":
        fast = FastHTTPServer(front)
        port = await fast.listen("127.0.0.1", 0)
        front.adopt(fast)
        return port, fast.stop
    server = front.listen(0, "127.0.0.1")
    return bound_port(server), server.stop
