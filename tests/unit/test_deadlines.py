"""node.worker.deadlines on a real loop (asyncio's and uvloop's): tasks are cancelled at
their deadlines, an ended deadline never fires, and no timer outlives the last one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from node.worker.deadlines import DeadlineSweep

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
