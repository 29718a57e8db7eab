"""The seam between the request pipeline and whatever serves a request remotely.

The worker broker implements `Dispatcher` for local workers; the mesh forwarder
implements it for peers. Both read `request.deadline` (absolute monotonic time)
and raise the `node.errors` family: `NoCapacity` (no free slot before the
deadline), `UpstreamError` (502), `UpstreamTimeout` (504).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from gossip.load import ServiceLoad
from node.http import Request, Response


class Withdrawn(Exception):
    """A request taken out of a local queue at its dispatcher's word (node.broker's
    `withdraw`: room appeared at a peer), before any worker saw it."""


def cancel_quietly(task: asyncio.Future[Any]) -> None:
    """Cancel `task`, whose outcome nobody reads any more (the client left). A task whose
    answer came in the same loop turn ends with that answer's exception instead of the
    cancellation (asyncio.wait_for returns what its future holds); retrieved here, it is
    not logged as "Task exception was never retrieved", with a traceback, at ERROR."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Dispatcher(Protocol):
    def dispatch(self, service: str, request: Request) -> Awaitable[Response]:
        """Serve `request` with a worker of `service`; the response body may stream."""
        ...


class LoadSource(Protocol):
    def service_loads(self) -> dict[str, ServiceLoad]:
        """The current load of every service this node's workers offer."""
        ...
