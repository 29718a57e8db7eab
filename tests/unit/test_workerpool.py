"""The worker pool's decisions, driven by hypothesis with a manual clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node.workerpool import Decisions, WorkerPool, is_retryable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(clock: Clock, **kw: int) -> WorkerPool:
    return WorkerPool(clock, heartbeat_interval=1.0, liveness=3, queue_limit=kw.get("limit", 4))


def test_least_loaded_then_least_recently_used() -> None:
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["www"], 2)
    p.ready(b"b", ["www"], 4)
    got = [p.submit(i, "www", 2000, True).assign[0][1] for i in range(4)]
    # a (0/2) and b (0/4) tie: a is first in LRU order (never used); then b 0/4 < a 1/2
    assert got == [b"a", b"b", b"b", b"a"]
    assert p.submit(9, "www", 2000, True).assign[0][1] == b"b"  # a is full (2/2), b 2/4


def test_queue_is_fifo_bounded_and_fed_by_freed_slots() -> None:
    c = Clock()
    p = pool(c, limit=2)
    p.ready(b"a", ["www"], 1)
    assert p.submit(1, "www", 2000, True).assign == [(1, b"a")]
    assert p.submit(2, "www", 2000, True) == Decisions()
    assert p.submit(3, "www", 2000, True) == Decisions()
    full = p.submit(4, "www", 2000, True)
    assert [(f.req_id, f.status) for f in full.fail] == [(4, 503)]
    assert p.complete(1).assign == [(2, b"a")]
    assert p.cancel(2).assign == [(3, b"a")]


def test_freed_slot_goes_to_the_oldest_waiter_of_any_offered_service() -> None:
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["x", "y"], 1)
    p.submit(1, "x", 2000, True)
    p.submit(2, "y", 2000, True)
    p.submit(3, "x", 2000, True)
    assert p.complete(1).assign == [(2, b"a")]


def test_dead_worker_retries_idempotent_once_and_fails_others() -> None:
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["www"], 2)
    p.ready(b"b", ["www"], 1)
    p.submit(1, "www", 2000, True)  # a
    p.submit(2, "www", 2000, False)  # b
    p.submit(3, "www", 2000, True)  # a
    c.now += 2
    p.seen(b"b")
    c.now += 1.5  # a silent for 3.5 s > 3 beats; b for 1.5 s
    d = p.expire()
    assert d.dead == [b"a"] and sorted(d.retried) == [1, 3] and d.fail == []
    assert p.queued("www") == 2  # b is busy with 2
    d = p.complete(2)
    assert d.assign == [(1, b"b")]
    p.mark_unretryable(1)
    c.now += 3.5
    d = p.expire()
    assert d.dead == [b"b"] and [(f.req_id, f.status) for f in d.fail] == [(1, 502)]


def test_a_crashed_sole_worker_fails_its_idempotent_requests_at_once() -> None:
    """No other worker for the service: a retry could only wait in the queue until the
    deadline (a 503 then). nginx answers 502 when its only upstream breaks; so do we."""
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["www"], 2)
    p.ready(b"b", ["api"], 2)  # alive, but it does not serve www
    p.submit(1, "www", 2000, True)
    p.submit(2, "api", 2000, True)
    c.now += 3.5
    p.seen(b"b")
    d = p.expire()
    assert d.dead == [b"a"] and d.retried == []
    assert [(f.req_id, f.status) for f in d.fail] == [(1, 502)]
    assert "no other worker serves 'www'" in d.fail[0].reason
    assert p.queued("www") == 0 and p.where(2) == b"b"


def test_a_worker_that_says_goodbye_hands_back_its_requests_but_is_not_dead() -> None:
    p = pool(Clock())
    p.ready(b"a", ["www"], 2)
    p.submit(1, "www", 2000, True)
    p.submit(2, "www", 2000, False)
    p.drain_worker(b"a")
    d = p.remove(b"a", said_goodbye=True)
    assert d.dead == [] and d.retried == [1] and [f.req_id for f in d.fail] == [2]
    assert b"a" not in p.workers and p.queued("www") == 1


def test_retryable_methods() -> None:
    assert is_retryable("GET", False) and is_retryable("DELETE", False)
    assert not is_retryable("GET", True) and not is_retryable("POST", False)


def test_ready_again_changes_the_offer_and_draining_worker_takes_nothing() -> None:
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["www"], 1)
    p.submit(1, "www", 2000, True)
    p.submit(2, "www", 2000, True)
    assert p.ready(b"a", ["www"], 2).assign == [(2, b"a")]
    p.drain_worker(b"a")
    assert not p.has_free_slot("www")
    p.complete(1)
    p.complete(2)
    assert b"a" not in p.workers


def test_service_loads_report_slots_queue_and_latency() -> None:
    c = Clock()
    p = pool(c)
    p.ready(b"a", ["www"], 3)
    p.submit(1, "www", 2000, True)
    c.now += 0.25
    p.complete(1)
    p.submit(2, "www", 2000, True)
    load = p.service_loads()["www"]
    assert (load.workers, load.slots, load.in_flight, load.queued) == (1, 3, 1, 0)
    assert load.p50_ms == 250.0 and load.rps > 0
    c.now += 60
    assert p.service_loads()["www"].rps == 0  # outside the window


class PoolMachine(RuleBasedStateMachine):
    """Random joins, requests, completions, silences and expiries keep the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.pool = WorkerPool(self.clock, heartbeat_interval=1.0, liveness=3, queue_limit=3)
        self.next_id = 0
        self.live: set[int] = set()  # requests not yet finished or failed
        self.order: list[int] = []  # submission order of queued requests
        self.dead: set[bytes] = set()
        self.assigned: set[int] = set()  # requests a worker has had (a death requeues them)

    def _apply(self, d: Decisions) -> None:
        for rid, ident in d.assign:
            self.assigned.add(rid)
            w = self.pool.workers.get(ident)
            assert w is not None, "assigned to an unknown worker"
            assert self.clock.now - w.last_seen <= self.pool.expiry, "assigned to a dead worker"
            assert rid in self.live
            assert len(w.in_flight) <= w.concurrency, "assigned beyond the worker's concurrency"
        for f in d.fail:
            self.live.discard(f.req_id)
        self.dead |= set(d.dead)

    @rule(w=st.sampled_from([b"a", b"b", b"c"]), conc=st.integers(1, 3),
          svcs=st.sets(st.sampled_from(["x", "y"]), min_size=1))
    def ready(self, w: bytes, conc: int, svcs: set[str]) -> None:
        self.dead.discard(w)
        self._apply(self.pool.ready(w, svcs, conc))

    @rule(svc=st.sampled_from(["x", "y"]), retry=st.booleans())
    def submit(self, svc: str, retry: bool) -> None:
        self.next_id += 1
        self.live.add(self.next_id)
        before = self.pool.queued(svc)
        d = self.pool.submit(self.next_id, svc, self.clock.now + 5, retry)
        if d.fail:
            assert before >= self.pool.queue_limit  # retried requests may overfill it
        self._apply(d)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), done=st.booleans())
    def finish(self, data: st.DataObject, done: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.live)))
        queued_before = {s: list(self.pool._queues.get(s, ())) for s in ("x", "y")}
        d = self.pool.complete(rid) if done else self.pool.cancel(rid)
        self.live.discard(rid)
        # FIFO: whatever left a queue (to a worker, or shed with a 503 at its turn because
        # too little of its time was left) left from its front, in order
        for svc, q in queued_before.items():
            after = set(self.pool._queues.get(svc, ()))
            rest = [r for r in q if r != rid]  # the one cancelled may leave from anywhere
            gone = [r for r in rest if r not in after]
            assert rest[:len(gone)] == gone
            assigned = {r for r, _ in d.assign}
            shed = {f.req_id for f in d.fail}
            assert set(gone) <= assigned | shed
        self._apply(d)

    @rule(w=st.sampled_from([b"a", b"b", b"c"]))
    def heartbeat(self, w: bytes) -> None:
        self.pool.seen(w)

    @rule(dt=st.floats(0.1, 4.0))
    def tick(self, dt: float) -> None:
        self.clock.now += dt
        silent = {i for i, w in self.pool.workers.items()
                  if self.clock.now - w.last_seen > self.pool.expiry}
        d = self.pool.expire()
        assert set(d.dead) == silent, "expiry must follow the liveness window exactly"
        self._apply(d)

    @invariant()
    def queues_bounded_and_known(self) -> None:
        for q in self.pool._queues.values():
            # requests requeued after their worker's death come on top of the limit (they
            # were accepted once); new ones never do
            assert len([r for r in q if r not in self.assigned]) <= self.pool.queue_limit
            assert all(r in self.live for r in q)

    @invariant()
    def no_request_in_two_places(self) -> None:
        seen: list[int] = [r for w in self.pool.workers.values() for r in w.in_flight]
        seen += [r for q in self.pool._queues.values() for r in q]
        assert len(seen) == len(set(seen))


    @invariant()
    def capacity_is_what_live_workers_can_still_take(self) -> None:
        now = self.clock.now
        for svc in ("x", "y"):
            live = [w for w in self.pool.workers.values() if svc in w.services
                    and not w.draining and now - w.last_seen <= self.pool.expiry]
            slots = sum(w.concurrency for w in live)
            # a worker that lowered its concurrency below its in-flight count has 0 free
            free = sum(max(0, w.concurrency - len(w.in_flight)) for w in live)
            free -= self.pool.queued(svc)
            assert self.pool.capacity(svc) == (slots, max(0, free))
            assert self.pool.has_free_slot(svc) == any(w.free() > 0 for w in live)


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_pool_machine = PoolMachine.TestCase


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3)), min_size=1, max_size=5),
       st.integers(1, 30))
def test_never_assigns_beyond_concurrency(workers: list[tuple[int, int]], n: int) -> None:
    c = Clock()
    p = pool(c, limit=100)
    for i, (conc, _) in enumerate(workers):
        p.ready(bytes([i]), ["s"], conc)
    assigned = 0
    for rid in range(n):
        assigned += len(p.submit(rid, "s", 2000, True).assign)
    assert assigned == min(n, sum(c for c, _ in workers))
    for w in p.workers.values():
        assert len(w.in_flight) <= w.concurrency


def test_a_worker_gone_quiet_is_chosen_last() -> None:
    clock = Clock()
    p = pool(clock)
    p.ready(b"busy", {"s"}, 4)
    assert p.submit(1, "s", 2000.0, True).assign == [(1, b"busy")]
    p.ready(b"quiet", {"s"}, 4)  # less loaded (0/4 against 1/4)...
    clock.now += 2.0  # ...but unheard for 2 heartbeat intervals (not yet expired at 3)
    p.seen(b"busy")
    assert p.submit(2, "s", 2000.0, True).assign == [(2, b"busy")]
    p.seen(b"quiet")  # heard again: the least loaded wins again
    assert p.submit(3, "s", 2000.0, True).assign == [(3, b"quiet")]
