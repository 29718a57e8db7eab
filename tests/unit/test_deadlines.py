"""node.worker.deadlines on a real loop (asyncio's and uvloop's): tasks are cancelled at
their deadlines, an ended deadline never fires, and no timer outlives the last one; and
on a manual clock, by property, for any sequence of starts, ends and time passing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from node.worker.deadlines import _EARLY, DeadlineSweep

Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_each_task_is_cancelled_at_its_own_deadline_with_one_timer(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sweep = DeadlineSweep()
        now = loop.time()
        tasks = [loop.create_task(_forever()) for _ in range(3)]
        late = sweep.start(loop, tasks[0], now + 0.30)
        soon = sweep.start(loop, tasks[1], now + 0.05)
        never = sweep.start(loop, tasks[2], now + 0.10)
        assert len(sweep) == 3
        sweep.end(never)  # answered in time: its deadline no longer applies
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        assert soon.expired and not late.expired and not tasks[0].done()
        assert loop.time() >= now + 0.05 - 0.002  # not before its time (timer resolution)
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert late.expired and loop.time() >= now + 0.30 - 0.002
        assert not never.expired and not tasks[2].done()
        tasks[2].cancel()
        for d in (soon, late):
            sweep.end(d)
        assert len(sweep) == 0 and sweep._timer is None  # nothing left armed

    LOOPS[loop_name](main())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_deadline_within_the_timer_resolution_is_due_not_rearmed(loop_name: str) -> None:
    """uvloop may fire a timer up to 1 ms early: that deadline is taken as due."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sweep = DeadlineSweep()
        task = loop.create_task(_forever())
        d = sweep.start(loop, task, loop.time() + 0.0005)
        sweep._expire(loop)  # what an early timer does
        assert d.expired and sweep._timer is None
        with pytest.raises(asyncio.CancelledError):
            await task

    LOOPS[loop_name](main())


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """A manual clock and its timers: what DeadlineSweep asks of a loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, to: float) -> None:
        """Fire every timer due by `to`, earliest first (as a loop does)."""
        while due := sorted((t for t in self.pending() if t.when <= to), key=lambda t: t.when):
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
        self.now = to


class FakeTask:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


# Times a hair apart as often as not: around a timer's resolution is where it goes wrong.
SECONDS = st.one_of(st.sampled_from([0.0, 0.0004, 0.001, 0.0015, 0.003, 0.008, 0.5]),
                    st.floats(0.0, 3.0))
OPS = st.lists(st.one_of(
    st.tuples(st.just("start"), SECONDS),
    st.tuples(st.just("end"), st.integers(0, 50)),
    st.tuples(st.just("advance"), SECONDS)), max_size=40)


@given(OPS)
def test_every_deadline_fires_on_time_and_an_ended_one_never(ops: list[tuple[str, Any]]) -> None:
    """A model of the sweep on a manual clock: after each step, every deadline still
    running whose time has come (within a timer's 1 ms) has cancelled its task, once;
    none has before its time; one that ended first never does; one timer at most."""
    loop = FakeLoop()
    sweep = DeadlineSweep()
    live: list[tuple[Any, FakeTask]] = []  # started, not ended
    ended: list[tuple[Any, FakeTask]] = []
    for op, arg in ops:
        if op == "start":
            task = FakeTask()
            live.append((sweep.start(loop, task, loop.now + arg), task))  # type: ignore[arg-type]
        elif op == "end" and live:
            d, task = live.pop(arg % len(live))
            sweep.end(d)
            ended.append((d, task))
        elif op == "advance":
            loop.advance(loop.now + arg)
        assert len(loop.pending()) <= 1
        for d, task in live:
            assert task.cancels == (1 if d.when <= loop.now + _EARLY and d.expired else 0)
            if d.when <= loop.now - _EARLY:
                assert d.expired  # due (its timer was armed no later than it)
            assert not d.expired or d.when <= loop.now + _EARLY
        for d, task in ended:
            assert task.cancels == (1 if d.expired else 0)
    loop.advance(loop.now + 10.0)
    assert all(d.expired and task.cancels == 1 for d, task in live)
    assert not loop.pending()  # once all are due, no timer is left
