"""`busy_poll`: one idle-class spinner per CPU while the node runs (node/spinner.py).

The spinners are child processes, each with a pipe on its stdin that only the node
holds. The node never writes to it: closing it (`stop`, or the node's death, even by
SIGKILL) is the spinner's signal to exit, so none outlives its node. They are started
after any fork of `--processes` (the children do not hold the pipes) and take no file
descriptor of the node's with them.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("scale0.busypoll")

SPINNER = Path(__file__).with_name("spinner.py")
# Seconds the spinners have, together, to exit once their pipes are closed. On a busy
# machine a SCHED_IDLE process may wait a second or two for the CPU (four busy loops on
# two cores: 0.5-1.9 s); past this they are killed, which loses nothing.
_STOP_WAIT = 2.0


class Spinners:
    """One spinner process per CPU of `cpus`."""

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = sorted(set(cpus))
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for cpu in self.cpus:
            # -I -S: no site, no environment, no user paths: the stdlib alone, quick to
            # start and small (the spinner imports nothing of Scale0).
            self.procs.append(subprocess.Popen(
                [sys.executable, "-I", "-S", str(SPINNER), str(cpu)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True))
        log.info("busy-poll: a spinner on each of CPUs %s", ", ".join(map(str, self.cpus)))

    def stop(self) -> None:
        for proc in self.procs:
            _close(proc.stdin)
        deadline = time.monotonic() + _STOP_WAIT
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # starved of CPU: the node is leaving anyway
                proc.kill()
                proc.wait()
        self.procs = []


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            pipe.close()


@contextlib.contextmanager
def busy_polling(enabled: bool, cpus: Iterable[int]) -> Iterator[None]:
    """Spinners on `cpus` for the duration of the block when `enabled`."""
    if not enabled:
        yield
        return
    spinners = Spinners(cpus)
    try:
        spinners.start()  # in the try: one that failed to start stops those before it
        yield
    finally:
        spinners.stop()
