"""What a listed but hostile member's word is worth to the membership core.

Each case is one fix tests/e2e/test_fuzz_gossip_sub.py led to: incarnations a liar
pushes to the top of the range, invented members, absurd load figures, envelopes
and summaries in the name of members we do not know or of a datacenter's reporter.
"""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.load import MAX_COUNT, MAX_FIGURE, ServiceLoad, clamp, clamp_report
from gossip.membership import Membership, SelfInfo
from gossip.messages import (
    MAX_INT,
    Addresses,
    Alive,
    Beat,
    DcSummary,
    Dead,
    Left,
    Push,
    Reliable,
    Suspect,
    decode,
    encode,
)

CFG = GossipConfig.lan()
INC = 1_700_000_000_000  # a wall-clock incarnation, as the agent picks


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


def node(i: str, config: GossipConfig = CFG) -> Membership:
    return Membership(SelfInfo(i, "east", addr(i), INC), config, random.Random(i))


def knows(m: Membership, *ids: str, dc: str = "east") -> None:
    for i in ids:
        m.on_message(Push(i, 1, (Alive(i, INC, dc, addr(i)),)), 0.0)


counts = st.integers(-(2**70), 2**70)
figures = st.floats(allow_nan=True, allow_infinity=True)
loads = st.builds(ServiceLoad, counts, counts, counts, counts, figures, figures, figures, figures)


@given(loads)
def test_clamp_bounds_every_figure_and_keeps_sane_loads(load: ServiceLoad) -> None:
    safe = clamp(load)
    for v in (safe.workers, safe.slots, safe.in_flight, safe.queued):
        assert 0 <= v <= MAX_COUNT
    for f in (safe.p50_ms, safe.rps, safe.fwd_in_rps, safe.fwd_out_rps):
        assert not math.isnan(f) and 0.0 <= f <= MAX_FIGURE
    assert clamp(safe) == safe
    report, clamped = clamp_report([("www", load)])
    assert report == (("www", safe),) and clamped == (safe != load)


@given(st.integers(0, MAX_INT), st.sampled_from(["dead", "suspect", "left", "alive"]))
def test_no_lie_about_us_leaves_us_unencodable_or_above_the_jump(lie: int, kind: str) -> None:
    a = node("a")
    news = {"dead": Dead("a", lie, "m"), "suspect": Suspect("a", lie, "m"),
            "left": Left("a", lie), "alive": Alive("a", lie, "west", addr("m"))}[kind]
    a.on_message(Push("m", 1, (news,)), 1.0)
    assert INC <= a.incarnation <= min(MAX_INT, INC + CFG.max_incarnation_jump + 1)
    if lie > INC + CFG.max_incarnation_jump:
        assert a.incarnation == INC and a.refused["implausible"] == 1
    beat = a.tick(5.0)
    for action in beat:  # whatever it publishes still encodes
        msg = getattr(action, "msg", None)
        if msg is not None:
            assert decode(encode(msg)) == msg


def test_refutation_saturates_at_the_top_of_the_range() -> None:
    top = GossipConfig(max_incarnation_jump=MAX_INT)  # no jump rule: saturation alone
    a = node("a", top)
    a.on_message(Push("m", 1, (Dead("a", MAX_INT, "m"),)), 1.0)
    assert a.incarnation == MAX_INT
    assert all(decode(encode(x.msg)) == x.msg for x in a.tick(5.0) if hasattr(x, "msg"))


def test_a_lie_past_the_jump_about_another_is_not_believed() -> None:
    c = node("c")
    knows(c, "b")
    far = INC + CFG.max_incarnation_jump + 1
    for lie in (Dead("b", far, "m"), Left("b", far), Suspect("b", far, "m"),
                Alive("b", far, "east", addr("m"))):
        c.on_message(Push("m", 2, (lie,)), 1.0)
    b = c.member("b")
    assert b is not None and (b.state, b.incarnation, b.addresses) == ("alive", INC, addr("b"))
    assert c.refused["implausible"] == 4
    # A restart within the jump (its downtime in ms) still wins.
    c.on_message(Push("b", 3, (Alive("b", INC + 86_400_000, "east", addr("b")),)), 2.0)
    assert c.member("b").incarnation == INC + 86_400_000  # type: ignore[union-attr]


def test_invented_members_stop_at_the_cap() -> None:
    c = node("c", GossipConfig(max_members=10))
    knows(c, "m")
    ghosts = tuple(Alive(f"ghost-{i}", INC, "east", addr(f"g{i}")) for i in range(64))
    c.on_message(Push("m", 2, ghosts), 1.0)
    assert len(c.members()) == 10
    assert c.refused["member_cap"] == 64 - 8
    c.on_message(Beat("stranger", 1, INC, "east", addr("s")), 2.0)  # a beat is news too
    assert c.member("stranger") is None


def test_a_beats_load_is_clamped_and_counted() -> None:
    c = node("c")
    knows(c, "b")
    absurd = ServiceLoad(10**18, 10**18, 0, 0, 3e38, 1.0, 0.0, 0.0)
    c.on_message(Beat("b", 2, INC, "east", addr("b"), (("www", absurd),)), 1.0)
    view = c.member("b")
    assert view is not None
    assert dict(view.load)["www"] == ServiceLoad(MAX_COUNT, MAX_COUNT, 0, 0, MAX_FIGURE, 1.0)
    assert c.refused["load_clamped"] == 1


def test_envelopes_from_strangers_leave_no_state() -> None:
    c = node("c")
    knows(c, "b")
    for i in range(100):
        c.on_message(Reliable(f"nobody-{i}", 1, 1, "leave"), 1.0)
    assert c.refused["unknown_sender"] == 100
    assert [v.id for v in c.members()] == ["b", "c"]
    assert c.member("b").state == "alive"  # type: ignore[union-attr]


def test_a_summary_counts_only_from_its_datacenters_reporter() -> None:
    c = node("c")
    knows(c, "w1", "w2", dc="west")
    c.tick(0.0)  # the follow graph: who reports for west
    reporter, other = sorted(["w1", "w2"], key=lambda i: c._overlay.reporter("west") != i)  # type: ignore[union-attr]
    big = (("www", ServiceLoad(10**9, 10**9)),)
    c.on_message(DcSummary(other, 5, "west", 2, big), 1.0)
    for i in range(50):  # datacenters nobody is in
        c.on_message(DcSummary(reporter, 6 + i, f"dc-{i}", 2, ()), 1.0)
    assert c.dc_summaries() == {} and c.refused["not_reporter"] == 51
    c.on_message(DcSummary(reporter, 99, "west", 10**9, big), 1.0)
    summary = c.dc_summaries()["west"]
    assert summary.alive == len(c.members()) and dict(summary.load)["www"].slots == MAX_COUNT
