"""The admin listener (default 127.0.0.1:8081): health and readiness, and the pages
other parts mount (mesh table, metrics, purge) through `extra_routes`.

`/_scale0/health` answers while the process lives (a liveness probe) with the
node's id, dc and its workers per service. `/_scale0/ready` is what a load
balancer should watch: 200 once the node serves, 503 from the moment it starts
draining, so traffic moves away before the listener closes. This listener is
never on the public port unless the operator asks for it.

Off loopback every admin page needs the bearer token (node/admintoken.py) except
these two probes, since a load balancer or a DNS health check (Route 53 sends no
headers) cannot send one: without the token they are answered by `probe_app`,
which says only the status — 200/503 and "ok"/"starting"/"draining" — never the
id, dc, workers or peers; with it, by the full app. `make_admin_app` keeps the
probe app in its settings (`PROBES`) for `admintoken.guard` to find. Tornado's
own access lines go to DEBUG: health checks every few seconds are no news.

The listener serves `Unbranded(...)`: no answer of it says `Server: TornadoServer/<version>`
(Tornado's default on every RequestHandler answer, its 404s included), as no answer of
the main listener names a server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado import httputil

from gossip.load import ServiceLoad
from node.accesslog import quiet_log_function
from node.tls import AddFields

PROBES = "scale0_probes"  # the settings key of the token-free probe app
HEALTH, READY = r"/_scale0/health", r"/_scale0/ready"


@dataclass
class AdminState:
    """What the admin pages report; the Node keeps it current."""

    node_id: str
    dc: str
    loads: Callable[[], dict[str, ServiceLoad]]
    ready: bool = False
    draining: bool = False

    @property
    def status(self) -> str:
        return "draining" if self.draining else ("ok" if self.ready else "starting")

    def health(self) -> dict[str, Any]:
        workers = {
            name: {"workers": load.workers, "slots": load.slots, "in_flight": load.in_flight,
                   "queued": load.queued}
            for name, load in sorted(self.loads().items())
        }
        return {"status": self.status, "id": self.node_id, "dc": self.dc, "workers": workers}


class _Base(tornado.web.RequestHandler):
    def initialize(self, state: AdminState, full: bool = True) -> None:
        self.state = state
        self.full = full  # False: the token-free probe, status only

    def send_json(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, sort_keys=True) + "\n")


class HealthHandler(_Base):
    def get(self) -> None:
        self.send_json(200, self.state.health() if self.full else {"status": self.state.status})

    def head(self) -> None:  # Tornado sends the head alone (and the body's length)
        self.get()


class ReadyHandler(_Base):
    def get(self) -> None:
        ready = self.state.ready and not self.state.draining
        reason = "ready" if ready else ("draining" if self.state.draining else "starting")
        doc: dict[str, Any] = {"ready": ready, "reason": reason}
        if self.full:
            doc["id"] = self.state.node_id
        self.send_json(200 if ready else 503, doc)

    def head(self) -> None:
        self.get()


def probe_app(state: AdminState) -> tornado.web.Application:
    """/_scale0/health and /_scale0/ready saying the status only, for a checker without
    the admin token."""
    return tornado.web.Application(
        [(HEALTH, HealthHandler, {"state": state, "full": False}),
         (READY, ReadyHandler, {"state": state, "full": False})],
        log_function=quiet_log_function)


def make_admin_app(state: AdminState,
                   extra_routes: Sequence[tuple[str, type[tornado.web.RequestHandler],
                                                dict[str, Any]]] = ()) -> tornado.web.Application:
    """The admin application; `extra_routes` are (pattern, handler, kwargs) rules."""
    routes: list[Any] = [
        (HEALTH, HealthHandler, {"state": state}),
        (READY, ReadyHandler, {"state": state}),
        *extra_routes,
    ]
    app = tornado.web.Application(routes, log_function=quiet_log_function)
    app.settings[PROBES] = probe_app(state)
    return app


class Unbranded(httputil.HTTPServerConnectionDelegate):
    """`inner` (the admin app, or its token guard) answering through `AddFields`, which
    drops Tornado's `Server: TornadoServer/<version>` from every head."""

    def __init__(self, inner: httputil.HTTPServerConnectionDelegate) -> None:
        self.inner = inner

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return self.inner.start_request(server_conn, AddFields(request_conn, []))

    def on_close(self, server_conn: object) -> None:
        self.inner.on_close(server_conn)
