"""The overflow policy: local first, own dc first, p2c, hop limit, headroom, caps."""

from __future__ import annotations

import random

from hypothesis import example, given
from hypothesis import strategies as st

from mesh.routing import Candidate, OverflowPolicy, Route, decide, order_peers

candidates_st = st.lists(
    st.builds(
        Candidate,
        node_id=st.text("abcdefgh", min_size=1, max_size=4),
        dc=st.sampled_from(["east", "west", "south"]),
        rtt_ms=st.floats(0, 500),
        free=st.integers(-5, 20),
    ),
    max_size=12,
    unique_by=lambda c: c.node_id,
)


def _decide(**kw: object) -> object:
    args: dict[str, object] = dict(
        local_free=0,
        local_slots=4,
        hops=0,
        self_dc="east",
        candidates=[],
        policy=OverflowPolicy(),
        share_away=0.0,
        rng=random.Random(1),
    )
    args.update(kw)
    return decide(**args)  # type: ignore[arg-type]


def test_local_slot_wins_over_any_peer() -> None:
    d = _decide(local_free=1, candidates=[Candidate("w1", "west", 1, 50)])
    assert d.route is Route.LOCAL


policies_st = st.builds(
    OverflowPolicy,
    enabled=st.booleans(),
    allowed_dcs=st.none() | st.frozensets(st.sampled_from(["east", "west", "south"])),
    headroom=st.floats(0, 1),
    max_share_away=st.floats(0, 1),
    max_tries=st.integers(0, 5),
)


@given(st.integers(1, 64), st.integers(0, 64), candidates_st, policies_st, st.floats(0, 1))
def test_a_free_local_slot_means_local_whatever_else(
        free: int, slots: int, cands: list[Candidate], policy: OverflowPolicy,
        share: float) -> None:
    """node/overflow.py answers a request with a free local slot without asking `decide`:
    this is the rule it relies on."""
    d = _decide(local_free=free, local_slots=max(slots, free), candidates=cands,
                policy=policy, share_away=share)
    assert d.route is Route.LOCAL


def test_full_node_overflows_to_own_dc_before_other_dc() -> None:
    cands = [Candidate("w1", "west", 1, 50), Candidate("e2", "east", 30, 1)]
    d = _decide(candidates=cands)
    assert d.route is Route.PEERS and d.peers[0] == "e2"


def test_other_dcs_ordered_by_rtt() -> None:
    cands = [Candidate("s1", "south", 90, 9), Candidate("w1", "west", 40, 1)]
    assert _decide(candidates=cands).peers == ("w1", "s1")


def test_forwarded_request_is_never_forwarded_again() -> None:
    cands = [Candidate("w1", "west", 1, 50)]
    assert _decide(hops=1, local_free=0, candidates=cands).route is Route.BUSY
    assert _decide(hops=1, local_free=4, local_slots=4).route is Route.LOCAL


def test_headroom_keeps_slots_for_local_clients() -> None:
    policy = OverflowPolicy(headroom=0.5)
    assert _decide(hops=1, local_free=2, local_slots=4, policy=policy).route is Route.BUSY
    assert _decide(hops=1, local_free=3, local_slots=4, policy=policy).route is Route.LOCAL


def test_no_room_anywhere_queues() -> None:
    assert _decide(candidates=[Candidate("w1", "west", 1, 0)]).route is Route.QUEUE


def test_disabled_overflow_and_share_cap_queue() -> None:
    cands = [Candidate("w1", "west", 1, 5)]
    assert _decide(candidates=cands, policy=OverflowPolicy(enabled=False)).route is Route.QUEUE
    capped = OverflowPolicy(max_share_away=0.5)
    assert _decide(candidates=cands, policy=capped, share_away=0.6).route is Route.QUEUE
    assert _decide(candidates=cands, policy=capped, share_away=0.4).route is Route.PEERS


@given(candidates_st, st.floats(0, 1), st.integers(0, 8))
@example([Candidate("w1", "west", 1.0, 5)], 1.0, 0)  # every recent request went away
@example([Candidate("w1", "west", 1.0, 5)], 1.0, 4)
def test_with_the_default_policy_a_full_node_never_queues_while_a_peer_has_room(
        cands: list[Candidate], share: float, slots: int) -> None:
    """Regression: a node whose every recent request went to peers (share 1.0) queued the
    next one locally — with no local worker, until its deadline."""
    d = _decide(local_free=0, local_slots=slots, candidates=cands, share_away=share)
    room = any(c.free > 0 for c in cands)
    assert d.route is (Route.PEERS if room else Route.QUEUE)


@given(candidates_st.filter(lambda cs: any(c.free > 0 for c in cs)), st.floats(0, 1),
       st.floats(0, 0.99))
def test_a_share_cap_never_holds_back_a_node_without_local_slots(
        cands: list[Candidate], share: float, cap: float) -> None:
    policy = OverflowPolicy(max_share_away=cap)
    d = _decide(local_free=0, local_slots=0, candidates=cands, share_away=share, policy=policy)
    assert d.route is Route.PEERS


def test_allowed_dcs_limit_where_overflow_goes() -> None:
    cands = [Candidate("w1", "west", 1, 5), Candidate("s1", "south", 2, 5)]
    policy = OverflowPolicy(allowed_dcs=frozenset({"south"}))
    assert _decide(candidates=cands, policy=policy).peers == ("s1",)


@given(candidates_st, st.integers(0, 2**32))
def test_order_contains_exactly_the_peers_with_room(cands: list[Candidate], seed: int) -> None:
    order = order_peers("east", cands, OverflowPolicy(), random.Random(seed))
    assert sorted(order) == sorted(c.node_id for c in cands if c.free > 0)
    # own datacenter strictly before every other datacenter
    dcs = [next(c.dc for c in cands if c.node_id == n) for n in order]
    seen_other = False
    for dc in dcs:
        if dc != "east":
            seen_other = True
        assert not (seen_other and dc == "east")


@given(candidates_st, st.integers(0, 2**32), st.integers(0, 5))
def test_decision_is_deterministic_and_bounded(
    cands: list[Candidate], seed: int, tries: int
) -> None:
    policy = OverflowPolicy(max_tries=tries)
    a = _decide(candidates=cands, policy=policy, rng=random.Random(seed))
    b = _decide(candidates=cands, policy=policy, rng=random.Random(seed))
    assert a == b
    assert len(a.peers) <= tries  # type: ignore[attr-defined]


def test_p2c_prefers_the_freer_peer_on_average() -> None:
    cands = [Candidate("a", "east", 1, 1), Candidate("b", "east", 1, 30)]
    rng = random.Random(7)
    firsts = [order_peers("east", cands, OverflowPolicy(), rng)[0] for _ in range(200)]
    assert firsts.count("b") == 200  # with two candidates p2c always compares both
