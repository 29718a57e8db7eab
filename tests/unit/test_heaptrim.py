"""node.heaptrim, the shell: readings in, a trim out when the rule says so; the real readers
and the real trim on this machine."""

from __future__ import annotations

import gc
import logging
import os
import weakref

import pytest

from node import heaptrim
from node.heaptrim import HeapTrim, read_rss, release
from node.trimrule import MIB, TrimRule


class Fake:
    """The readings a HeapTrim takes, set by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 5.0
        self.rss: int | None = 60 * MIB
        self.in_flight = 0
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.rss = 61 * MIB

    def heap(self, rule: TrimRule) -> HeapTrim:
        return HeapTrim(rule, lambda: self.in_flight, clock=lambda: self.now,
                        cpu=lambda: self.cpu, rss=lambda: self.rss, trim=self.trim)


def test_trims_once_quiet_and_grown_and_says_how_much(caplog: pytest.LogCaptureFixture) -> None:
    f = Fake()
    heap = f.heap(TrimRule(after=3.0))
    f.rss = 500 * MIB
    for _ in range(2):
        f.now += 1.0
        heap.tick()
    assert f.trims == 0
    f.in_flight = 1  # a request: the three seconds start again
    f.now += 1.0
    heap.tick()
    f.in_flight = 0
    with caplog.at_level(logging.INFO, logger="scale0.memory"):
        for _ in range(3):
            f.now += 1.0
            heap.tick()
    assert f.trims == heap.trims == 1
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "quiet after a spike: returned 439 MiB to the OS (RSS 500 -> 61 MiB, baseline 60 MiB)"]


def test_a_new_rule_replaces_the_old(caplog: pytest.LogCaptureFixture) -> None:
    f = Fake()
    heap = f.heap(TrimRule(after=0.0))  # never
    f.rss = 500 * MIB
    for _ in range(30):
        f.now += 1.0
        heap.tick()
    assert f.trims == 0
    heap.set_rule(TrimRule(after=2.0))
    assert heap.rule == TrimRule(after=2.0)
    f.now += 1.0
    heap.tick()
    assert f.trims == 1


async def test_without_a_reading_of_rss_nothing_runs() -> None:
    f = Fake()
    f.rss = None
    heap = f.heap(TrimRule(after=1.0))
    assert heap.trimmer is None and heap.rule is None
    heap.set_rule(TrimRule())
    heap.tick()
    await heap.run(every=0.0)  # returns at once instead of reading for ever
    assert f.trims == 0


async def test_a_failing_reading_is_logged_once_and_ends_the_task(
        caplog: pytest.LogCaptureFixture) -> None:
    f = Fake()
    heap = f.heap(TrimRule(after=1.0))

    def broken() -> int:
        raise OSError("no /proc")

    heap.in_flight = broken
    with caplog.at_level(logging.ERROR, logger="scale0.memory"):
        await heap.run(every=0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "returning memory after spikes failed; no more attempts"]


def test_read_rss_is_this_process_resident_size() -> None:
    rss = read_rss()
    assert rss is not None
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert abs(rss - kib * 1024) < 64 * MIB  # read a moment apart, by two ways


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.body = bytes(4 * MIB)


def test_release_frees_cyclic_garbage_and_calls_glibc() -> None:
    assert heaptrim._TRIM is not None, "glibc's malloc_trim not found on a glibc system"
    assert os.confstr("CS_GNU_LIBC_VERSION")
    gc.disable()  # no collection but ours
    try:
        held = _Cycle()
        gone = weakref.ref(held)
        del held
        assert gone() is not None
        release()
        assert gone() is None
    finally:
        gc.enable()
