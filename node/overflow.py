"""The dispatcher that overflows to peers: local workers first, then the mesh.

It decides with mesh.routing (pure) and then acts: a local dispatch through the
worker broker, or a forward over the peer socket to the candidates in order.
A peer that answers "busy" costs nothing but a round trip and we try the next;
a peer that fails or times out opens its circuit a little (mesh.breaker), and
only idempotent requests move on to another peer after that (a POST may have
been executed). When nobody takes it, the request waits in the local queue
until its deadline (the broker answers 503 + Retry-After then), and leaves it if
room appears at a peer first (a new load report, or one of our forwards
finishing: `_queued`, the broker's `withdraw`) — unless no worker here offers the
service at all: then it waits for room at a peer and decides again.

A forward waits for its peer's answer only while that peer's process is the one it
was sent to: when the membership says the peer is dead or left (`peer_down`), or that
a later process now speaks under its id (`peer_life`: a restart), the forwards in
flight to it are given up at once — what that process held died with it — and an
idempotent one moves on to another peer or runs here. Each forward names the process
it is meant for (`ForwardedRequest.life`), and a restarted peer refuses one meant for
its earlier process, so a forward given up on never runs twice. Nothing new is sent
to a peer that is no longer alive, even if it was chosen a moment before.

The receiving side (`ForwardedServer`) runs a forwarded request through the
node's own pipeline with the hop count set, so its cache can answer and its
routing never forwards a second time (hop limit 1). A node that stops answers
every forwarded request it took (gossip.transport `stop_serving`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from gossip.transport import PeerError, PeerRefused, PeerReply, PeerRequest, PeerTimeout, Refuse
from mesh.breaker import Breakers
from mesh.forward import (
    KIND,
    ForwardedRequest,
    ForwardedResponse,
    ForwardError,
    decode_request,
    decode_response,
    request_meta,
    response_meta,
)
from mesh.loadtable import LoadTable
from mesh.rates import RateMeter, ShareMeter
from mesh.routing import Candidate, OverflowPolicy, Route, decide
from node.body import BodyTooLong, read_body
from node.dispatch import Withdrawn, cancel_quietly
from node.errors import (
    BodyTooLarge,
    ClientError,
    NoCapacity,
    PeerBusy,
    UpstreamError,
    UpstreamTimeout,
)
from node.http import BodyError, Headers, Request, Response

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# A request body travels to a peer inside one peer message, so it is held whole: bodies
# the front door streams (>= 64 KiB) stay with a local worker; a node with no worker for
# the service reads them up to this size to forward them, and refuses larger ones (413).
MAX_FORWARD_BODY = 32 * 1024 * 1024
MAX_FORWARD_ANSWER = 64 * 1024 * 1024  # a forwarded answer is one peer message (its size cap)
BUSY_REASON = "busy"  # in a refusal's reason: the request did not run (any method may go on)
# A restarted peer's answer to a forward meant for its earlier process (it did not run).
RESTARTED_REASON = "busy: restarted since (a forward meant for the earlier process)"
# A peer that served the request but whose answer is too big for one peer message says
# so with this reason: it is healthy (no breaker failure), and asking another peer would
# only run the request again for the same outcome.
TOO_LARGE_REASON = "answer too large to forward"


class _TooLargeToForward(Exception):
    """A peer ran the request; its answer cannot come back over the peer socket."""


class _GivenUp(Exception):
    """The membership said the peer's process is gone (`peer_down`, `peer_life`)."""


class LocalBroker(Protocol):
    def dispatch(self, service: str, request: Request, *,
                 withdraw: asyncio.Future[None] | None = None,
                 reroute: Callable[[str, Request], Awaitable[Response]] | None = None
                 ) -> Awaitable[Response]:
        """Takes the request (a worker, or the queue) in the call itself (node.broker)."""
        ...

    def service_loads(self) -> Mapping[str, Any]: ...

    def capacity(self, service: str) -> tuple[int, int]: ...


