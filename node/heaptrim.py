"""Memory back to the OS after a traffic spike: the I/O around node.trimrule's rule.

Measured with `scale0 node --cache memory` and `scale0 worker --upstream` in front of
bench/origin.py, VmRSS before, at the peak of and 30 s after a burst of 256 KiB-4 MiB
bodies at 64 connections: 1,500 uncacheable misses left the node at 120-136 MiB (idle
52, peak 130-150) and the worker at 150-210 (idle 41); 600 cacheable ones, evicting
from a 256 MiB memory store, left the node at 790 (peak 800). Nothing came back by
itself. Two causes, both fixed only by something that runs once the load has gone:

- Cyclic garbage. Each exchange leaves reference cycles (its task, futures and
  callbacks) holding its request and response bodies until a collection of the
  generation they reached. CPython collects as allocations outnumber frees, so a
  process that goes quiet keeps its last few hundred exchanges for good: in one such
  run (759 MiB), 340 MiB were bodies of finished requests and evicted entries.
- glibc's heap. Freed memory stays in malloc's arenas: once a large block is freed,
  glibc raises its mmap threshold (up to 32 MiB), so later bodies are carved from the
  heap, and only the heap's top is ever given back by itself.

So, when the rule says so: `gc.collect()` (start-up objects are frozen, node.gctune, so
it walks only what requests left: 1-12 ms), then glibc's `malloc_trim(0)`, which gives
back the free pages of every arena, not just the top (1-50 ms, the most after the 790
MiB above). The node came back to 57 MiB and 308 (idle plus its full cache), the
worker to 42. Both run on the event loop, only when the process is quiet; the reading
once a second (RSS from /proc/self/statm, the process's CPU time, requests in flight)
costs about 10 µs, and nothing is added per request.

Not done: fixing glibc's mmap threshold with `mallopt(M_MMAP_THRESHOLD, 128 KiB)` (the
MALLOC_MMAP_THRESHOLD_ variable), so large blocks are always mmapped and unmapped when
freed. Measured on 1,500 misses, it took the node from 2.1-2.3 to 4.3-4.5 CPU seconds
and the worker from 2.1 to 5.8 (every body paid mmap, page faults and munmap), and still
left the node at 67 MiB and the worker at 80-130. Elsewhere than glibc (musl, macOS)
there is no `malloc_trim`: the collection alone runs; where RSS cannot be read (no
/proc), nothing does.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable

from node.trimrule import MIB, Trimmer, TrimRule

log = logging.getLogger("scale0.memory")

EVERY = 1.0  # seconds between two readings
SAID = 16 * MIB  # a trim that gave back at least this much is logged at INFO (DEBUG else)


def read_rss() -> int | None:
    """This process's resident set size in bytes; None where /proc does not say."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _glibc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None on another C library."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)  # the process's own C library (symbols of libc.so.6)
        trim = libc.malloc_trim
    except (ValueError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_TRIM = _glibc_trim()


def release() -> None:
    """Free cyclic garbage, then give the allocator's free pages back to the OS."""
    gc.collect()
    if _TRIM is not None:
        _TRIM()


class HeapTrim:
    """Reads the process once a second (`run`) and trims when the rule says so.

    `in_flight` counts the requests the process is serving now (the fronts' exchanges,
    a worker's jobs). Readings and the trim come through arguments, for tests."""

    def __init__(self, rule: TrimRule, in_flight: Callable[[], int], *,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time,
                 rss: Callable[[], int | None] = read_rss,
                 trim: Callable[[], None] = release) -> None:
        self.in_flight = in_flight
        self.clock, self.cpu, self.rss, self.trim = clock, cpu, rss, trim
        self.trims = 0  # how many times it trimmed (for tests and logs)
        start = rss()
        self.trimmer = None if start is None else Trimmer(rule, clock(), cpu(), start)

    @property
    def rule(self) -> TrimRule | None:
        return self.trimmer.rule if self.trimmer is not None else None

    def set_rule(self, rule: TrimRule) -> None:
        """A new rule from then on (SIGHUP); the baseline and the last trim stay."""
        if self.trimmer is not None:
            self.trimmer.rule = rule

    def tick(self) -> None:
        trimmer = self.trimmer
        rss = self.rss()
        if trimmer is None or rss is None:
            return
        if not trimmer.tick(self.clock(), self.cpu(), self.in_flight(), rss):
            return
        began = time.perf_counter()
        self.trim()
        took = time.perf_counter() - began
        self.trims += 1
        after = self.rss() or rss
        log.log(logging.INFO if rss - after >= SAID else logging.DEBUG,
                "quiet after a spike: returned %d MiB to the OS (RSS %d -> %d MiB, "
                "baseline %d MiB) in %.0f ms", (rss - after) // MIB, rss // MIB,
                after // MIB, trimmer.baseline // MIB, took * 1000)

    async def run(self, every: float = EVERY) -> None:
        """Read every `every` seconds until cancelled (nothing at all where RSS is unknown)."""
        if self.trimmer is None:
            return
        while True:
            await asyncio.sleep(every)  # a reading period, not a synchronisation
            try:
                self.tick()
            except Exception:  # once, not every second: the process serves on untrimmed
                log.exception("returning memory after spikes failed; no more attempts")
                return
