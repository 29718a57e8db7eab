"""Metrics render what was recorded, read levels only from their sources, and stay per-node."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cache.store import StoreStats
from gossip.load import ServiceLoad
from node.metrics import OUTCOMES, Metrics, outcome_label


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


def test_gossip_and_forwarding_counters() -> None:
    m = Metrics()
    m.gossip_message("out", "state", 3)
    m.gossip_message("in", "purge")
    m.gossip_drop("gap")
    m.forward("out")
    m.forward("in", 2)
    got = samples(m)
    assert got[("scale0_gossip_messages_total", (("direction", "out"), ("kind", "state")))] == 3
    assert got[("scale0_gossip_messages_total", (("direction", "in"), ("kind", "purge")))] == 1
    assert got[("scale0_gossip_dropped_total", (("reason", "gap"),))] == 1
    assert got[("scale0_forwarded_total", (("direction", "in"),))] == 2


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
    m.forward("out")
    body, ctype = m.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


@given(st.text(max_size=20))
def test_outcome_labels_are_bounded(outcome: str) -> None:
    assert outcome_label(outcome) in OUTCOMES