class PeerClient(Protocol):
    async def request(
        self,
        endpoint: str,
        kind: str,
        meta: dict[str, Any] | None = None,
        body: tuple[bytes, ...] = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> PeerReply: ...


class OverflowDispatcher:
    """A `node.dispatch.Dispatcher` that spills over to peers chosen by advertised load."""

    def __init__(
        self,
        broker: LocalBroker,
        table: LoadTable,
        peers: PeerClient,
        *,
        node_id: str,
        dc: str,
        policies: Mapping[str, OverflowPolicy] | None = None,
        breakers: Breakers | None = None,
        default_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.broker = broker
        self.table = table
        self.peers = peers
        self.node_id = node_id
        self.dc = dc
        self.policies = dict(policies or {})
        self.breakers = breakers or Breakers()
        self.default_timeout = default_timeout
        self.clock = clock
        self.rng = rng or random.Random()
        self.rtt_ms: dict[str, float] = {}  # EWMA of round trips to each peer
        self.forwarded_out = RateMeter()
        self.forwarded_in = RateMeter()
        # Since start, for the forwarded_total counter: the meters above forget (a window).
        self.sent = 0
        self._share: dict[str, ShareMeter] = {}
        self._inflight: dict[str, set[asyncio.Task[PeerReply]]] = {}
        self.lives: dict[str, int] = {}  # peer -> its process (gossip MemberView.life)
        self._room_changed: asyncio.Future[None] | None = None  # waiters for room (`_room`)
        # Per service since the last report: the peers' room when first asked, and how many
        # queued requests left for it (`_claim_room`).
        self._claimed: dict[str, list[int]] = {}
        # Requests in the local queue that may leave for a peer's room, by service: each
        # one's `withdraw` future, oldest first (`room_may_have_changed` hands room out).
        self._leavers: dict[str, dict[asyncio.Future[None], None]] = {}
        self._reroute = self._route_again  # bound once: handed to the broker per request

    def peer_down(self, peer: str) -> None:
        """The failure detector says `peer` is dead or left: stop waiting for it now.

        Its in-flight forwards fail at once, so idempotent ones move on to another
        candidate instead of waiting for their deadline."""
        self.lives.pop(peer, None)
        self._give_up(peer)

    def peer_life(self, peer: str, life: int) -> None:
        """The membership names `peer`'s process (gossip `MemberView.life`; 0: not known).
        A different one than before is a restart: the forwards in flight to the earlier
        process are given up at once, as for `peer_down` (the restarted peer refuses
        them if they reach it: `ForwardedServer`)."""
        old = self.lives.get(peer, 0)
        if not life or life == old:
            return
        self.lives[peer] = life
        if old:
            self._give_up(peer)

    def _give_up(self, peer: str) -> None:
        for task in self._inflight.pop(peer, set()):
            task.cancel()
        self.breakers.forget(peer)

    def policy(self, service: str) -> OverflowPolicy:
        return self.policies.get(service) or self.policies.get("*") or OverflowPolicy()

    def _candidates(self, service: str, now: float) -> list[Candidate]:
        out = []
        for peer, dc, addresses, services in self.table.alive_peers():
            if service not in services or "peer" not in addresses:
                continue
            if self.breakers.is_open(peer, now):
                continue
            free = self.table.effective_free(peer, service)
            if free > 0:
                out.append(Candidate(peer, dc, self.rtt_ms.get(peer, float("inf")), free))
        return out

    def dispatch(self, service: str, request: Request) -> Awaitable[Response]:
        share = self._share.get(service) or self._share.setdefault(service, ShareMeter())
        if request.hops == 0 and self.broker.capacity(service)[1] > 0:
            # A free slot here: `decide` answers LOCAL whatever the policy and the peers
            # say (mesh/routing.py), so the common case skips asking (a test holds the two
            # to the same answer) — and hands on the broker's awaitable from a plain def,
            # one coroutine frame fewer for the answer to pass back through.
            share.add(self.clock(), marked=False)
            return self.broker.dispatch(service, request, reroute=self._reroute)
        return self._route(service, request, share)

    def _route_again(self, service: str, request: Request) -> Awaitable[Response]:
        """The broker's word that the worker it chose was already gone and no other
        serves `service` here (node.broker `reroute`): decide again, peers included."""
        return self._route(service, request, self._share[service])

    async def _route(self, service: str, request: Request, share: ShareMeter) -> Response:
        policy = self.policy(service)
        deadline = request.deadline or (request.received + self.default_timeout)
        # Set on the request: time spent here waiting for room counts, and the broker (or
        # a peer) must not start the request's whole timeout again afterwards.
        request.deadline = deadline
        if (request.hops == 0 and not isinstance(request.body, bytes) and policy.enabled
                and self.broker.capacity(service)[0] == 0):
            request.body = await _upload_to_forward(service, request)
        while True:
            now = self.clock()
            slots, free = self.broker.capacity(service)
            decision = decide(
                local_free=free,
                local_slots=slots,
                hops=request.hops,
                self_dc=self.dc,
                # Peers matter only when no local slot is free: scanning the load table
                # for every request was a few % of a miss's CPU.
                candidates=(self._candidates(service, now)
                            if request.hops == 0 and free <= 0 else []),
                policy=policy,
                share_away=share.share(now),
                rng=self.rng,
            )
            if decision.route is Route.BUSY:
                raise PeerBusy(f"{self.node_id} has no spare slot for {service!r}")
            forwardable = _forwardable(request)
            if decision.route is Route.PEERS and forwardable:
                body = request.body if isinstance(request.body, bytes) else b""
                for peer in decision.peers:
                    try:
                        response = await self._try_peer(peer, service, request, body)
                    except _TooLargeToForward:
                        if request.method not in IDEMPOTENT or slots == 0:
                            raise UpstreamError(
                                f"the answer from {peer} is larger than a forwarded answer "
                                f"may be ({MAX_FORWARD_ANSWER} bytes)") from None
                        break  # a worker here streams it: run it here
                    if response is not None:
                        share.add(self.clock(), marked=True)
                        return response
            # No worker here could ever take it (none offers the service): the local
            # queue would only hold it until its deadline. Wait for room at a peer —
            # a report, or one of our forwards finishing — and decide again.
            if slots == 0 and request.fail_fast:
                # Nobody here or at a peer can take it now, and the caller has an answer
                # of its own (a stale entry): nginx's use_stale on a refused connection.
                raise NoCapacity(f"no worker for {service!r} here or at a peer",
                                 retry_after=1)
            if (decision.route is not Route.LOCAL and slots == 0 and request.hops == 0
                    and forwardable and policy.enabled and await self._room(deadline)):
                continue
            if (decision.route is not Route.LOCAL and slots > 0 and request.hops == 0
                    and forwardable and policy.enabled):
                response = await self._queued(service, request)
                if response is None:
                    continue  # out of the queue for a peer's room: decide again
                share.add(self.clock(), marked=False)
                return response
            share.add(self.clock(), marked=False)
            # A forwarded one stranded here (its worker gone) is refused as busy by
            # `_route`, so its sender tries elsewhere instead of waiting for its deadline.
            return await self.broker.dispatch(service, request, reroute=self._reroute)

    async def _queued(self, service: str, request: Request) -> Response | None:
        """Wait in the local queue, and leave it for a peer that has room first: None when
        it left (the caller decides again and forwards). Nobody had room when the request
        was queued; whichever frees first — a worker here or a peer — takes it, as a
        queue in front of several upstreams hands a request to the first that frees. At
        most as many leave per load report as the peers have room for, oldest first
        (`room_may_have_changed`). The broker's sweep answers it at its deadline.

        It awaits the broker's answer alone: no task and no asyncio.wait per queued
        request (both interpreted; with the workers saturated they were a third of the
        node's CPU a request, bench_profile.md §34)."""
        withdraw: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._leavers.get(service)
        if waiting is None:
            waiting = self._leavers[service] = {}
        waiting[withdraw] = None
        try:
            return await self.broker.dispatch(service, request, withdraw=withdraw)
        except Withdrawn:
            return None
        finally:
            waiting.pop(withdraw, None)
            if not waiting and self._leavers.get(service) is waiting:
                del self._leavers[service]

    def _room_event(self) -> asyncio.Future[None]:
        """The future `room_may_have_changed` resolves next (shared by `_room`'s waiters;
        queued requests are handed room there instead, and their claims reset there)."""
        if self._room_changed is None or self._room_changed.done():
            self._room_changed = asyncio.get_running_loop().create_future()
        return self._room_changed

    def _claim_room(self, service: str) -> bool:
        """One queued request may leave for a peer: fewer have left since the last report
        than the peers' effective free slots for `service` (mesh.loadtable) were then.
        The room is counted once per report: those that left lower it as they are sent,
        and counting it again would hold back requests it still has room for."""
        claim = self._claimed.get(service)
        if claim is None:
            free = sum(c.free for c in self._candidates(service, self.clock()))
            claim = self._claimed[service] = [free, 0]
        if claim[1] >= claim[0]:
            return False
        claim[1] += 1
        return True

    async def _room(self, deadline: float) -> bool:
        """Wait until room may have appeared somewhere (or the deadline); False once the
        deadline has passed."""
        left = deadline - self.clock()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self._room_event()), left)
        except TimeoutError:
            pass
        return True

    def room_may_have_changed(self) -> None:
        """New load reports, or a slot a forward of ours held at a peer is free again:
        requests waiting for room decide again, and queued ones leave for the room the
        peers now have, oldest first."""
        if self._room_changed is not None and not self._room_changed.done():
            self._room_changed.set_result(None)
        if not self._leavers:
            return
        self._claimed.clear()  # a new report: peers' room counted afresh
        # As many as there is room for, per service: a call costs what leaves, not what
        # waits (it runs after every forward that finishes, too).
        for service, waiting in self._leavers.items():
            while waiting and self._claim_room(service):
                withdraw = next(iter(waiting))
                del waiting[withdraw]
                withdraw.set_result(None)  # the broker takes it out of the queue

    async def _try_peer(
        self, peer: str, service: str, request: Request, body: bytes
    ) -> Response | None:
        """Forward to one peer; None means "try the next one" (busy, or a safe retry)."""
        now = self.clock()
        if not self.breakers.allows(peer, now):
            return None
        # Chosen a moment ago, it may have left or died since (a "busy" peer before it
        # took a round trip): `peer_down` released what it held, and nothing new goes there.
        endpoint = self.table.peer_endpoint(peer)
        deadline = request.deadline or (request.received + self.default_timeout)
        ttl = deadline - now
        if not endpoint or ttl <= 0:
            self.breakers.release(peer)  # nothing sent: no verdict on the peer
        if not endpoint:
            return None
        if ttl <= 0:
            raise UpstreamTimeout("the request's deadline passed before it could be forwarded")
        fwd = ForwardedRequest(
            service=service,
            method=request.method,
            target=request.target,
            headers=tuple(request.headers),
            body=body,
            scheme=request.scheme,
            host=request.host,
            client=request.client,
            request_id=request.request_id,
            ttl=ttl,
            hops=request.hops + 1,
            life=self.lives.get(peer, 0),
        )
        token = self.table.note_sent(peer, service)
        self.forwarded_out.add(now)
        self.sent += 1
        started = self.clock()
        call = asyncio.ensure_future(
            self.peers.request(
                endpoint, KIND, request_meta(fwd), (body,) if body else (), timeout=ttl
            )
        )
        self._inflight.setdefault(peer, set()).add(call)
        try:
            try:
                reply = await asyncio.shield(call)
            except asyncio.CancelledError:
                if not call.cancelled():  # we were cancelled (client left), not the peer
                    cancel_quietly(call)
                    self.breakers.release(peer)
                    raise
                raise _GivenUp(peer) from None
            finally:
                self._inflight.get(peer, set()).discard(call)
                if (call.done() and not call.cancelled()
                        and not isinstance(call.exception(), PeerTimeout)):
                    # Answered or refused: the peer holds no slot for it any more. After
                    # a timeout, or if our client left, it may still be working on it.
                    self.table.note_done(peer, service, token)
                    if not isinstance(call.exception(), PeerRefused):
                        self.room_may_have_changed()  # a "busy" answer freed nothing
            answer = decode_response(reply.meta, reply.body)
        except _GivenUp:
            # Its process is gone: the membership's verdict, not the circuit's (`_give_up`
            # cleared it, so a restarted peer starts afresh).
            if request.method in IDEMPOTENT:
                return None
            raise UpstreamError(f"peer {peer} left the mesh or restarted while serving the "
                                "request") from None
        except PeerRefused as exc:
            if str(exc) == BUSY_REASON:
                self.breakers.success(peer)  # alive and honest, only full
                return None
            if BUSY_REASON in str(exc):  # it did not run: stopping, or restarted since
                self.breakers.release(peer)
                return None
            if str(exc) == TOO_LARGE_REASON:
                self.breakers.success(peer)  # it served the request: healthy
                raise _TooLargeToForward(peer) from None
            self.breakers.failure(peer, self.clock())
            if request.method in IDEMPOTENT:
                return None
            raise UpstreamError(f"peer {peer} refused the request: {exc}") from None
        except PeerTimeout as timeout:
            self.breakers.failure(peer, self.clock())
            left = deadline - self.clock()
            if request.method in IDEMPOTENT and left > 0:
                return None
            if left > 0:  # the link to the peer failed (a probe timed out), not our deadline
                raise UpstreamError(f"peer {peer} stopped answering: {timeout}") from None
            raise UpstreamTimeout(f"peer {peer} did not answer before the deadline") from None
        except (PeerError, ForwardError) as failed:
            self.breakers.failure(peer, self.clock())
            if request.method in IDEMPOTENT:
                return None
            raise UpstreamError(f"peer {peer} failed: {failed}") from None
        self.breakers.success(peer)
        elapsed_ms = (self.clock() - started) * 1000
        sample = max(0.0, elapsed_ms - answer.took_ms)
        old = self.rtt_ms.get(peer)
        self.rtt_ms[peer] = sample if old is None else 0.8 * old + 0.2 * sample
        return Response(
            answer.status,
            Headers(answer.headers),
            answer.body,
            served_by=answer.node or peer,
            outcome=f"forwarded-{answer.outcome}" if answer.outcome else "forwarded",
        )


