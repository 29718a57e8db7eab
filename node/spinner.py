"""One busy-poll spinner: keeps one CPU from sleeping while it serves traffic.

Why (bench/bench_profile.md §38): at low load every request finds the CPUs asleep,
and on a VM a sleeping vCPU has halted into the hypervisor; each wake-up on a
request's chain (client, node, its ZeroMQ I/O thread, the worker's, the worker,
the origin, and back) costs tens of µs before any code runs. With every CPU kept
busy by an idle-class loop, a miss's added p50 at 1,000 req/s fell from ~0.40 to
~0.28 ms on our 2-vCPU VM. HAProxy's `busy-polling` exists for the same reason; it
spins its own event loop, which here would take the CPU from the node's workers
and origin on the same host (bench_profile.md §24 measured +0.4 ms). A spinner
instead runs at SCHED_IDLE: it gets only time no other task wants, and a waking
task preempts it at once.

It governs itself from what it sees (`SpinGovernor`, pure, clock injected):
- spinning, it measures its own share of each 0.1 s window. A share under
  `busy_share` means the CPU is busy — there halts are rare and spinning only
  costs a busy machine throughput (13-15 % at full load without this rule) — so it
  backs off for `back_off` seconds;
- a share of `quiet_share` or more on average over `quiet_for` seconds means
  nothing else wanted the CPU (an idle node's timers take about half a percent):
  it rests, and looks at /proc/stat once every `rest_check` seconds, spinning
  again when others used `wake_share` of the CPU.

The node (node.busypoll) starts one per CPU with a pipe on stdin and never writes
to it: the pipe's end (EOF, the node exited or was killed) stops the spinner within
one window. One spinner a CPU on the machine: a second one (a worker's beside a
node's) waits, resting, until the first is gone (`claim`, an abstract socket).

Standard library only, run as `python -I -S node/spinner.py CPU`: it imports
nothing of Scale0, and starts in ~10 ms with ~12 MB resident.
"""

from __future__ import annotations

import enum
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

WINDOW = 0.1  # seconds of spinning between looks at the share and at the pipe
_SPIN_CHUNK = 1000  # loop iterations between clock reads (~20 µs)
_MAX_STAT = 1 << 20  # bytes of /proc/stat read at most (4,096 CPUs take ~330 KB)
_LOCK = "\0scale0-busy-poll-cpu-{cpu}"  # abstract: gone with the process, no file left


@dataclass(frozen=True, slots=True)
class SpinPolicy:
    """When a spinner spins, backs off and rests (fractions of one CPU, seconds)."""

    busy_share: float = 0.35
    back_off: float = 1.0
    quiet_share: float = 0.99
    quiet_for: float = 10.0
    wake_share: float = 0.03
    rest_check: float = 1.0


class Mode(enum.Enum):
    SPIN = "spin"  # keep the CPU busy; look again after a window
    BACK_OFF = "back-off"  # the CPU is busy: sleep until `wake_at`
    REST = "rest"  # nothing else runs here: sleep, look at /proc/stat every rest_check


class SpinGovernor:
    """The spinner's decisions from what it measured; no I/O, `now` given."""

    def __init__(self, policy: SpinPolicy | None = None) -> None:
        self.policy = policy or SpinPolicy()
        self.mode = Mode.SPIN
        self.wake_at = 0.0  # BACK_OFF ends then
        # The windows of the current period (quiet_for long, back to back): when it began,
        # the sum of their shares and their count. Its mean decides whether to rest: one
        # window of a timer's work must not start the quiet time again.
        self._since: float | None = None
        self._shares = 0.0
        self._windows = 0

    def spun(self, now: float, share: float) -> Mode:
        """A window of spinning ended; `share` is the part of it this spinner ran."""
        policy = self.policy
        if share < policy.busy_share:
            self.mode, self.wake_at, self._since = Mode.BACK_OFF, now + policy.back_off, None
            return self.mode
        if self._since is None:
            self._since, self._shares, self._windows = now, 0.0, 0
        self._shares += share
        self._windows += 1
        if now - self._since >= policy.quiet_for:
            if self._shares / self._windows >= policy.quiet_share:
                self.mode, self._since = Mode.REST, None
            else:
                self._since, self._shares, self._windows = now, 0.0, 0
        return self.mode

    def slept(self, now: float) -> Mode:
        """A back-off's sleep ended (at or after `wake_at`): spin again."""
        if self.mode is Mode.BACK_OFF and now >= self.wake_at:
            self.mode = Mode.SPIN
        return self.mode

    def rested(self, others: float) -> Mode:
        """A rest's look: `others` is the share of the CPU other tasks used since the last."""
        if self.mode is Mode.REST and others >= self.policy.wake_share:
            self.mode = Mode.SPIN
        return self.mode


