"""A real origin web server for end-to-end tests: `python -m origin PORT`.

/echo answers JSON describing the request it received (method, path, headers,
body size) so a test can see what the proxy forwarded; /cookies sets two
cookies; /slow?ms=N answers after N milliseconds (a slow backend, for drain
tests); /big?kib=N streams N KiB in 1 KiB writes; anything else says hello.
"""

from __future__ import annotations

import asyncio
import json
import sys

import tornado.web


class Echo(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND")

    def _echo(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "method": self.request.method,
            "uri": self.request.uri,
            "headers": list(self.request.headers.get_all()),
            "body_len": len(self.request.body),
        }))

    get = head = post = put = delete = patch = options = propfind = _echo  # type: ignore[assignment]


class Cookies(tornado.web.RequestHandler):
    def get(self) -> None:
        self.add_header("Set-Cookie", "a=1; Path=/")
        self.add_header("Set-Cookie", "b=2; Path=/; HttpOnly")
        self.finish("cookies")


class Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(int(self.get_argument("ms", "500")) / 1000)
        self.finish("slow done")


class Big(tornado.web.RequestHandler):
    async def get(self) -> None:
        for _ in range(int(self.get_argument("kib", "64"))):
            self.write(b"x" * 1024)
            await self.flush()


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(f"origin says hello to {self.request.uri}")


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/echo.*", Echo), (r"/cookies", Cookies), (r"/slow", Slow),
                                   (r"/big", Big), (r"/.*", Hello)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
