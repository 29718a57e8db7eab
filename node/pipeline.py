"""The request pipeline: a plain Request in, a Response out, no HTTP server in sight.

Order: in-node stages (static files) → service mapping (fills
`request.service`) → the configured stages (cache, coalescing, ...) → the
terminal call to the dispatcher (local workers, else peers: node/overflow.py).
The in-node app is not a stage: node/front.py mounts it (node/inapp.py) in front
of the pipeline, and the requests it claims never reach here. Proxy header
rules apply only at that terminal call, so what a stage sees is the client's
request and what it stores is the cleaned response. Errors of the node.errors
family become short HTTP answers here, at the edge; anything else is a bug in
this node and becomes a 500 that is logged with the request id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from node.dispatch import Dispatcher
from node.errors import NoCapacity, Scale0Error
from node.http import BodyError, Request, Response
from node.proxyheaders import (
    NO_PROXIES,
    TrustedProxies,
    downstream_headers,
    new_request_id,
    request_id_of,
    upstream_headers,
)
from node.querysecrets import logged_target
from node.services import ServiceMap
from node.stage import Next, Stage

log = logging.getLogger("scale0.pipeline")


def _link(stage: Stage, call_next: Next) -> Next:
    """`stage` with the rest of the chain bound: a Next for the stage before it."""

    def call(request: Request) -> Awaitable[Response]:
        return stage(request, call_next)

    return call


class Pipeline:
    """One node's request path. Safe to share between all requests of one loop."""

    def __init__(
        self,
        pre_stages: Sequence[Stage],
        mapper: ServiceMap,
        stages: Sequence[Stage],
        dispatcher: Dispatcher,
        node_id: str,
        *,
        known_services: Callable[[], Collection[str]] | None = None,
        new_id: Callable[[], str] = new_request_id,
        trusted: TrustedProxies = NO_PROXIES,
    ) -> None:
        # The chain is composed once: each stage's `call_next` is the rest, built here,
        # not a new closure per request and stage.
        rest: Next = self._terminal
        for stage in reversed((*pre_stages, self._map_service, *stages)):
            rest = _link(stage, rest)
        self._entry = rest
        self._mapper = mapper
        self._dispatcher = dispatcher
        self._node_id = node_id
        self._known = known_services
        self._new_id = new_id
        self._trusted = trusted  # whose X-Forwarded-* / Forwarded we believe

    @property
    def node_id(self) -> str:
        return self._node_id

    async def handle(self, request: Request) -> Response:
        """Serve one request. Never raises (except cancellation: the client left)."""
        if not request.request_id:
            request.request_id = request_id_of(request.headers, self._new_id)
        try:
            response = await self._entry(request)
        except NoCapacity as busy:
            response = Response.error(busy.status, busy.reason, retry_after=busy.retry_after)
            response.outcome = busy.outcome  # "busy" tells a forwarding peer to try elsewhere
        except Scale0Error as exc:
            response = Response.error(exc.status, exc.reason)
            response.outcome = exc.outcome
        except BodyError as broken:
            response = Response.error(400, f"request body incomplete: {broken}")
        except Exception:
            log.exception("internal error serving %s %s [%s]", request.method,
                          logged_target(request.target),
                          request.request_id)
            response = Response.error(500, "internal error in the proxy (logged)")
        if not response.served_by:
            response.served_by = self._node_id
        if not response.outcome:
            response.outcome = "local"
        if "x-request-id" not in response.headers:
            response.headers.add("X-Request-Id", request.request_id)
        return response

    def _map_service(self, request: Request, call_next: Next) -> Awaitable[Response]:
        # A plain def handing on the next stage's awaitable (node.stage): one coroutine
        # frame fewer for every answer to pass back through.
        if request.hops and request.service:
            # Forwarded by a peer, which mapped it and picked us for that service's spare
            # capacity: re-mapping by our routes could name another service (or none).
            return call_next(request)
        route = self._mapper.match(request.host, request.path)
        if route is not None:
            request.service = route.service
        else:  # only now are the known services needed, and only whether `default` is one
            known = self._known() if self._known is not None else None
            request.service = self._mapper.unrouted(request.host, known)
        return call_next(request)

    async def _terminal(self, request: Request) -> Response:
        upstream = request.with_headers(upstream_headers(request, self._node_id, self._trusted))
        response = await self._dispatcher.dispatch(request.service, upstream)
        response.headers = downstream_headers(response.headers, self._node_id, request.request_id)
        return response


class ServiceTimeouts:
    """A stage giving a request without a deadline its service's `timeout`, else
    `[workers] default_timeout`: every path after it (a local worker, the wait for room
    at a peer when no local worker serves the service) then keeps the same deadline.
    A reload builds a new pipeline, and with it a new one of these."""

    def __init__(self, timeouts: Mapping[str, float], default: float = 0.0) -> None:
        self._timeouts = timeouts
        self._default = default

    def __call__(self, request: Request, call_next: Next) -> Awaitable[Response]:
        if not request.deadline:
            timeout = self._timeouts.get(request.service) or self._default
            if timeout:
                request.deadline = request.received + timeout
        return call_next(request)  # a plain def: nothing to do after (node.stage)


Observe = Callable[[str, int, str, float], None]  # (service, status, outcome, seconds)


class NodeHandler:
    """What the node's fronts call for each request: its pipeline (a reload swaps
    `pipeline`), each answer stamped with the node (unless a peer stamped its own) and
    observed by the metrics. Here rather than a closure in node.server, so that it runs
    compiled with the rest of the request path (`make compiled`)."""

    def __init__(self, pipeline: Pipeline, stamp: str, observe: Observe,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self._stamp = stamp
        self._observe = observe
        self._clock = clock

    async def __call__(self, request: Request) -> Response:
        response = await self.pipeline.handle(request)
        if not response.outcome.startswith("forwarded"):  # a peer stamped its own
            response.headers.set("X-Scale0-Node", self._stamp)
        self._observe(request.service, response.status, response.outcome,
                      self._clock() - request.received)
        return response