def busy_ticks(stat: str, cpu: int) -> int:
    """Clock ticks CPU `cpu` spent on anything but idle and iowait, from /proc/stat's text;
    ValueError when its line is missing or malformed."""
    prefix = f"cpu{cpu} "
    for line in stat.splitlines():
        if line.startswith(prefix):
            fields = line.split()[1:]
            if len(fields) < 4 or not all(f.isascii() and f.isdigit() for f in fields):
                raise ValueError(f"malformed /proc/stat line for cpu{cpu}: {line[:120]!r}")
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
            # is already counted in user and nice.
            ticks = [int(f) for f in fields[:8]]
            return sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    raise ValueError(f"no cpu{cpu} line in /proc/stat")


def _read_busy(cpu: int) -> int | None:
    try:
        with open("/proc/stat", "rb") as f:
            return busy_ticks(f.read(_MAX_STAT).decode("ascii", "replace"), cpu)
    except (OSError, ValueError):
        return None  # unknown: the caller spins (what the operator asked for)


def claim(cpu: int) -> socket.socket | None:
    """This CPU's spinner lock (kept open while spinning), or None if another holds it."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        lock.bind(_LOCK.format(cpu=cpu))
    except OSError:
        lock.close()
        return None
    return lock


def _told_to_stop(fd: int, timeout: float) -> bool:
    """Wait up to `timeout` s for the node's pipe: readable means EOF (it never writes)."""
    readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
    return bool(readable)


def _spin(seconds: float) -> float:
    """Burn `seconds` of wall time; the share of it this thread ran."""
    clock, cpu_clock = time.monotonic, time.thread_time
    start, cpu_start = clock(), cpu_clock()
    while clock() - start < seconds:
        for _ in range(_SPIN_CHUNK):
            pass
    return (cpu_clock() - cpu_start) / max(clock() - start, 1e-9)


def run(cpu: int, parent: int, policy: SpinPolicy | None = None) -> int:
    """Spin on `cpu` as the governor says until `parent` (the node's pipe) ends."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    lock = claim(cpu)
    while lock is None:  # another spinner has this CPU: stand by until it is gone
        if _told_to_stop(parent, 1.0):
            return 0
        lock = claim(cpu)
    governor = SpinGovernor(policy)
    hz = os.sysconf("SC_CLK_TCK")
    clock = time.monotonic
    with lock:
        while True:
            mode = governor.mode
            if mode is Mode.SPIN:
                share = _spin(WINDOW)
                if _told_to_stop(parent, 0.0):
                    return 0
                governor.spun(clock(), share)
            elif mode is Mode.BACK_OFF:
                if _told_to_stop(parent, governor.wake_at - clock()):
                    return 0
                governor.slept(clock())
            else:
                before, started = _read_busy(cpu), clock()
                if _told_to_stop(parent, governor.policy.rest_check):
                    return 0
                after = _read_busy(cpu)
                elapsed = max(clock() - started, 1e-9)
                others = (1.0 if before is None or after is None
                          else (after - before) / hz / elapsed)
                governor.rested(others)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the node, which ends us
    if len(argv) != 2 or not (argv[1].isascii() and argv[1].isdigit()):
        print("usage: spinner.py CPU (run by scale0 node --busy-poll)", file=sys.stderr)
        return 2
    try:
        return run(int(argv[1]), sys.stdin.fileno())
    except OSError as exc:  # a CPU we may not use, a scheduler refusing SCHED_IDLE
        print(f"scale0 busy-poll spinner on CPU {argv[1]}: {exc}", file=sys.stderr)
        return 1
    except AttributeError:  # no os.sched_setaffinity / SCHED_IDLE: not Linux
        print("scale0 busy-poll: spinners need Linux (SCHED_IDLE, CPU affinity)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Straight out, without the interpreter's finalisation: there is nothing to flush or
    # close (the kernel drops the lock), and on a busy machine a SCHED_IDLE process gets
    # the CPU seldom, so its last steps should be few.
    os._exit(main(sys.argv))
