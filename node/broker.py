"""The node's worker broker: a ROUTER socket, the worker pool, and the calls in flight.

A thin asyncio shell around `node.workerpool.WorkerPool` (the decisions) and
`node.protocol` (the frames). `dispatch()` implements `node.dispatch.Dispatcher`
for local workers. The socket is drained on the event loop through its file
descriptor (`ZmqPump`) rather than `zmq.asyncio`: the guide's figures here are
~43k round trips/s against ~18k.

Streaming: a reply with `more` becomes a `BodyChannel` of `window` chunks; the
broker grants the worker credit as the consumer reads, so a slow client holds
back the worker instead of filling memory. A streamed upload is sent in BODY
chunks only as the worker grants credit. A reply for an id nobody waits for is
dropped quietly; a malformed frame is dropped, counted and logged at most once
a second. Neither ever reaches a client or stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import zmq

from gossip.load import ServiceLoad
from node.body import BodyChannel, BytesStream
from node.dispatch import Withdrawn
from node.errors import ClientError, NoCapacity, Scale0Error, UpstreamError, UpstreamTimeout
from node.http import BodyError, BodyStream, Headers, Request, Response
from node.protocol import (
    DEFAULT_LIMITS,
    Abort,
    Batch,
    BodyMsg,
    Cancel,
    Credit,
    Disconnect,
    Heartbeat,
    Limits,
    Message,
    ProtocolError,
    Ready,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
    encode_packed,
    salvage_id,
)
from node.ratelog import RateLimitedLog
from node.workerpool import Decisions, WorkerPool, is_retryable
from node.zmqpump import Outbox, ZmqPump

log = logging.getLogger("scale0.broker")
@dataclass
class BrokerConfig:
    """The worker broker's settings (TOML section `[workers]`)."""

    endpoint: str = "tcp://*:7950"
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 3  # missed beats before a worker is dropped
    queue_limit: int = 256  # waiting requests per service
    default_timeout: float = 30.0  # when a request carries no deadline
    chunk_size: int = 256 * 1024  # body bytes per frame when streaming
    window: int = 8  # chunks a reader lets the sender have in flight
    max_message_size: int = 32 * 1024 * 1024  # zmq MAXMSGSIZE: larger frames cut the peer off
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    # Called on the ROUTER before bind, endpoint "" (e.g. node.curve.CurveKeys.secure).
    secure: Callable[[zmq.Socket[bytes], str], None] | None = None


# _Call, made for every request, writes its __init__ out (init=False): mypyc leaves the
# one dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(eq=False, init=False)
class _Call:
    """One request's life inside the broker."""

    rid: int
    service: str
    request: Request
    deadline: float
    future: asyncio.Future[Response]
    worker: bytes | None
    channel: BodyChannel | None  # the streamed reply
    reply_credit: int  # chunks the worker may still send us
    unread: int  # chunks buffered in the channel, not yet read by the consumer
    upload: asyncio.Task[None] | None
    upload_credit: int
    upload_wake: asyncio.Event | None  # made only when an upload waits for credit
    budget: float  # seconds it was given (for the 504's reason)
    # The dispatcher's way to route it again (node.overflow): a request whose worker was
    # gone before it got it, with no other worker here for its service, goes there.
    reroute: Callable[[str, Request], Awaitable[Response]] | None

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, rid: int, service: str, request: Request, deadline: float,
        future: asyncio.Future[Response], worker: bytes | None = None,
        channel: BodyChannel | None = None, reply_credit: int = 0, unread: int = 0,
        upload: asyncio.Task[None] | None = None, upload_credit: int = 0,
        upload_wake: asyncio.Event | None = None, budget: float = 0.0,
        reroute: Callable[[str, Request], Awaitable[Response]] | None = None,
    ) -> None:
        self.rid = rid
        self.service = service
        self.request = request
        self.deadline = deadline
        self.future = future
        self.worker = worker
        self.channel = channel
        self.reply_credit = reply_credit
        self.unread = unread
        self.upload = upload
        self.upload_credit = upload_credit
        self.upload_wake = upload_wake
        self.budget = budget
        self.reroute = reroute


def _counters() -> dict[str, int]:
    return dict.fromkeys(
        ("malformed", "dropped_replies", "workers_joined", "workers_expired", "workers_left",
         "retries", "send_failed", "unknown_worker", "requests", "replies", "batched",
         "reply_chunks_buffered_max"), 0)


