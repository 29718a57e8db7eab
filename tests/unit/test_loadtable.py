"""The load table core: ordering, ages, report replacement and anti-herding counters."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.load import ServiceLoad
from mesh.loadtable import STATES, LoadTable, LoadTableError

ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)
dcs = st.sampled_from(["east", "west", "north", "a", "z"])
times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
loads = st.builds(
    ServiceLoad,
    workers=st.integers(0, 50),
    slots=st.integers(0, 500),
    in_flight=st.integers(0, 500),
    queued=st.integers(0, 500),
    p50_ms=st.floats(0, 1e5, allow_nan=False),
    rps=st.floats(0, 1e6, allow_nan=False),
    fwd_in_rps=st.floats(0, 1e6, allow_nan=False),
    fwd_out_rps=st.floats(0, 1e6, allow_nan=False),
)
services = st.dictionaries(st.sampled_from(["www", "api", "default"]), loads, max_size=3)
Report = tuple[str, str, str, int, dict[str, ServiceLoad], float]
reports = st.tuples(ids, dcs, st.sampled_from(STATES), st.integers(0, 5), services, times)


def _table(rows: list[Report]) -> LoadTable:
    t = LoadTable("self")
    for node_id, dc, state, inc, svc, at in rows:
        t.update(node_id, dc, state, inc, {"peer": f"tcp://{node_id}:7947"}, svc, at)
    return t


@given(st.lists(reports, max_size=30), times)
def test_rows_sorted_by_dc_then_id_with_nonnegative_age(rows: list[Report], now: float) -> None:
    t = _table(rows)
    out = t.rows(now)
    assert [(r.dc, r.id) for r in out] == sorted((r.dc, r.id) for r in out)
    assert len({r.id for r in out}) == len(out) == len({r[0] for r in rows})
    assert all(r.age_s >= 0 for r in out)


@given(ids, dcs, times, st.floats(0, 1e4, allow_nan=False))
def test_age_is_time_since_report(node_id: str, dc: str, at: float, later: float) -> None:
    t = LoadTable("self")
    t.update(node_id, dc, "alive", 1, {}, {}, at)
    (row,) = t.rows(at + later)
    assert row.age_s == pytest.approx(later, abs=1e-6 * max(1.0, at))


@given(st.lists(reports, max_size=20), times)
def test_json_has_documented_shape_and_round_trips(rows: list[Report], now: float) -> None:
    doc = _table(rows).to_json(now)
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {"self", "nodes"} and doc["self"] == "self"
    for node in doc["nodes"]:
        assert set(node) == {"id", "dc", "state", "incarnation", "age_s", "addresses", "services"}
        assert node["state"] in STATES
        for svc in node["services"].values():
            assert set(svc) == {
                "workers",
                "slots",
                "in_flight",
                "queued",
                "p50_ms",
                "rps",
                "fwd_in_rps",
                "fwd_out_rps",
            }


@given(loads, st.lists(st.integers(0, 20), max_size=20), st.sampled_from(STATES))
def test_effective_free_never_negative(load: ServiceLoad, sends: list[int], state: str) -> None:
    t = LoadTable("self")
    t.update("p", "east", state, 1, {}, {"www": load}, 0.0)
    total = 0
    for n in sends:
        t.note_sent("p", "www", n)
        total += n
        free = t.effective_free("p", "www")
        assert free >= 0
        if state == "alive":
            assert free == max(0, load.free - total)
        else:
            assert free == 0


@given(loads, st.integers(1, 50), st.integers(0, 3), st.integers(0, 3))
def test_counters_reset_on_new_report_only(
    load: ServiceLoad, sent: int, inc_step: int, seq_step: int
) -> None:
    t = LoadTable("self")
    t.update("p", "east", "alive", 5, {}, {"www": load}, 10.0, seq=7)
    t.note_sent("p", "www", sent)
    # A replay of the same report, or an older one, changes nothing.
    assert not t.update("p", "east", "alive", 5, {}, {"www": load}, 10.0, seq=7)
    assert not t.update("p", "east", "alive", 4, {}, {"www": load}, 99.0, seq=99)
    assert t.sent_since_report("p", "www") == sent
    accepted = t.update(
        "p", "east", "alive", 5 + inc_step, {}, {"www": load}, 11.0, seq=7 + seq_step
    )
    assert accepted
    assert t.sent_since_report("p", "www") == 0
    assert t.effective_free("p", "www") == load.free


def test_older_report_keeps_newer_data() -> None:
    t = LoadTable("self")
    assert t.update("n1", "east", "alive", 2, {}, {"www": ServiceLoad(slots=4)}, 5.0)
    assert not t.update("n1", "east", "alive", 1, {}, {"www": ServiceLoad(slots=9)}, 6.0)
    (row,) = t.rows(6.0)
    assert row.incarnation == 2 and row.services["www"].slots == 4


def test_mark_remove_and_version() -> None:
    t = LoadTable("me")
    v0 = t.version
    t.update("me", "east", "alive", 1, {}, {}, 0.0)
    t.update("peer", "west", "alive", 1, {}, {"www": ServiceLoad(slots=2)}, 0.0)
    assert t.version == v0 + 2
    assert t.mark("peer", "suspect") and t.state("peer") == "suspect"
    assert t.effective_free("peer", "www") == 0  # only alive peers take routed work
    v1 = t.version
    assert t.mark("peer", "suspect") and t.version == v1  # no change, no bump
    assert not t.mark("ghost", "dead")
    assert t.remove("peer") and not t.remove("peer")
    assert [r.id for r in t.rows(1.0)] == ["me"] and t.rows(1.0)[0].is_self


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.update("n", "e", "zombie", 1, {}, {}, 0.0), "unknown node state"),
        (lambda t: t.update("", "e", "alive", 1, {}, {}, 0.0), "node id"),
        (lambda t: t.update("n", "e", "alive", -1, {}, {}, 0.0), "incarnation"),
        (lambda t: t.mark("n", "gone"), "unknown node state"),
        (lambda t: t.note_sent("n", "www", -1), "negative"),
    ],
)
def test_bad_input_is_a_clear_error(call: Callable[[LoadTable], object], message: str) -> None:
    with pytest.raises(LoadTableError, match=message):
        call(LoadTable("me"))


def test_unknown_peer_and_service_have_no_free_slots() -> None:
    t = LoadTable("me")
    t.note_sent("nobody", "www")  # ignored, not an error: the peer may have just left
    assert t.effective_free("nobody", "www") == 0
    t.update("p", "east", "alive", 1, {}, {"www": ServiceLoad(slots=3)}, 0.0)
    assert t.effective_free("p", "api") == 0
    assert t.effective_free("p", "www") == 3


def test_sync_folds_membership_rows_in() -> None:
    from gossip.membership import MemberView
    from gossip.messages import Addresses

    def view(
        node_id: str, state: str, inc: int, heard: float | None, load: ServiceLoad
    ) -> MemberView:
        return MemberView(
            node_id,
            "west",
            state,
            inc,
            Addresses(http="h:80", gossip="tcp://g:7946", peer="tcp://p:7947"),
            heard,
            (("www", load),),
        )

    t = LoadTable("me")
    t.sync(
        [
            view("me", "alive", 1, None, ServiceLoad(slots=1)),
            view("w1", "alive", 2, 10.0, ServiceLoad(slots=8)),
            view("w2", "alive", 1, None, ServiceLoad()),
        ],
        now=12.0,
    )
    rows = {r.id: r for r in t.rows(12.0)}
    assert rows["w1"].age_s == 2.0 and rows["me"].age_s == 0.0
    assert rows["w1"].addresses == {
        "http": "h:80",
        "gossip": "tcp://g:7946",
        "peer": "tcp://p:7947",
    }  # empty "workers" left out
    t.note_sent("w1", "www", 3)
    # Same report again with a new state (the detector spoke): state moves, counters stay.
    t.sync(
        [
            view("me", "alive", 1, None, ServiceLoad(slots=1)),
            view("w1", "suspect", 2, 10.0, ServiceLoad(slots=8)),
        ],
        now=15.0,
    )
    assert t.state("w1") == "suspect" and "w2" not in t
    assert t.sent_since_report("w1", "www") == 3
    # A fresh report resets them.
    t.sync([view("w1", "alive", 2, 14.5, ServiceLoad(slots=8))], now=15.0)
    assert t.sent_since_report("w1", "www") == 0 and t.effective_free("w1", "www") == 8
    assert [r.id for r in t.rows(15.0)] == ["w1"]


@given(st.lists(st.tuples(st.booleans(), reports), max_size=25))
def test_services_always_equals_a_fresh_scan_of_the_rows(ops: list[tuple[bool, Report]]) -> None:
    """The memoised service set follows every update and removal (asked after each)."""
    t = LoadTable("self")
    for remove, (node_id, dc, state, inc, svc, at) in ops:
        if remove:
            t.remove(node_id)
        else:
            t.update(node_id, dc, state, inc, {}, svc, at)
        assert t.services() == {s for row in t.rows(0.0) for s in row.services}


@given(st.lists(st.tuples(st.sampled_from(["update", "mark", "remove"]), reports), max_size=25))
def test_alive_peers_always_equals_a_fresh_scan_of_the_rows(
        ops: list[tuple[str, Report]]) -> None:
    """The memoised peer list (the overflow path's) follows every report, state change and
    removal, asked after each: the alive rows but our own, in `rows`' order."""
    t = LoadTable("self")
    for op, (drawn, dc, state, inc, svc, at) in ops:
        node_id = "self" if drawn == "0" else drawn  # our own row shows up too
        if op == "remove":
            t.remove(node_id)
        elif op == "mark":
            t.mark(node_id, state)
        else:
            t.update(node_id, dc, state, inc, {"peer": f"tcp://{node_id}:7947"}, svc, at)
        assert list(t.alive_peers()) == [
            (r.id, r.dc, r.addresses, r.services) for r in t.rows(0.0)
            if not r.is_self and r.state == "alive"]
