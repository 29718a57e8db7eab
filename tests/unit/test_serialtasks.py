"""node.serialtasks: a connection's answers run in turn by one task, and a cancellation
reaches the job it was meant for, and no other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from node.serialtasks import SerialTasks

Job = Callable[[], Coroutine[Any, Any, None]]


class Recorder:
    """Jobs that note when they begin and end, each held until its gate opens."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.gates: dict[str, asyncio.Future[None]] = {}
        self.tasks: dict[str, asyncio.Task[Any] | None] = {}

    def job(self, name: str, *, catch: bool = True) -> Job:
        loop = asyncio.get_running_loop()
        gate = self.gates[name] = loop.create_future()

        async def run() -> None:
            self.events.append(f"{name} begins")
            self.tasks[name] = asyncio.current_task()
            try:
                await gate
            except asyncio.CancelledError:
                self.events.append(f"{name} cancelled")
                if not catch:
                    raise
                return
            self.events.append(f"{name} ends")

        return run


async def settle(task: asyncio.Task[Any] | None = None) -> None:
    """Let the loop run until nothing is ready (or `task` is done)."""
    for _ in range(20):
        if task is not None and task.done():
            return
        await asyncio.sleep(0)


async def test_jobs_run_in_turn_in_one_task() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    first, second = rec.job("a"), rec.job("b")
    ta, tb = tasks.submit(first), tasks.submit(second)
    assert ta is tb
    await settle()
    assert rec.events == ["a begins"]  # b waits for a
    rec.gates["a"].set_result(None)
    await settle()
    assert rec.events == ["a begins", "a ends", "b begins"]
    rec.gates["b"].set_result(None)
    await settle()
    assert rec.events[-1] == "b ends" and rec.tasks["a"] is rec.tasks["b"] is ta
    assert not ta.done()  # idle, waiting for the next job
    third = rec.job("c")
    assert tasks.submit(third) is ta
    rec.gates["c"].set_result(None)
    await settle()
    assert rec.events[-1] == "c ends"
    tasks.close()
    await settle(ta)
    assert ta.done() and not ta.cancelled()


async def test_a_cancel_reaches_its_job_and_the_next_runs_uncancelled() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    first, second = rec.job("a"), rec.job("b")
    task = tasks.submit(first)
    tasks.submit(second)
    await settle()
    assert not tasks.cancel(second)  # not running yet: nothing happens
    assert tasks.cancel(first)
    await settle()
    assert rec.events == ["a begins", "a cancelled", "b begins"]
    assert task.cancelling() == 0  # the request was put back
    rec.gates["b"].set_result(None)
    await settle()
    assert rec.events[-1] == "b ends"
    tasks.close()
    await settle(task)
    assert task.done() and not task.cancelled()


async def test_a_job_that_lets_its_cancellation_out_does_not_end_the_task() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    first, second = rec.job("a", catch=False), rec.job("b")
    task = tasks.submit(first)
    tasks.submit(second)
    await settle()
    tasks.cancel(first)
    rec.gates["b"].set_result(None)
    await settle()
    assert rec.events == ["a begins", "a cancelled", "b begins", "b ends"]
    assert not task.done()
    tasks.close()
    await settle(task)


async def test_a_cancel_asked_as_its_job_ends_is_not_the_next_jobs() -> None:
    """A job cancelled while it runs, that ends before any await: asyncio would deliver
    the cancellation at the next await, which must not be the next job's."""
    tasks = SerialTasks(asyncio.get_running_loop())
    events: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def first() -> None:
        tasks.cancel(first)  # as if its client left while it was writing
        events.append("first ends")

    async def second() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            events.append("second cancelled")
            raise
        events.append("second ends")

    task = tasks.submit(first)
    tasks.submit(second)
    await settle()
    gate.set_result(None)
    await settle()
    assert events == ["first ends", "second ends"]
    assert task.cancelling() == 0
    tasks.close()
    await settle(task)


async def test_a_cancellation_not_given_through_cancel_ends_the_task() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    task = tasks.submit(rec.job("a"))
    rec.gates["a"].set_result(None)
    await settle()
    task.cancel()  # idle: the loop is stopping
    await settle(task)
    assert task.cancelled()
    # a later job gets a new task
    again = tasks.submit(rec.job("b"))
    assert again is not task
    rec.gates["b"].set_result(None)
    await settle()
    assert rec.events[-1] == "b ends"
    tasks.close()
    await settle(again)


async def test_a_job_that_swallows_the_loops_cancellation_ends_the_task() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    task = tasks.submit(rec.job("a"))
    tasks.submit(rec.job("b"))
    await settle()
    task.cancel()  # not through `cancel`: "a" catches it and returns
    await settle(task)
    assert task.done()
    assert rec.events == ["a begins", "a cancelled"]  # "b" never runs: the loop is going


async def test_a_failing_job_is_logged_and_the_next_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()

    async def broken() -> None:
        raise RuntimeError("a bug")

    task = tasks.submit(broken)
    tasks.submit(rec.job("b"))
    with caplog.at_level(logging.ERROR, logger="scale0.front"):
        await settle()
    assert "an answer failed" in caplog.text and rec.events == ["b begins"]
    rec.gates["b"].set_result(None)
    tasks.close()
    await settle(task)
    assert task.done() and rec.events[-1] == "b ends"


async def test_after_close_a_job_still_runs_in_a_task_of_its_own() -> None:
    tasks, rec = SerialTasks(asyncio.get_running_loop()), Recorder()
    tasks.close()
    task = tasks.submit(rec.job("a"))
    rec.gates["a"].set_result(None)
    await settle(task)
    assert task.done() and rec.events == ["a begins", "a ends"]
