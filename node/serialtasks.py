"""One task for the answers of one connection, instead of one task per request.

A fast-wire connection serves one request at a time (node.fastproto), so the coroutines
that answer its requests (node.front's `_Exchange._run`) can run one after another in a
single task. A task per request cost about 0.7 µs more than a future here (of the node's
27 µs on a dispatched request): CPython 3.11 registers every task in a WeakSet, in
Python, and a weak-reference callback takes it out again when it is freed.

Cancelling. A job is stopped with `cancel(job)`, which cancels the shared task only
while that job is the one running; a job still waiting for its turn is told by its own
means (node.front checks a flag when its coroutine starts). A job catches its own
cancellation (node.front's does), so the task goes on with the next job, its count of
cancel requests put back (`Task.uncancel`), once a cancellation asked too late to reach
the job has been taken. A cancellation the task was not given through `cancel` — the
loop shutting down — ends it, after the job in progress (jobs still waiting never run).
Not thread-safe: one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("scale0.front")

Job = Callable[[], Coroutine[Any, Any, None]]


class SerialTasks:
    """Jobs run in turn, in the order given, by one task made when first needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: collections.deque[Job] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # the idle task waits on it
        self._current: Job | None = None
        self._aimed = 0  # cancel requests made by `cancel`, not yet put back
        self._closed = False
        self._serving = False  # `_task` is running `_serve` (told without a call to done())

    def submit(self, job: Job) -> asyncio.Task[None]:
        """Run `job()` once the jobs before it are done; the task that runs it."""
        if self._closed:  # the connection has gone: the job still runs (to its end)
            return self._loop.create_task(job())
        self._queue.append(job)
        task = self._task
        if task is None or not self._serving:
            self._serving = True
            task = self._task = self._loop.create_task(self._serve())
        else:
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)
        return task

    def cancel(self, job: Job) -> bool:
        """Cancel `job` if it is the one running (True); else nothing is done."""
        task = self._task
        if self._current is not job or task is None or not self._serving:
            return False
        self._aimed += 1
        task.cancel()
        return True

    def close(self) -> None:
        """No more jobs will come: the task ends once those given are done."""
        self._closed = True
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _serve(self) -> None:
        queue = self._queue
        task = asyncio.current_task()
        assert task is not None
        try:
            while True:
                while queue:
                    # No local name for the job: one would keep it (and what it holds, a
                    # request's objects) alive until the next job came.
                    self._current = queue.popleft()
                    try:
                        await self._current()
                    except asyncio.CancelledError:
                        if not self._aimed:
                            raise  # not given through `cancel`: the loop is stopping
                    except Exception:  # a job's bug must not stop the connection's others
                        log.exception("an answer failed")
                    finally:
                        self._current = None
                    if self._aimed and not await self._settle(task):
                        return
                    if task.cancelling():
                        return  # the job caught a cancellation that was not its own
                if self._closed:
                    return
                wake = self._wake = self._loop.create_future()
                try:
                    await wake
                finally:
                    self._wake = None
        finally:
            self._serving = False

    async def _settle(self, task: asyncio.Task[None]) -> bool:
        """After a job `cancel` was used on: its requests put back, and one asked while
        the job ran but not delivered before it ended (asyncio delivers a cancellation
        at the next await) taken here rather than by the next job. False if a
        cancellation that was not ours remains."""
        while self._aimed:
            self._aimed -= 1
            task.uncancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if task.cancelling():
                raise
        return not task.cancelling()
