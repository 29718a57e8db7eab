"""A tiny in-node app for Scale0: `scale0 node --app hello_app:routes`.

Run with this folder on PYTHONPATH (or install it as a package). Handlers run
inside the node's event loop: keep them quick and non-blocking — anything slow
belongs in a worker (`scale0 worker --app ...`), not here.
"""

from __future__ import annotations

import json
import time

import tornado.web


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        name = self.get_query_argument("name", "world")[:64]
        self.set_header("Cache-Control", "no-store")
        self.write({"hello": name})


class TimeHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"unix": int(time.time())}))


class EchoHandler(tornado.web.RequestHandler):
    def get(self, word: str) -> None:
        self.write(word)


# The list `--app hello_app:routes` names: the same rules tornado.web.Application takes.
routes = [
    (r"/hello", HelloHandler),
    (r"/time", TimeHandler),
    tornado.web.url(r"/echo/([a-z]{1,32})", EchoHandler, name="echo"),
]

# Or a whole Application (`--app hello_app:application`), when handlers need settings.
application = tornado.web.Application(routes, xsrf_cookies=False)