class Broker:
    """Dispatches requests to the workers connected to this node."""

    def __init__(self, config: BrokerConfig, node_id: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.node_id = node_id
        self._clock = clock
        self.pool = WorkerPool(clock, heartbeat_interval=config.heartbeat_interval,
                               liveness=config.heartbeat_liveness, queue_limit=config.queue_limit)
        self.stats = _counters()
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") << 24)
        self._pump: ZmqPump | None = None
        self._beat: asyncio.Task[None] | None = None
        self._draining = False
        self._idle = asyncio.Event()
        self._rlog = RateLimitedLog(log)
        self.bound_endpoint = ""
        # One timer for every deadline (not one asyncio.timeout per call: that was a
        # third of dispatch's cost): it fires at the earliest pending deadline.
        self._sweep_at = math.inf
        self._sweeper: asyncio.TimerHandle | None = None
        self._batching: set[bytes] = set()  # workers that said they accept BATCH
        self._packing: set[bytes] = set()  # ... and PACKED
        self._outbox: Outbox | None = None
        # The loop `start` ran in, kept: asyncio.get_running_loop() costs a getpid system
        # call in CPython 3.11 (a fork check), and dispatch would make one a request.
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size)
        sock.setsockopt(zmq.SNDHWM, 10000)
        # Per connection. A well-behaved worker never has more than its credit window
        # per request in flight; a flood from one connection waits in its own TCP
        # buffers instead of the node's memory.
        sock.setsockopt(zmq.RCVHWM, 1000)
        try:
            if self.config.secure is not None:
                self.config.secure(sock, "")
            sock.bind(self.config.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(f"cannot bind the worker socket {self.config.endpoint}: {exc}") from exc
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pump = ZmqPump(sock, self._on_frames)
        self._outbox = Outbox(self._pump.send, self._undelivered, self._packing.__contains__)
        self._beat = asyncio.create_task(self._heartbeat_loop(), name="broker-heartbeat")

    async def drain(self, grace: float) -> None:
        """Stop taking new requests; wait up to `grace` seconds for those in flight."""
        self._draining = True
        if self._calls:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()

    async def close(self) -> None:
        self._draining = True
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        for call in list(self._calls.values()):
            self._fail(call, UpstreamError("the node is shutting down"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper, self._sweep_at = None, math.inf
        if self._pump is not None:
            self._pump.close()

    # -- Dispatcher / LoadSource -------------------------------------------------
    def dispatch(self, service: str, request: Request, *,
                 withdraw: asyncio.Future[None] | None = None,
                 reroute: Callable[[str, Request], Awaitable[Response]] | None = None
                 ) -> Awaitable[Response]:
        """`request` answered by a worker of `service` here: at once if one has a free
        slot, else after waiting in the service's queue until one does or the deadline.

        `withdraw` (node.overflow: room appeared at a peer): once it resolves, a request
        still in the queue is taken out and `Withdrawn` raised; one a worker has begun
        is answered as usual.

        `reroute` (node.overflow): a request sent to a worker already gone (a crash the
        heartbeats have not noticed yet) never reached it; when no other worker here
        serves its service, it is handed to `reroute(service, request)` instead of
        waiting in a queue nobody serves until its deadline.

        The request is taken (sent to a worker, or queued) by the call itself, not when
        the answer is first awaited: a caller that just saw a free slot (node.overflow)
        takes it in the same step, whenever it awaits. The awaitable must be awaited (or
        cancelled): it is what hands the slot back if the client leaves."""
        if self._draining:
            raise NoCapacity("this node is shutting down")
        if request.fail_fast and self.pool.capacity(service)[0] == 0:
            raise NoCapacity(f"no worker for {service!r} here", retry_after=1)
        now = self._clock()
        deadline = request.deadline or now + self.config.default_timeout
        streamed = not isinstance(request.body, bytes)
        loop = self._loop
        if loop is None:  # not started (a test's broker): asked
            loop = asyncio.get_running_loop()
        call = _Call(next(self._ids), service, request, deadline,
                     loop.create_future(), budget=deadline - now,
                     reroute=reroute)
        self._calls[call.rid] = call
        self.stats["requests"] += 1
        if deadline < self._sweep_at:
            self._arm(deadline)
        self._act(self.pool.submit(call.rid, service, deadline,
                                   is_retryable(request.method, streamed)))
        if withdraw is not None:  # a callback, not an asyncio.wait per queued request
            withdraw.add_done_callback(functools.partial(self._withdrawn, call))
        return self._answer(call, withdraw)

    def _withdrawn(self, call: _Call, _withdraw: asyncio.Future[None]) -> None:
        """`dispatch`'s `withdraw` resolved: a call still queued (no worker saw it) leaves."""
        if not call.future.done() and self.pool.is_queued(call.rid):
            self._abandon(call)
            call.future.set_exception(
                Withdrawn(f"{call.service!r}: taken out of the queue for a peer's room"))

    async def _answer(self, call: _Call, withdraw: asyncio.Future[None] | None) -> Response:
        service = call.service
        try:
            # The sweep fails the future at the deadline (NoCapacity / UpstreamTimeout).
            return await call.future
        except asyncio.CancelledError:
            self._abandon(call)  # the client went away
            raise
        except Withdrawn:
            reroute = call.reroute
            if withdraw is not None or reroute is None:
                raise
        return await reroute(service, call.request)  # stranded here: `_undelivered`

    def _arm(self, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = when
        delay = max(0.0, when - self._clock())
        self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Fail every call whose deadline passed before its reply began; re-arm."""
        self._sweeper, self._sweep_at = None, math.inf
        now = self._clock()
        earliest = math.inf
        for call in list(self._calls.values()):
            if call.future.done():
                continue  # answered: a streamed body has its own limits
            if call.deadline > now:
                earliest = min(earliest, call.deadline)
                continue
            queued = self.pool.is_queued(call.rid)
            self._abandon(call)
            if queued or call.worker is None:
                error: Scale0Error = NoCapacity(
                    f"no free worker for service {call.service!r} before the deadline",
                    retry_after=1)
            else:
                error = UpstreamTimeout(f"the worker did not answer within {call.budget:.1f}s")
            call.future.set_exception(error)
        if earliest < math.inf:
            self._arm(earliest)

    def service_loads(self) -> dict[str, ServiceLoad]:
        return self.pool.service_loads()

    def capacity(self, service: str) -> tuple[int, int]:
        """(slots, free slots) for `service` here, for per-request routing decisions."""
        if self._draining:
            return 0, 0
        return self.pool.capacity(service)

    def has_free_slot(self, service: str) -> bool:
        return not self._draining and self.pool.has_free_slot(service)

    def services(self) -> set[str]:
        return self.pool.services()

    # -- acting on decisions -------------------------------------------------------
    def _act(self, d: Decisions) -> None:
        self.stats["workers_expired"] += len(d.dead)
        self.stats["retries"] += len(d.retried)
        for ident in d.dead:
            self._rlog.warn("dead", "worker %s stopped responding; dropped", ident.hex())
        for rid in d.retried:
            call = self._calls.get(rid)
            if call is not None and call.upload is not None:
                call.upload.cancel()
        for f in d.fail:
            call = self._calls.get(f.req_id)
            if call is not None:
                exc: Scale0Error = (UpstreamError(f.reason) if f.status == 502
                                    else NoCapacity(f.reason, retry_after=1))
                self._fail(call, exc)
        for rid, ident in d.assign:
            call = self._calls.get(rid)
            if call is None:
                self._act(self.pool.cancel(rid))
            elif self.pool.where(rid) == ident:  # not superseded by a nested decision
                self._send_request(call, ident)

    def _send(self, ident: bytes, msg: Message, request_id: int | None = None) -> bool:
        """Send to a worker; a worker we cannot reach is dropped at once. `request_id`
        names a request this message would have started: it never reached the worker,
        so it goes back to the queue without spending its one retry."""
        assert self._pump is not None
        outbox = self._outbox
        # With other calls in flight, more messages are likely this loop turn: batch them
        # (one I/O-thread wake-up for all). A lone call goes at once: waiting for the end
        # of the turn would only add that turn to its latency.
        if ident in self._batching and outbox is not None and (
                len(self._calls) > 1 or outbox.holds(ident)):
            # Leaves at the end of this loop turn; a failure then is `_undelivered`'s.
            outbox.put(ident, encode(msg), request_id)
            self.stats["batched"] += 1
            return True
        if self._pump.send([ident, *encode(msg)]):
            return True
        self._undelivered(ident, [] if request_id is None else [request_id])
        return False

    def _undelivered(self, ident: bytes, request_ids: list[int]) -> None:
        self.stats["send_failed"] += 1
        if ident in self.pool.workers:
            self._act(self.pool.remove(ident, tuple(request_ids)))
        for rid in request_ids:
            call = self._calls.get(rid)
            if (call is not None and call.reroute is not None and self.pool.is_queued(rid)
                    and self.pool.capacity(call.service)[0] == 0):
                # Back in a queue no worker here serves: its dispatcher routes it again.
                self._abandon(call)
                call.future.set_exception(Withdrawn(f"{call.service!r}: no worker left here"))

    def _send_request(self, call: _Call, ident: bytes) -> None:
        req, size = call.request, self.config.chunk_size
        call.worker, call.upload_credit = ident, 0
        body = req.body
        stream: BodyStream | None = None
        first = b""
        if isinstance(body, bytes):
            first = body[:size]
            if len(body) > size:
                stream = BytesStream(body[size:], size)
        else:
            stream = body
        msg = RequestMsg(call.rid, req.method, req.target, tuple(req.headers.items()),
                         max(0.0, call.deadline - self._clock()), req.scheme, req.host,
                         req.client, req.request_id, stream is not None, first)
        if self._send(ident, msg, call.rid) and stream is not None:
            call.upload = asyncio.create_task(self._upload(call, ident, stream))

    async def _upload(self, call: _Call, ident: bytes, stream: BodyStream) -> None:
        """Send a request body in BODY chunks, never more than the worker granted."""
        try:
            while True:
                chunk = await stream.read()
                while call.upload_credit <= 0:
                    if call.upload_wake is None:
                        call.upload_wake = asyncio.Event()
                    call.upload_wake.clear()
                    await call.upload_wake.wait()
                if call.worker != ident or self._calls.get(call.rid) is not call:
                    return
                call.upload_credit -= 1
                if not self._send(ident, BodyMsg(call.rid, bool(chunk), chunk)) or not chunk:
                    return
        except BodyError as exc:
            self._abandon(call)
            self._fail(call, ClientError(f"request body incomplete: {exc}"))

    def _fail(self, call: _Call, exc: Scale0Error) -> None:
        self._forget(call)
        if not call.future.done():
            call.future.set_exception(exc)
            call.future.exception()  # retrieved: a caller that left must not warn
        elif call.channel is not None:
            call.channel.fail(exc.reason)

    def _abandon(self, call: _Call) -> None:
        """Nobody waits for this call any more: free its slot and tell its worker."""
        if self._calls.get(call.rid) is not call:
            return
        ident = self.pool.where(call.rid)
        self._forget(call)
        if ident is not None:
            self._send(ident, Cancel(call.rid))
        self._act(self.pool.cancel(call.rid))

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.rid, None)
        if call.upload is not None and call.upload is not asyncio.current_task():
            call.upload.cancel()
        if not self._calls and self._draining:  # `drain` waits for this (not per request:
            self._idle.set()                    # Event.set is interpreted)

    # -- inbound ---------------------------------------------------------------
    def _on_frames(self, frames: list[bytes]) -> None:
        ident = frames[0]
        try:
            msg = decode(frames[1:], self.config.limits)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            self._rlog.warn("malformed", "dropped a malformed frame from %s: %s",
                            ident[:16].hex(), exc.reason)
            call = self._calls.get(salvage_id(frames[1:]) or -1)
            if call is not None and call.worker == ident:
                # A broken reply to a request we can name: fail it now, not at the deadline.
                self._abandon(call)
                self._fail(call, UpstreamError(f"the worker sent a malformed reply: {exc.reason}"))
            return
        if type(msg) is Batch:
            self._on_batch(ident, msg)
            return
        if isinstance(msg, Ready):
            if self._draining:
                return
            joined = ident not in self.pool.workers
            self.stats["workers_joined"] += joined
            if joined:
                log.info("worker %s (%s, pid %d) joined: %s x%d", ident.hex(), msg.name,
                         msg.pid, ",".join(msg.services), msg.concurrency)
            self._act(self.pool.ready(ident, msg.services, msg.concurrency, msg.name))
            return
        if not self.pool.seen(ident):
            self.stats["unknown_worker"] += 1
            if not isinstance(msg, Disconnect):
                self._pump.send([ident, *encode(Disconnect())])  # type: ignore[union-attr]
            return
        if isinstance(msg, Reply):
            self._on_reply(ident, msg)
        elif isinstance(msg, BodyMsg):
            self._on_body(ident, msg)
        elif isinstance(msg, Credit):
            call = self._calls.get(msg.id)
            if call is not None and call.worker == ident:
                call.upload_credit += msg.chunks
                if call.upload_wake is not None:
                    call.upload_wake.set()
        elif isinstance(msg, Abort):
            call = self._calls.get(msg.id)
            if call is not None and call.worker == ident:
                self._act(self.pool.cancel(call.rid))
                self._fail(call, UpstreamError(f"the worker aborted the reply: {msg.reason}"))
        elif isinstance(msg, Disconnect):
            w = self.pool.workers.get(ident)
            if w is not None and w.draining:
                # A second one: its grace ran out and it leaves these requests unanswered.
                # Retry or fail them now, not when its heartbeats stop counting.
                d = self.pool.remove(ident, said_goodbye=True)
                self._rlog.warn("unfinished", "worker %s left %d request(s) unanswered: "
                                "retried or failed now", ident.hex(), len(d.retried) + len(d.fail))
                self._act(d)
            else:
                self.stats["workers_left"] += 1
                self._act(self.pool.drain_worker(ident))
        elif not isinstance(msg, Heartbeat):
            self.stats["malformed"] += 1
            self._rlog.warn("direction", "worker %s sent %s, a node-to-worker command",
                            ident.hex(), type(msg).__name__)

    def _on_batch(self, ident: bytes, msg: Batch) -> None:
        if msg.parts:
            for part in msg.parts:
                self._on_frames([ident, *part])
        elif not self.pool.seen(ident) or self._pump is None:
            return
        elif msg.packed:
            if ident in self._batching and ident not in self._packing:
                self._packing.add(ident)  # it announced: pack for it, and say we do too
                self._pump.send([ident, *encode_packed([])])
        elif ident not in self._batching:
            self._batching.add(ident)  # it announced: batch to it, and say we do too
            self._pump.send([ident, *encode_batch([])])

    def _mine(self, ident: bytes, rid: int, more: bool) -> _Call | None:
        call = self._calls.get(rid)
        if call is None or call.worker != ident:
            self.stats["dropped_replies"] += 1
            if more:
                self._send(ident, Cancel(rid))
            return None
        return call

    def _on_reply(self, ident: bytes, msg: Reply) -> None:
        call = self._mine(ident, msg.id, msg.more)
        if call is None:
            return
        if call.future.cancelled():  # the client just left; dispatch abandons it next
            if not msg.more:
                self._forget(call)
                self._act(self.pool.complete(call.rid))
            return
        if call.future.done():
            self._protocol_violation(call, ident, "sent a second REPLY")
            return
        self.stats["replies"] += 1
        self.pool.mark_unretryable(call.rid)
        w = self.pool.workers.get(ident)
        resp = Response(msg.status, Headers(msg.headers), msg.body, served_by=self.node_id,
                        outcome="local", worker=w.name if w and w.name else ident.hex())
        if msg.more:
            window = self.config.window
            chan = BodyChannel(window, on_cancel=lambda: self._abandon(call),
                               on_read=lambda _n: self._on_read(call))
            chan.put_nowait(msg.body)
            call.unread = 1 if msg.body else 0
            call.channel, resp.body = chan, chan
            self._grant(call, window - (1 if msg.body else 0))
        else:
            self._forget(call)
            self._act(self.pool.complete(call.rid))
        call.future.set_result(resp)

    def _on_body(self, ident: bytes, msg: BodyMsg) -> None:
        call = self._mine(ident, msg.id, msg.more)
        if call is None:
            return
        chan = call.channel
        if chan is None or call.reply_credit <= 0:
            self._protocol_violation(call, ident, "sent a body chunk it had no credit for")
            return
        call.reply_credit -= 1
        chan.put_nowait(msg.body)
        if msg.body:
            call.unread += 1
            st = self.stats
            st["reply_chunks_buffered_max"] = max(st["reply_chunks_buffered_max"], call.unread)
        if not msg.more:
            chan.finish()
            self._forget(call)
            self._act(self.pool.complete(call.rid))

    def _on_read(self, call: _Call) -> None:
        call.unread -= 1
        self._grant(call, 1)

    def _grant(self, call: _Call, n: int) -> None:
        if n > 0 and call.worker is not None and self._calls.get(call.rid) is call:
            call.reply_credit += n
            self._send(call.worker, Credit(call.rid, n))

    def _protocol_violation(self, call: _Call, ident: bytes, what: str) -> None:
        self.stats["malformed"] += 1
        self._rlog.warn("violation", "worker %s %s; request failed", ident.hex(), what)
        self._abandon(call)
        self._fail(call, UpstreamError(f"the worker {what}"))

    async def _heartbeat_loop(self) -> None:
        beat = encode(Heartbeat())
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)  # a period, not a synchronisation
            for ident in list(self.pool.workers):
                if self._pump is not None and not self._pump.send([ident, *beat]):
                    self.stats["send_failed"] += 1
            self._act(self.pool.expire())
            self._batching.intersection_update(self.pool.workers)
            self._packing.intersection_update(self._batching)