async def _upload_to_forward(service: str, request: Request) -> bytes:
    """The streamed upload of a request no worker here can serve, read whole so a peer
    can: waiting in the local queue would only end in a 503 at its deadline."""
    assert not isinstance(request.body, bytes)
    try:
        return await read_body(request.body, MAX_FORWARD_BODY)
    except BodyTooLong:
        raise BodyTooLarge(
            f"no worker here serves {service!r}, and a request body forwarded to a peer "
            f"may be at most {MAX_FORWARD_BODY} bytes") from None
    except BodyError as exc:
        raise ClientError(f"the request body broke off: {exc}") from None


def _forwardable(request: Request) -> bool:
    """Small bodies travel to peers; a streamed upload stays here (it is already flowing)."""
    return isinstance(request.body, bytes) and len(request.body) <= MAX_FORWARD_BODY


class ForwardedServer:
    """Serves requests forwarded by peers through this node's own pipeline."""

    def __init__(
        self,
        handle: Callable[[Request], Awaitable[Response]],
        *,
        node_id: str,
        dc: str,
        meter: RateMeter | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_body: int = MAX_FORWARD_ANSWER,
        owns_life: Callable[[int], bool] | None = None,
    ) -> None:
        self.handle = handle
        # Whether a forward's `life` names this process (gossip `GossipAgent.owns_life`);
        # None: every forward is taken.
        self.owns_life = owns_life
        self.node_id = node_id
        self.dc = dc
        self.meter = meter or RateMeter()
        self.received = 0  # since start, for the forwarded_total counter (the meter forgets)
        self.clock = clock
        self.max_body = max_body

    async def __call__(self, peer_request: PeerRequest) -> PeerReply:
        try:
            fwd = decode_request(peer_request.meta, peer_request.body)
        except ForwardError as exc:
            raise Refuse(f"bad forwarded request: {exc}") from None
        if fwd.life and self.owns_life is not None and not self.owns_life(fwd.life):
            raise Refuse(RESTARTED_REASON)  # its sender gave up on our earlier process
        started = self.clock()
        self.meter.add(started)
        self.received += 1
        request = Request(
            method=fwd.method,
            target=fwd.target,
            headers=Headers(fwd.headers),
            body=fwd.body,
            scheme=fwd.scheme,
            host=fwd.host,
            client=fwd.client,
            request_id=fwd.request_id,
            received=started,
            deadline=started + fwd.ttl,
            hops=fwd.hops,
            # The sender chose us for this service's capacity; our own routes may not know
            # its host yet (a rolling config change) and would send it elsewhere.
            service=fwd.service,
        )
        response = await self.handle(request)
        if response.outcome == PeerBusy.outcome:
            raise Refuse(BUSY_REASON)
        try:
            body = await read_body(response.body, self.max_body)
        except BodyTooLong:
            raise Refuse(TOO_LARGE_REASON) from None
        except BodyError as broken:
            raise Refuse(f"response body failed: {broken}") from None
        answer = ForwardedResponse(
            status=response.status,
            headers=tuple(response.headers),
            body=body,
            node=response.served_by or self.node_id,
            dc=self.dc,
            outcome=response.outcome,
            took_ms=(self.clock() - started) * 1000,
        )
        return PeerReply(response_meta(answer), (body,) if body else ())
