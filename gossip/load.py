"""What a node reports about one of its services: the unit of the load table.

Lives in gossip/ because it travels in state beats; the broker in node/ fills
it, the load table and routing policy in mesh/ read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# What one node can plausibly report for one service. Figures past these are a
# bug or a lie; the membership core clamps a beat's load (`clamp_report`) before
# keeping it, so nothing downstream — routing sums, datacenter summaries, the
# dashboard, JSON readers — meets 10**18 slots or 3e38 ms. The codec only rejects
# what no number means (negative, NaN, infinite: gossip/messages.py).
MAX_COUNT = 1_000_000  # workers, slots, requests in flight or queued
MAX_FIGURE = 1e9  # milliseconds or requests per second


@dataclass(frozen=True, slots=True)
class ServiceLoad:
    """One service's capacity and load on one node, as of one report."""

    workers: int = 0  # live workers offering the service
    slots: int = 0  # sum of their declared concurrency
    in_flight: int = 0  # requests being served by those workers now
    queued: int = 0  # requests waiting for a free slot
    p50_ms: float = 0.0  # recent median worker latency
    rps: float = 0.0  # recent completed requests per second
    fwd_in_rps: float = 0.0  # requests per second forwarded to this node by peers
    fwd_out_rps: float = 0.0  # requests per second this node forwarded to peers

    @property
    def free(self) -> int:
        """Slots not in use and not promised to the local queue."""
        return max(0, self.slots - self.in_flight - self.queued)


def clamp(load: ServiceLoad) -> ServiceLoad:
    """``load`` with every count at most MAX_COUNT and every figure at most MAX_FIGURE
    (and never negative: the codec rejects those, other callers may not)."""
    def count(v: int) -> int:
        return min(max(v, 0), MAX_COUNT)

    def figure(v: float) -> float:
        return min(max(v, 0.0), MAX_FIGURE) if not math.isnan(v) else 0.0

    return ServiceLoad(count(load.workers), count(load.slots), count(load.in_flight),
                       count(load.queued), figure(load.p50_ms), figure(load.rps),
                       figure(load.fwd_in_rps), figure(load.fwd_out_rps))


def clamp_report(report: Iterable[tuple[str, ServiceLoad]]
                 ) -> tuple[tuple[tuple[str, ServiceLoad], ...], int]:
    """A load report with every row clamped, and how many rows had to be."""
    out, clamped = [], 0
    for name, load in report:
        safe = clamp(load)
        clamped += safe != load
        out.append((name, safe))
    return tuple(out), clamped
