"""Which worker serves which request: the broker's pure decision core.

No I/O and no timers: every method takes the current time from the injected
clock and returns `Decisions` — assign this request to that worker, fail that
one with a status — which the broker shell then carries out (decide, then act).

Rules (issue 2, "Worker selection" and "Faults"):
- A worker offers services and a concurrency; READY again changes the offer.
- Selection: among live workers of the service with a free slot, the least
  loaded (in_flight / concurrency), ties to the least recently assigned.
- No free slot: the request waits in a bounded per-service FIFO queue. A freed
  slot goes to the oldest waiting request of any service that worker offers.
  A full queue fails at once with 503; the shell fails a request that is still
  queued at its deadline with 503 (`cancel` tells it whether it was queued).
  A waiting request whose time left is under what the service's answers take
  (their median over the window) fails with 503 when its turn comes instead of
  taking the slot: under overload the head of a FIFO queue is always about to
  expire, and slots spent on requests that end in 504 left almost none for the
  younger ones behind them (goodput fell to a fifth of capacity).
- A worker silent for `liveness` heartbeat intervals is dead. Its in-flight
  requests that are retryable and not yet retried go back to the head of the
  queue (served by another worker); the others fail with 502.
Not safe for concurrent use: one broker, one event loop.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

from gossip.load import ServiceLoad

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def is_retryable(method: str, body_streamed: bool) -> bool:
    """May a request lost with its worker be sent again to another worker?"""
    return method in IDEMPOTENT and not body_streamed


@dataclass(frozen=True, slots=True)
class Failure:
    req_id: int
    status: int  # 502 worker died, 503 no capacity
    reason: str


# Decisions and _Req, made for every request, write their __init__ out (init=False):
# mypyc leaves the one dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled
# or pure").
@dataclass(slots=True, init=False)
class Decisions:
    """What the shell must do now. `retried` lists ids reassigned after a death."""

    # Each a new list of its own unless given.
    assign: list[tuple[int, bytes]]  # (request, worker identity)
    fail: list[Failure]
    dead: list[bytes]  # workers removed for silence
    retried: list[int]

    def __init__(self, assign: list[tuple[int, bytes]] | None = None,
                 fail: list[Failure] | None = None, dead: list[bytes] | None = None,
                 retried: list[int] | None = None) -> None:
        self.assign = [] if assign is None else assign
        self.fail = [] if fail is None else fail
        self.dead = [] if dead is None else dead
        self.retried = [] if retried is None else retried

    def extend(self, other: Decisions) -> None:
        self.assign += other.assign
        self.fail += other.fail
        self.dead += other.dead
        self.retried += other.retried


@dataclass(slots=True)
class WorkerState:
    identity: bytes
    services: frozenset[str]
    concurrency: int
    name: str
    last_seen: float
    in_flight: set[int] = field(default_factory=set)
    last_assigned: int = 0  # sequence number of the last assignment (LRU ties)
    draining: bool = False

    def free(self) -> int:
        return 0 if self.draining else self.concurrency - len(self.in_flight)


@dataclass(slots=True, init=False)
class _Req:
    req_id: int
    service: str
    deadline: float
    retryable: bool
    seq: int  # arrival order, for FIFO across services
    worker: bytes | None
    started: float

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, req_id: int, service: str, deadline: float, retryable: bool, seq: int,
        worker: bytes | None = None, started: float = 0.0,
    ) -> None:
        self.req_id = req_id
        self.service = service
        self.deadline = deadline
        self.retryable = retryable
        self.seq = seq
        self.worker = worker
        self.started = started


class WorkerPool:
    """Registry of workers, per-service wait queues and recent load figures."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        queue_limit: int = 256,
        window: float = 10.0,
        window_samples: int = 2048,
    ) -> None:
        self._clock = clock
        self.expiry = heartbeat_interval * liveness
        # A worker unheard for longer than this is still alive, but chosen last: it may
        # have gone away without a word (its heartbeats would have come by now).
        self.quiet_after = heartbeat_interval * 1.5
        self.queue_limit = queue_limit
        self._window = window
        self.workers: dict[bytes, WorkerState] = {}
        self._reqs: dict[int, _Req] = {}
        self._queues: dict[str, deque[int]] = {}
        self._seq = itertools.count(1)
        self._samples: dict[str, deque[tuple[float, float]]] = {}  # (done at, latency)
        self._window_samples = window_samples
        self._typical: dict[str, tuple[float, float]] = {}  # service -> (until, median)

    # -- workers ---------------------------------------------------------------
    def ready(self, identity: bytes, services: Iterable[str], concurrency: int,
              name: str = "") -> Decisions:
        """A worker joins or changes its offer; waiting requests may now be assigned."""
        now = self._clock()
        w = self.workers.get(identity)
        if w is None:
            w = WorkerState(identity, frozenset(services), concurrency, name, now)
            self.workers[identity] = w
        else:
            w.services, w.concurrency, w.name, w.last_seen = (
                frozenset(services), concurrency, name, now)
            w.draining = False
        return self._fill(w)

    def seen(self, identity: bytes) -> bool:
        """Any message from a worker proves it alive; False if we do not know it."""
        w = self.workers.get(identity)
        if w is None:
            return False
        w.last_seen = self._clock()
        return True

    def drain_worker(self, identity: bytes) -> Decisions:
        """The worker said DISCONNECT: no new work; gone once its in-flight finish."""
        w = self.workers.get(identity)
        if w is None:
            return Decisions()
        w.draining = True
        if not w.in_flight:
            del self.workers[identity]
        return Decisions()

    def remove(self, identity: bytes, undelivered: Collection[int] = (), *,
               said_goodbye: bool = False) -> Decisions:
        """The worker is gone: retry or fail what it was serving.

        `undelivered` requests never reached it (the send itself failed): they go
        back to the queue whatever their method, without spending their retry.
        `said_goodbye`: it told us it leaves (a draining worker's second DISCONNECT),
        so it is not listed in `dead`, the workers that went silent.

        An idempotent request is retried once — at another worker of its service, or,
        after a goodbye (a planned restart), at whichever joins next. After a crash
        with no other worker for its service it fails at once with 502, as nginx
        answers when its only upstream breaks mid-request: waiting in the queue would
        only turn that into a 503 at the deadline."""
        w = self.workers.pop(identity, None)
        out = Decisions()
        if w is None:
            return out
        if not said_goodbye:
            out.dead.append(identity)
        now = self._clock()
        served = {s for s in w.services if said_goodbye or any(
            s in o.services and not o.draining and self._alive(o, now)
            for o in self.workers.values())}
        requeue: list[_Req] = []
        for rid in sorted(w.in_flight, key=lambda r: self._reqs[r].seq):
            req = self._reqs[rid]
            req.worker = None
            if rid in undelivered:
                requeue.append(req)
            elif req.retryable and req.service in served:
                req.retryable = False  # retried once at most
                requeue.append(req)
                out.retried.append(rid)
            else:
                del self._reqs[rid]
                why = "the worker serving it stopped responding"
                if req.retryable:  # it could be retried, but no other worker serves it
                    why += f" and no other worker serves {req.service!r}"
                out.fail.append(Failure(rid, 502, why))
        for req in reversed(requeue):  # they waited longest: front of the queue
            self._queues.setdefault(req.service, deque()).appendleft(req.req_id)
        for svc in {r.service for r in requeue}:
            out.extend(self._drain_queue(svc))
        return out

    def expire(self) -> Decisions:
        """Drop workers silent for longer than the liveness window; call every beat."""
        now = self._clock()
        out = Decisions()
        for identity in [i for i, w in self.workers.items() if now - w.last_seen > self.expiry]:
            out.extend(self.remove(identity))
        return out

    # -- requests ----------------------------------------------------------------
    def submit(self, req_id: int, service: str, deadline: float, retryable: bool) -> Decisions:
        """A new request: assigned now, queued, or failed (queue full / no workers)."""
        req = _Req(req_id, service, deadline, retryable, next(self._seq))
        w = self._select(service)
        if w is not None:
            self._reqs[req_id] = req
            return Decisions(assign=[self._assign(req, w)])
        queue = self._queues.get(service)
        if queue is None:
            queue = self._queues[service] = deque()
        if len(queue) >= self.queue_limit:
            return Decisions(fail=[Failure(req_id, 503, f"service {service!r} queue is full")])
        self._reqs[req_id] = req
        queue.append(req_id)
        return Decisions()

    def complete(self, req_id: int) -> Decisions:
        """The request finished (reply fully received): record latency, reuse its slot."""
        req = self._reqs.get(req_id)
        if req is not None and req.worker is not None:
            s = self._samples.get(req.service)
            if s is None:  # not setdefault: its default, a deque, would be built every time
                s = self._samples[req.service] = deque(maxlen=self._window_samples)
            now = self._clock()
            s.append((now, now - req.started))
        return self.cancel(req_id)

    def cancel(self, req_id: int) -> Decisions:
        """Forget a request (deadline, client gone, done); frees its slot if it had one."""
        req = self._reqs.pop(req_id, None)
        if req is None:
            return Decisions()
        if req.worker is None:
            queue = self._queues.get(req.service)
            if queue is not None and req_id in queue:
                queue.remove(req_id)
            return Decisions()
        w = self.workers.get(req.worker)
        if w is None:
            return Decisions()
        w.in_flight.discard(req_id)
        if w.draining and not w.in_flight:
            del self.workers[w.identity]
            return Decisions()
        return self._fill(w)

    def mark_unretryable(self, req_id: int) -> None:
        """The reply has started (or the body streamed): a second attempt is impossible."""
        req = self._reqs.get(req_id)
        if req is not None:
            req.retryable = False

    def where(self, req_id: int) -> bytes | None:
        """The worker serving `req_id`, or None if queued or unknown."""
        req = self._reqs.get(req_id)
        return None if req is None else req.worker

    def is_queued(self, req_id: int) -> bool:
        req = self._reqs.get(req_id)
        return req is not None and req.worker is None

    def expired_in_queue(self) -> list[int]:
        """Queued requests whose deadline has passed (the shell fails them with 503)."""
        now = self._clock()
        return [rid for q in self._queues.values() for rid in q if self._reqs[rid].deadline <= now]

    # -- load ------------------------------------------------------------------
    def services(self) -> set[str]:
        return {s for w in self.workers.values() for s in w.services}

    def has_free_slot(self, service: str) -> bool:
        return self._select(service, touch=False) is not None

    def queued(self, service: str) -> int:
        return len(self._queues.get(service, ()))

    def capacity(self, service: str) -> tuple[int, int]:
        """(slots, free slots) of `service`'s live workers, minus what waits in its queue.

        The per-request question routing asks: cheap, unlike `service_loads()`
        (which also computes latency percentiles for the gossip beat)."""
        now = self._clock()
        slots = free = 0
        for w in self.workers.values():
            if service in w.services and not w.draining and self._alive(w, now):
                slots += w.concurrency
                free += max(0, w.free())
        return slots, max(0, free - self.queued(service))

    def service_loads(self) -> dict[str, ServiceLoad]:
        now = self._clock()
        out: dict[str, ServiceLoad] = {}
        for svc in self.services() | {s for s, q in self._queues.items() if q}:
            ws = [w for w in self.workers.values() if svc in w.services and not w.draining]
            samples = self._samples.get(svc, deque())
            while samples and samples[0][0] < now - self._window:
                samples.popleft()
            lat = sorted(x[1] for x in samples)
            p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
            out[svc] = ServiceLoad(
                workers=len(ws),
                slots=sum(w.concurrency for w in ws),
                in_flight=sum(1 for r in self._reqs.values()
                              if r.service == svc and r.worker is not None),
                queued=self.queued(svc),
                p50_ms=p50,
                rps=len(samples) / self._window,
            )
        return out

    # -- inside ----------------------------------------------------------------
    def _alive(self, w: WorkerState, now: float) -> bool:
        return now - w.last_seen <= self.expiry

    def _select(self, service: str, touch: bool = True) -> WorkerState | None:
        now = self._clock()
        best: WorkerState | None = None
        best_key: tuple[bool, float, int] = (True, 2.0, 0)
        for w in self.workers.values():
            if service not in w.services or w.free() <= 0 or not self._alive(w, now):
                continue
            quiet = now - w.last_seen > self.quiet_after
            key = (quiet, len(w.in_flight) / w.concurrency, w.last_assigned)
            if best is None or key < best_key:
                best, best_key = w, key
        return best

    def _assign(self, req: _Req, w: WorkerState) -> tuple[int, bytes]:
        req.worker = w.identity
        req.started = self._clock()
        w.in_flight.add(req.req_id)
        w.last_assigned = next(self._seq)
        return (req.req_id, w.identity)

    def _fill(self, w: WorkerState) -> Decisions:
        """Give `w`'s free slots to the oldest waiting requests of its services."""
        out = Decisions()
        while w.free() > 0 and self._alive(w, self._clock()):
            heads = [(self._reqs[q[0]].seq, s) for s in w.services
                     if (q := self._queues.get(s))]
            if not heads:
                break
            _, svc = min(heads)
            step = self._drain_queue(svc)
            if not step.assign:
                break
            out.extend(step)
        return out

    def _drain_queue(self, service: str) -> Decisions:
        """Assign as many queued requests of `service` as there are free slots; one with
        less time left than the service's answers take is failed (503) instead."""
        out = Decisions()
        queue = self._queues.get(service)
        typical = -1.0  # not computed yet: only when a slot is free for a waiter
        while queue:
            w = self._select(service)
            if w is None:
                break
            req = self._reqs[queue.popleft()]
            if typical < 0:
                typical = self._typical_latency(service)
            left = req.deadline - self._clock()
            if left < typical:
                del self._reqs[req.req_id]
                out.fail.append(Failure(
                    req.req_id, 503, f"no free worker for service {service!r} in time: "
                    f"{max(0.0, left):.2f}s of its deadline left, its answers take {typical:.2f}s"))
                continue
            out.assign.append(self._assign(req, w))
        return out

    def _typical_latency(self, service: str) -> float:
        """The median latency of `service`'s recent answers (0 without any), recomputed
        at most once a second: a freed slot must not sort the window every time."""
        now = self._clock()
        cached = self._typical.get(service)
        if cached is not None and cached[0] > now:
            return cached[1]
        samples = self._samples.get(service)
        recent = sorted(lat for at, lat in samples if at >= now - self._window) if samples else []
        median = recent[len(recent) // 2] if recent else 0.0
        self._typical[service] = (now + 1.0, median)
        return median
