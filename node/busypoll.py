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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("scale0.busypoll")

SPINNER = Path(__file__).with_name("spinner.py")
_STOP_WAIT = 2.0  # seconds a spinner has to exit once its pipe is closed


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
        for proc in self.procs:
            try:
                proc.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:  # never seen: it looks every 0.1 s
                proc.kill()
                proc.wait()
        self.procs = []


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError):
            pipe.close()


@contextlib.contextmanager
def busy_polling(enabled: bool, cpus: Iterable[int]) -> Iterator[Spinners | None]:
    """Spinners on `cpus` for the duration of the block when `enabled`."""
    if not enabled:
        yield None
        return
    spinners = Spinners(cpus)
    try:
        spinners.start()  # in the try: one that failed to start stops those before it
        yield spinners
    finally:
        spinners.stop()
