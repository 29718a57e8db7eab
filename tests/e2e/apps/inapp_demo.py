"""An in-node Tornado app for end-to-end tests (`scale0 node --app inapp_demo:routes`)."""

from __future__ import annotations

import tornado.web


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"inapp": True, "name": self.get_query_argument("name", "world")[:32]})


routes = [(r"/_app/hello", Hello)]
