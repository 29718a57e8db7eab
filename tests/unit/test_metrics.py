"""Metrics render what was recorded, read levels only from their sources, and stay per-node."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from cache.store import StoreStats
from gossip.load import ServiceLoad
from node.metrics import BUCKETS, MAX_SERIES, OUTCOMES, Metrics, bounded, outcome_label


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_and_latency_after_recording() -> None:
    m = Metrics()
    m.observe_request("www", 200, "hit", 0.002)
    m.observe_request("www", 200, "hit", 0.004)
    m.observe_request("api", 503, "error", 1.5)
    m.observe_request("", 200, "made-up", 0.1)
    got = samples(m)
    hit = (("outcome", "hit"), ("service", "www"), ("status", "200"))
    assert got[("scale0_requests_total", hit)] == 2
    err = (("outcome", "error"), ("service", "api"), ("status", "503"))
    assert got[("scale0_requests_total", err)] == 1
    other = (("outcome", "other"), ("service", "none"), ("status", "200"))
    assert got[("scale0_requests_total", other)] == 1
    www_hit = (("outcome", "hit"), ("service", "www"))
    assert got[("scale0_request_duration_seconds_count", www_hit)] == 2
    le = (("le", "0.005"), ("outcome", "hit"), ("service", "www"))
    assert got[("scale0_request_duration_seconds_bucket", le)] == 2
    le = (("le", "1.0"), ("outcome", "error"), ("service", "api"))
    assert got[("scale0_request_duration_seconds_bucket", le)] == 0


observations = st.lists(st.tuples(
    st.sampled_from(["www", "api", ""]),
    st.sampled_from([200, 304, 404, 503]),
    st.sampled_from(["hit", "miss", "local", "forwarded-hit", "made-up"]),
    # the bounds themselves (a bound counts in its own bucket), around them, and beyond
    st.one_of(st.sampled_from([0.0, *BUCKETS]), st.floats(-1.0, 100.0), st.just(1e9)),
), max_size=40)


@given(observations)
def test_request_series_render_as_prometheus_clients_own_counter_and_histogram(
        seen: list[tuple[str, int, str, float]]) -> None:
    """The node keeps request counts and latencies as plain numbers (no lock, no walk of
    the buckets per request); a scrape must still read exactly what prometheus_client's
    Counter and Histogram would have exposed, in both formats."""
    ours = Metrics()
    reference = CollectorRegistry()
    requests = Counter("requests", "HTTP requests answered, by service, status and how they "
                       "were served", ["service", "status", "outcome"], namespace="scale0",
                       registry=reference)
    duration = Histogram("request_duration_seconds", "Time from request received to response "
                         "headers", ["service", "outcome"], namespace="scale0",
                         registry=reference, buckets=BUCKETS)
    for service, status, outcome, seconds in seen:
        ours.observe_request(service, status, outcome, seconds)
        svc, label = service or "none", outcome_label(outcome)
        requests.labels(svc, str(status), label).inc()
        duration.labels(svc, label).observe(max(0.0, seconds))
    assert ours.render()[0] == generate_latest(reference)
    openmetrics = "application/openmetrics-text; version=1.0.0"
    assert ours.render(openmetrics)[0] == generate_openmetrics(reference)  # type: ignore[no-untyped-call]


def test_no_created_series_next_to_the_counters() -> None:
    m = Metrics()
    m.observe_request("www", 200, "hit", 0.002)
    body, _ = m.render()
    assert b"scale0_requests_total{" in body and b"_created" not in body


def test_gossip_and_forwarding_counts_are_read_from_their_parts() -> None:
    m = Metrics()
    gossip = {"in": {"Beat": 3}, "out": {"Beat": 4, "Push": 1}, "dropped": {"sub:decode": 2}}
    fwd = {"in": 2, "out": 5}
    m.set_sources(gossip=lambda: gossip, forwarded=lambda: fwd)
    got = samples(m)
    assert got[("scale0_gossip_messages_total", (("direction", "out"), ("kind", "Beat")))] == 4
    assert got[("scale0_gossip_messages_total", (("direction", "in"), ("kind", "Beat")))] == 3
    assert got[("scale0_gossip_dropped_total", (("reason", "sub:decode"),))] == 2
    assert got[("scale0_forwarded_total", (("direction", "in"),))] == 2
    assert got[("scale0_forwarded_total", (("direction", "out"),))] == 5
    fwd["out"] = 6  # read again at the next scrape, not copied at wiring time
    assert samples(m)[("scale0_forwarded_total", (("direction", "out"),))] == 6


def test_unwired_counts_are_absent_not_zero() -> None:
    got = samples(Metrics())
    assert not any(name.startswith(("scale0_gossip_", "scale0_forwarded")) for name, _ in got)


def test_many_drop_reasons_are_folded_into_other() -> None:
    m = Metrics()
    reasons = {f"r{i:03d}": 1 for i in range(MAX_SERIES + 10)}
    m.set_sources(gossip=lambda: {"dropped": reasons})
    got = {k: v for k, v in samples(m).items() if k[0] == "scale0_gossip_dropped_total"}
    assert len(got) == MAX_SERIES
    assert got[("scale0_gossip_dropped_total", (("reason", "other"),))] == 11
    assert sum(got.values()) == len(reasons)


growing = st.lists(st.dictionaries(st.sampled_from([f"k{i}" for i in range(12)] + ["other"]),
                                   st.integers(0, 5), max_size=12), max_size=8)


@given(growing, st.integers(1, 6))
def test_bounded_series_only_grow_and_keep_the_total(steps: list[dict[str, int]],
                                                      limit: int) -> None:
    """Counts that only grow (new keys, larger values) give series that only grow."""
    counts: dict[str, int] = {}
    before: dict[str, int] = {}
    for step in steps:
        for key, add in step.items():
            counts[key] = counts.get(key, 0) + add
        shown = dict(bounded(counts, limit))
        assert len(shown) <= limit
        assert sum(shown.values()) == sum(counts.values())
        for key, n in shown.items():
            assert n >= before.get(key, 0), (key, before, shown)
        before = shown


def test_levels_come_from_sources_at_scrape_time() -> None:
    m = Metrics()
    calls = {"n": 0}
    loads = {"www": ServiceLoad(workers=2, slots=16, in_flight=5, queued=1)}

    def load_source() -> Mapping[str, ServiceLoad]:
        calls["n"] += 1
        return loads

    m.set_sources(
        loads=load_source,
        cache_stats=lambda: StoreStats(entries=7, bytes=4096, evictions=3),
        peers=lambda: {"alive": 3, "suspect": 1},
    )
    assert calls["n"] == 0  # nothing is polled until somebody scrapes
    got = samples(m)
    assert calls["n"] == 1
    www = (("service", "www"),)
    assert got[("scale0_workers", www)] == 2
    assert got[("scale0_slots", www)] == 16
    assert got[("scale0_in_flight", www)] == 5
    assert got[("scale0_queue_depth", www)] == 1
    assert got[("scale0_cache_bytes", ())] == 4096
    assert got[("scale0_cache_entries", ())] == 7
    assert got[("scale0_cache_evictions_total", ())] == 3
    assert got[("scale0_peers", (("state", "alive"),))] == 3
    assert got[("scale0_peers", (("state", "dead"),))] == 0
    loads["www"] = ServiceLoad(workers=1, slots=8)
    assert samples(m)[("scale0_workers", www)] == 1


def test_cache_capacity_and_store_errors_are_exported() -> None:
    m = Metrics()
    stats = StoreStats(entries=1, bytes=10, capacity=350_000, errors={"delete": 2})
    m.set_sources(cache_stats=lambda: stats)
    got = samples(m)
    assert got[("scale0_cache_capacity_bytes", ())] == 350_000
    assert got[("scale0_cache_store_errors_total", (("op", "delete"),))] == 2
    assert got[("scale0_cache_store_errors_total", (("op", "put"),))] == 0  # always shown
    m.set_sources(cache_stats=StoreStats)  # a store that knows no cap: no gauge
    assert ("scale0_cache_capacity_bytes", ()) not in samples(m)


def test_a_failing_source_does_not_break_the_scrape() -> None:
    m = Metrics()

    def boom() -> StoreStats:
        raise RuntimeError("store closed")

    m.set_sources(cache_stats=boom, peers=lambda: {"alive": 1})
    m.observe_request("www", 200, "local", 0.01)
    got = samples(m)
    assert ("scale0_cache_bytes", ()) not in got
    assert got[("scale0_peers", (("state", "alive"),))] == 1


def test_two_nodes_in_one_process_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.observe_request("www", 200, "local", 0.01)
    key = ("scale0_requests_total", (("outcome", "local"), ("service", "www"), ("status", "200")))
    assert samples(a)[key] == 1
    assert key not in samples(b)


def test_openmetrics_when_asked() -> None:
    m = Metrics()
    m.set_sources(forwarded=lambda: {"out": 1})
    body, ctype = m.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


@given(st.text(max_size=20))
def test_outcome_labels_are_bounded(outcome: str) -> None:
    assert outcome_label(outcome) in OUTCOMES


@pytest.mark.parametrize("peer_said", ["local", "hit", "miss", "coalesced", "error", ""])
def test_a_forwarded_answer_counts_as_forwarded_whatever_the_peer_did(peer_said: str) -> None:
    # node/overflow.py labels it "forwarded-<the peer's outcome>" (or just "forwarded")
    outcome = f"forwarded-{peer_said}" if peer_said else "forwarded"
    assert outcome_label(outcome) == "forwarded"

