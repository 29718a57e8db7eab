"""Prometheus metrics of one node, served at /_scale0/metrics on the admin listener.

Each `Metrics` owns its own CollectorRegistry (never the process-global one),
so tests and several nodes in one process stay independent. Request counters
and the latency histogram are bumped on the request path; everything that is a
level (workers, slots, in flight, queue, cache size, peers by state) is read
from callbacks given at wiring time (`set_sources`) only when someone scrapes,
so an unscraped node does no polling at all. So are the counts the parts keep
themselves (gossip messages in/out by kind and drops by reason in
`GossipAgent.stats()`, forwarded requests in `MeshMember.forward_counts()`):
counting them a second time here would be a second truth that can drift.

Label values are bounded on purpose: an outcome outside OUTCOMES is counted as
"other", so a typo upstream cannot explode the series count; past MAX_SERIES
kinds or reasons in one family, the rest are summed as "other".
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import tornado.web
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cache.store import StoreStats
from gossip.load import ServiceLoad

log = logging.getLogger("scale0.metrics")
T = TypeVar("T")
# No `*_created` series next to every counter and histogram: one more gauge family each
# for the scrape and the TSDB, saying only when the process started (process-wide in
# prometheus_client; this module is the node's only user of it).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26

OUTCOMES = frozenset(
    {"local", "forwarded", "hit", "stale", "coalesced", "revalidated", "miss", "bypass",
     "static", "app", "error", "other"}
)
PEER_STATES = ("alive", "suspect", "dead", "left")
STORE_OPS = ("get", "put", "delete")  # always shown (0 until one fails); others as they occur
# Seconds; from a cache hit (sub-millisecond) to a slow backend (tens of seconds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)
# the `le` labels, as Prometheus writes them
_LE = (*(floatToGoString(b) for b in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
_REMEMBERED: Final = 4096  # (service, status, outcome) triples whose series are looked up at once

LoadSource = Callable[[], Mapping[str, ServiceLoad]]
CacheSource = Callable[[], StoreStats]
PeerSource = Callable[[], Mapping[str, int]]
# {"in": {kind: n}, "out": {kind: n}, "dropped": {reason: n}}, as GossipAgent.stats()
GossipSource = Callable[[], Mapping[str, Mapping[str, int]]]
ForwardSource = Callable[[], Mapping[str, int]]  # {"in": n, "out": n} since start
MAX_SERIES = 64  # kinds or reasons shown per family; the rest are summed as "other"


def outcome_label(outcome: str) -> str:
    if outcome in OUTCOMES:
        return outcome
    # A peer's answer is "forwarded-<its outcome>" (the access log keeps the detail).
    return "forwarded" if outcome.startswith("forwarded-") else "other"


class Metrics:
    """The node's metric families. One event loop only: requests are recorded without a
    lock (callbacks read loop-owned state too)."""

    def __init__(self, namespace: str = "scale0") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = namespace
        self._requests = _RequestSeries(ns)
        self.registry.register(self._requests)
        self._levels = _Levels(ns)
        self.registry.register(self._levels)

    # -- recording (hot path: a dict lookup and three adds) ---------------------------
    def observe_request(self, service: str, status: int, outcome: str, seconds: float) -> None:
        """Count one answered request and its time to response headers. Called for every
        request, prepared cache hits included."""
        self._requests.record(service, status, outcome, max(0.0, seconds))

    # -- levels, read at scrape time ------------------------------------------------
    def set_sources(
        self,
        loads: LoadSource | None = None,
        cache_stats: CacheSource | None = None,
        peers: PeerSource | None = None,
        gossip: GossipSource | None = None,
        forwarded: ForwardSource | None = None,
    ) -> None:
        """Callbacks read at each scrape: this node's per-service load, its cache store's
        stats, the count of peers by state (alive/suspect/dead/left), the gossip agent's
        message and drop counts, and the requests forwarded out and served in.

        The counts must only grow (Prometheus counters): totals since start, not rates."""
        self._levels.loads = loads
        self._levels.cache_stats = cache_stats
        self._levels.peers = peers
        self._levels.gossip = gossip
        self._levels.forwarded = forwarded

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its Content-Type (OpenMetrics if `accept` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _Latency:
    """One latency series: a count per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


