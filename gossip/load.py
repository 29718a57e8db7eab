"""What a node reports about one of its services: the unit of the load table.

Lives in gossip/ because it travels in state beats; the broker in node/ fills
it, the load table and routing policy in mesh/ read it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
