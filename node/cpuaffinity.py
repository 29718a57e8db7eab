"""`cpu_affinity`: keep a node process, and the workers it serves, on one CPU each.

A miss at low load wakes a chain of threads: the node, its ZeroMQ I/O thread, the
worker's I/O thread, the worker, and back. A thread woken on another CPU than the one
that woke it costs an inter-processor interrupt, and an idle CPU first has to leave its
sleep state; on the 2-core VM of bench/BASELINES.md an idle ZeroMQ round trip took 96 to 123
µs with the kernel choosing CPUs and 48 to 51 µs with both processes and their I/O threads
on one CPU, and the miss path's added p50 at 1,000 req/s (`bench latency`) went from
0.43-0.55 to 0.34-0.45 ms. nginx's `worker_cpu_affinity` and Seastar's shard-per-core do the same.
The price is that a pinned process never uses a second core, so pinning pairs with
`--processes N`: process i takes the i-th CPU, and its workers are pinned to the same
one (`scale0 worker --cpu-affinity`).

The spec (pure, `cpus_for`): `off` (the default: the kernel chooses), `auto` (process i
on the i-th CPU this process may use, round robin), or a list of CPUs such as `0,2,4-7`
(process i on its i-th entry, round robin; a worker uses the whole list). `pin` sets it
for the calling thread before any other thread exists, so that ZeroMQ's I/O threads and
executors started later inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

OFF, AUTO = "off", "auto"
_MAX_CPU = 4095  # the kernel's CONFIG_NR_CPUS ceiling; bounds a range such as 0-99999999


def parse_cpus(spec: str) -> list[int]:
    """`0,2,4-7` → [0, 2, 4, 5, 6, 7], in the order given; ValueError saying what is wrong."""
    cpus: list[int] = []
    for part in spec.split(","):
        text = part.strip()
        first, dash, last = text.partition("-")
        if not (first.isascii() and first.isdigit()
                and (not dash or (last.isascii() and last.isdigit()))):
            raise ValueError(f"{text!r} is not a CPU number or a range such as 4-7")
        lo, hi = int(first), int(last) if dash else int(first)
        if lo > hi or hi > _MAX_CPU:
            raise ValueError(f"{text!r} is not a range of CPUs from 0 to {_MAX_CPU}")
        cpus += [cpu for cpu in range(lo, hi + 1) if cpu not in cpus]
    return cpus


def cpus_for(spec: str, index: int, allowed: Sequence[int]) -> frozenset[int] | None:
    """The CPUs process `index` keeps to under `spec`, `allowed` being the CPUs this process
    may run on (sorted); None for `off`. ValueError for a bad spec or a CPU not allowed."""
    text = _given(spec)
    if text is None:
        return None
    if not allowed:
        raise ValueError("no CPU is available to this process")
    if text == AUTO:
        return frozenset({allowed[index % len(allowed)]})
    cpus = _allowed_list(text, allowed)
    return frozenset({cpus[index % len(cpus)]})


def worker_cpus(spec: str, allowed: Sequence[int]) -> frozenset[int] | None:
    """A worker's CPUs: every CPU of the list (a worker is one process); None for `off`."""
    text = _given(spec)
    if text is None:
        return None
    if text == AUTO:
        raise ValueError("a worker takes a list of CPUs, e.g. 0 or 2-3: the CPU of the node "
                         "process it connects to")
    return frozenset(_allowed_list(text, allowed))


def _given(spec: str) -> str | None:
    """The spec as compared (trimmed, lower-case); None for `off` or nothing."""
    text = spec.strip().lower()
    return None if text in ("", OFF) else text


def _allowed_list(text: str, allowed: Sequence[int]) -> list[int]:
    """`parse_cpus(text)`, every CPU of which this process may use; ValueError naming one
    it may not."""
    cpus = parse_cpus(text)
    missing = [cpu for cpu in cpus if cpu not in allowed]
    if missing:
        raise ValueError(f"CPU {missing[0]} is not available to this process "
                         f"(it may use {_ranges(allowed)})")
    return cpus


def _ranges(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 5] → "0-2,5", as /proc and taskset write CPU lists."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and out[-1].rpartition("-")[2] == str(cpu - 1):
            out[-1] = f"{out[-1].partition('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on now (taskset, a cgroup's cpuset), sorted."""
    return sorted(os.sched_getaffinity(0))


def pin(cpus: frozenset[int] | None) -> None:
    """Keep the calling thread, and every thread it starts from now on, to `cpus`."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