class _RequestSeries(Collector):
    """`requests_total` by service, status and outcome, and `request_duration_seconds` by
    service and outcome, kept as plain numbers and turned into families at scrape time.

    prometheus_client's Counter and Histogram take a lock and walk the bucket list on every
    observation: about a tenth of a prepared cache hit's CPU. The node records from one
    event loop, so an add is enough; the exposition is the same (tests/unit/test_metrics
    compares it with prometheus_client's own Counter and Histogram)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.counts: dict[tuple[str, str, str], list[int]] = {}  # by label values
        self.latency: dict[tuple[str, str], _Latency] = {}
        # (service, status, outcome) as recorded -> its two series, so the labels are
        # worked out once per triple (bounded, whatever the values).
        self._cells: dict[tuple[str, int, str], tuple[list[int], _Latency]] = {}

    def record(self, service: str, status: int, outcome: str, seconds: float) -> None:
        cells = self._cells.get((service, status, outcome))
        if cells is None:
            cells = self._series(service, status, outcome)
        cells[0][0] += 1
        latency = cells[1]
        latency.buckets[bisect_left(BUCKETS, seconds)] += 1  # `le`: a bound counts itself
        latency.sum += seconds

    def _series(self, service: str, status: int, outcome: str) -> tuple[list[int], _Latency]:
        svc, label = service or "none", outcome_label(outcome)
        count = self.counts.setdefault((svc, str(status), label), [0])
        latency = self.latency.get((svc, label))
        if latency is None:
            latency = self.latency[(svc, label)] = _Latency()
        cells = (count, latency)
        if len(self._cells) < _REMEMBERED:
            self._cells[(service, status, outcome)] = cells
        return cells

    def describe(self) -> list[Metric]:
        return []  # unchecked, like _Levels: the families' samples vary

    def collect(self) -> Iterator[Metric]:
        ns = self.ns
        requests = CounterMetricFamily(
            f"{ns}_requests", "HTTP requests answered, by service, status and how they were "
            "served", labels=["service", "status", "outcome"])
        for triple, count in self.counts.items():
            requests.add_metric(triple, count[0])
        yield requests
        duration = HistogramMetricFamily(
            f"{ns}_request_duration_seconds", "Time from request received to response headers",
            labels=["service", "outcome"])
        for pair, latency in self.latency.items():
            running, cumulative = 0, []
            for le, n in zip(_LE, latency.buckets, strict=True):
                running += n
                cumulative.append((le, float(running)))
            duration.add_metric(pair, cumulative, latency.sum)
        yield duration


class _Levels(Collector):
    """Families computed from the wiring callbacks at collect() time: levels (gauges)
    and the counts other parts keep (counters)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loads: LoadSource | None = None
        self.cache_stats: CacheSource | None = None
        self.peers: PeerSource | None = None
        self.gossip: GossipSource | None = None
        self.forwarded: ForwardSource | None = None

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families vary with the sources set

    def collect(self) -> Iterator[Metric]:
        ns = self.ns
        loads = _safe(self.loads, "loads")
        if loads is not None:
            fams = {
                name: GaugeMetricFamily(f"{ns}_{name}", help_, labels=["service"])
                for name, help_ in (
                    ("workers", "Live workers offering the service on this node"),
                    ("slots", "Sum of the declared concurrency of those workers"),
                    ("in_flight", "Requests being served by this node's workers"),
                    ("queue_depth", "Requests waiting for a free local slot"),
                )
            }
            for service, load in sorted(loads.items()):
                fams["workers"].add_metric([service], load.workers)
                fams["slots"].add_metric([service], load.slots)
                fams["in_flight"].add_metric([service], load.in_flight)
                fams["queue_depth"].add_metric([service], load.queued)
            yield from fams.values()
        stats = _safe(self.cache_stats, "cache_stats")
        if stats is not None:
            yield GaugeMetricFamily(f"{ns}_cache_bytes", "Bytes held by the cache store",
                                    value=stats.bytes)
            yield GaugeMetricFamily(f"{ns}_cache_entries", "Entries held by the cache store",
                                    value=stats.entries)
            yield CounterMetricFamily(f"{ns}_cache_evictions", "Entries evicted to stay in the cap",
                                      value=stats.evictions)
            if stats.capacity > 0:
                yield GaugeMetricFamily(
                    f"{ns}_cache_capacity_bytes", "Byte cap of the cache store in force now "
                    "(files: lowered for a while when the disk is full)", value=stats.capacity)
            errors = CounterMetricFamily(
                f"{ns}_cache_store_errors", "Cache store operations that failed (disk or "
                "database errors), by operation", labels=["op"])
            for op, n in bounded({**dict.fromkeys(STORE_OPS, 0), **stats.errors}):
                errors.add_metric([op], n)
            yield errors
        peers = _safe(self.peers, "peers")
        if peers is not None:
            fam = GaugeMetricFamily(f"{ns}_peers", "Peers known to this node, by state",
                                    labels=["state"])
            for state in sorted(set(PEER_STATES) | set(peers)):
                fam.add_metric([state], peers.get(state, 0))
            yield fam
        yield from self._counts()

    def _counts(self) -> Iterator[Metric]:
        ns = self.ns
        gossip = _safe(self.gossip, "gossip")
        if gossip is not None:
            msgs = CounterMetricFamily(
                f"{ns}_gossip_messages", "Gossip messages sent (out) and received (in), by kind",
                labels=["direction", "kind"])
            for direction in ("in", "out"):
                for kind, n in bounded(gossip.get(direction, {})):
                    msgs.add_metric([direction, kind], n)
            yield msgs
            drops = CounterMetricFamily(
                f"{ns}_gossip_dropped",
                "Gossip input or sends dropped, by reason (bad frame, unexpected type, "
                "refused news, send failure, ...)", labels=["reason"])
            for reason, n in bounded(gossip.get("dropped", {})):
                drops.add_metric([reason], n)
            yield drops
        forwarded = _safe(self.forwarded, "forwarded")
        if forwarded is not None:
            fam = CounterMetricFamily(
                f"{ns}_forwarded", "Requests forwarded to peers (out) and served for peers (in)",
                labels=["direction"])
            for direction in ("in", "out"):
                fam.add_metric([direction], forwarded.get(direction, 0))
            yield fam


