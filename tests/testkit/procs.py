"""Real processes and real ports for end-to-end tests.

`Proc` runs a command (normally the installed `scale0` script) with its output
in a log file, and always kills it — by its own PID — at the end. `wait_until`
polls a condition with a deadline: polling a real condition is how these tests
synchronise, never a bare sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from node.freeport import free_port  # also re-exported for the tests

T = TypeVar("T")


def scale0_bin() -> str:
    """The `scale0` console script of the environment running the tests."""
    candidate = Path(sys.executable).with_name("scale0")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("scale0")
    if not found:
        raise RuntimeError("the scale0 script is not installed; run `make test`")
    return found


STRIDE = 100  # `--processes`: process i binds each configured port + 100·i (node.processes)


def free_port_pair(*after: int) -> int:
    """A free port p whose p + STRIDE is free too (process 1's), and so are p + each of
    `after` and those + STRIDE (ports right after p, for another role)."""
    for _ in range(50):
        port = free_port()
        wanted = [port + STRIDE, *(port + d for d in after),
                  *(port + d + STRIDE for d in after)]
        if all(free_port(preferred=p) == p for p in wanted):
            return port
    raise AssertionError("no free ports at p, p + 100 and after")


class Gone(AssertionError):
    """What a check raises when waiting longer cannot help (the process it asks exited):
    `wait_until` fails at once with it instead of polling to its timeout."""


def wait_until(
    check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds, or at
    once when it raises `Gone`."""
    end = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Gone:
            raise
        except Exception as exc:  # the condition may not be observable yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check!r}: {last_exc!r}")


class Proc:
    """A subprocess whose stdout+stderr go to `log_path`; killed on `stop()`."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = args
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it does not exit)."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def stop(self) -> None:
        if self.alive():
            self.terminate(5.0)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")
