"""Counted drops of hostile or broken input, for /_scale0/metrics.

The broker (`Broker.stats`), the gossip transport (`TransportStats.dropped`),
the cache replicator (`Replicator.drops()`: puts, announcements and purges from
peers) and the ZAP gatekeeper (`Gatekeeper.allowed/denied`) already count what
they refuse; this collector reads them at scrape time, so nothing on the hot path
changes. Reasons are the counters' own keys: a bounded set written in code,
never taken from input.

Wiring (node/server.py): `metrics.registry.register(DropCollector(broker=lambda:
broker.stats, gossip=lambda: mesh.agent.stats()["dropped"], replication=replicator.drops,
gate=gatekeeper))`; `replication` is None on a node without a cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

BROKER_DROPS = ("malformed", "dropped_replies", "unknown_worker", "send_failed")


class Gate(Protocol):
    allowed: int
    denied: int


class DropCollector(Collector):
    """`scale0_frames_dropped_total{socket, reason}` and `scale0_curve_handshakes_total`."""

    def __init__(self, broker: Callable[[], Mapping[str, int]] | None = None,
                 gossip: Callable[[], Mapping[str, int]] | None = None,
                 gate: Gate | None = None, namespace: str = "scale0",
                 replication: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.broker, self.gossip, self.gate, self.ns = broker, gossip, gate, namespace
        self.replication = replication

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(f"{self.ns}_frames_dropped",
                                  "Inbound ZeroMQ frames dropped, by socket and reason",
                                  labels=["socket", "reason"])
        if self.broker is not None:
            stats = self.broker()
            for reason in BROKER_DROPS:
                fam.add_metric(["workers", reason], stats.get(reason, 0))
        if self.gossip is not None:
            for reason, n in sorted(self.gossip().items()):
                sock = "peer" if reason.startswith(("peer:", "reply:")) else "gossip"
                fam.add_metric([sock, reason], n)
        if self.replication is not None:
            for reason, n in sorted(self.replication().items()):
                fam.add_metric(["replication", reason], n)
        yield fam
        if self.gate is not None:
            hs = CounterMetricFamily(f"{self.ns}_curve_handshakes",
                                     "CURVE handshakes decided by ZAP", labels=["result"])
            hs.add_metric(["allowed"], self.gate.allowed)
            hs.add_metric(["denied"], self.gate.denied)
            yield hs
