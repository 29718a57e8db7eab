"""The admin listener (default 127.0.0.1:8081): health and readiness now, more later.

`/_scale0/health` answers while the process lives (a liveness probe) with the
node's id, dc and its workers per service. `/_scale0/ready` is what a load
balancer should watch: 200 once the node serves, 503 from the moment it starts
draining, so traffic moves away before the listener closes. Other parts mount
their own pages (mesh table, metrics, purge) through `extra_routes`. This
listener is never on the public port unless the operator asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tornado.web

from gossip.load import ServiceLoad


@dataclass
class AdminState:
    """What the admin pages report; the Node keeps it current."""

    node_id: str
    dc: str
    loads: Callable[[], dict[str, ServiceLoad]]
    ready: bool = False
    draining: bool = False

    def health(self) -> dict[str, Any]:
        workers = {
            name: {"workers": load.workers, "slots": load.slots, "in_flight": load.in_flight,
                   "queued": load.queued}
            for name, load in sorted(self.loads().items())
        }
        status = "draining" if self.draining else ("ok" if self.ready else "starting")
        return {"status": status, "id": self.node_id, "dc": self.dc, "workers": workers}


class _Base(tornado.web.RequestHandler):
    def initialize(self, state: AdminState) -> None:
        self.state = state

    def send_json(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, sort_keys=True) + "\n")


class HealthHandler(_Base):
    def get(self) -> None:
        self.send_json(200, self.state.health())


class ReadyHandler(_Base):
    def get(self) -> None:
        ready = self.state.ready and not self.state.draining
        reason = "ready" if ready else ("draining" if self.state.draining else "starting")
        self.send_json(200 if ready else 503, {"ready": ready, "reason": reason,
                                               "id": self.state.node_id})


def make_admin_app(state: AdminState,
                   extra_routes: Sequence[tuple[str, type[tornado.web.RequestHandler],
                                                dict[str, Any]]] = ()) -> tornado.web.Application:
    """The admin application; `extra_routes` are (pattern, handler, kwargs) rules."""
    routes: list[Any] = [
        (r"/_scale0/health", HealthHandler, {"state": state}),
        (r"/_scale0/ready", ReadyHandler, {"state": state}),
        *extra_routes,
    ]
    return tornado.web.Application(routes)
