"""The pool's queue under overload (node/workerpool.py, manual clock): a waiter whose
time left is under the service's median answer time is failed with 503 when its turn
comes, and the slot goes to the next waiter; without any answer to go by, nothing is."""

from __future__ import annotations

from node.workerpool import WorkerPool


class Clock:
    now = 1000.0  # moved by the test


def test_a_waiter_that_cannot_finish_in_time_is_failed_and_the_next_served() -> None:
    c = Clock()
    p = WorkerPool(lambda: c.now, heartbeat_interval=10.0, queue_limit=8)
    p.ready(b"w", ["www"], 1)
    for rid in (1, 2, 3):  # answers take 2 s
        assert p.submit(rid, "www", c.now + 100, True).assign == [(rid, b"w")]
        c.now += 2.0
        p.complete(rid)
    assert p.submit(10, "www", c.now + 100, True).assign == [(10, b"w")]
    assert not p.submit(11, "www", c.now + 1.5, True).assign  # 1.5 s left: too little
    assert not p.submit(12, "www", c.now + 100, True).assign
    out = p.complete(10)
    assert [(f.req_id, f.status) for f in out.fail] == [(11, 503)]
    assert out.assign == [(12, b"w")]
    assert not p.is_queued(11) and p.where(11) is None  # forgotten: nothing left behind


def test_without_answers_to_go_by_every_waiter_gets_its_turn() -> None:
    c = Clock()
    p = WorkerPool(lambda: c.now, heartbeat_interval=10.0, queue_limit=8)
    p.ready(b"w", ["www"], 1)
    p.submit(1, "www", c.now + 100, True)
    p.submit(2, "www", c.now + 0.01, True)
    assert p.cancel(1).assign == [(2, b"w")]