def bounded(counts: Mapping[str, int], limit: int = MAX_SERIES) -> list[tuple[str, int]]:
    """`counts` by label, sorted, at most `limit` series: past that the rest are summed as
    "other" (a set of reasons that grew without bound must not grow the scrape with it)."""
    items = sorted(counts.items())
    if len(items) <= limit:
        return items
    kept = dict(items[:limit - 1])
    kept["other"] = kept.get("other", 0) + sum(n for _, n in items[limit - 1:])
    return sorted(kept.items())


def _safe(source: Callable[[], T] | None, name: str) -> T | None:
    """The source's value, or None (logged) if it failed: a scrape never breaks on it."""
    if source is None:
        return None
    try:
        return source()
    except Exception:
        log.exception("metrics source %s failed; its gauges are left out of this scrape", name)
        return None


class MetricsHandler(tornado.web.RequestHandler):
    """GET /_scale0/metrics on the admin listener."""

    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        body, content_type = self.metrics.render(self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.write(body)

    def head(self) -> None:  # `curl -I`: Tornado sends the head alone (and the length)
        self.get()


def metrics_route(metrics: Metrics) -> tuple[str, type[MetricsHandler], dict[str, Any]]:
    """The admin rule to mount: `make_admin_app(state, extra_routes=[metrics_route(m)])`."""
    return (r"/_scale0/metrics", MetricsHandler, {"metrics": metrics})
