"""The metrics admin route over real HTTP on loopback."""

from __future__ import annotations

import asyncio

import tornado.httpclient
import tornado.httpserver
import tornado.web
from testkit.procs import free_port

from node.metrics import Metrics, metrics_route


def test_admin_route_serves_the_exposition() -> None:
    m = Metrics()
    m.observe_request("www", 200, "static", 0.001)

    async def go() -> tuple[int, str, bytes]:
        port = free_port()
        server = tornado.httpserver.HTTPServer(tornado.web.Application([metrics_route(m)]))
        server.listen(port, "127.0.0.1")
        try:
            client = tornado.httpclient.AsyncHTTPClient()
            head = await client.fetch(f"http://127.0.0.1:{port}/_scale0/metrics",
                                      method="HEAD")
            assert head.code == 200 and head.body == b""  # `curl -I`, not a 405
            resp = await client.fetch(f"http://127.0.0.1:{port}/_scale0/metrics")
            return resp.code, resp.headers["Content-Type"], resp.body
        finally:
            server.stop()

    code, ctype, body = asyncio.run(go())
    assert code == 200 and ctype.startswith("text/plain")
    assert b'scale0_requests_total{outcome="static",service="www",status="200"} 1.0' in body
