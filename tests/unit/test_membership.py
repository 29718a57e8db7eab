"""The membership core on its own: tables for the rules, hypothesis for the invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.load import ServiceLoad
from gossip.membership import (
    Action,
    Deliver,
    MemberChanged,
    Membership,
    Publish,
    SelfInfo,
    SendTo,
    Subscribe,
)
from gossip.messages import (
    Ack,
    Addresses,
    Alive,
    Beat,
    Dead,
    Left,
    MemberRecord,
    Message,
    News,
    Ping,
    Probe,
    Push,
    Reliable,
    ResendRequest,
    Snapshot,
    SnapshotRequest,
    Suspect,
    decode,
    encode,
)
from gossip.overlay import Overlay

CFG = GossipConfig.lan()


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


def node(i: str, dc: str = "east", inc: int = 0) -> Membership:
    return Membership(SelfInfo(i, dc, addr(i), inc), CFG, random.Random(i))


def wire(m: Message) -> Message:
    return decode(encode(m))


def sent(actions: list[Action], kind: type) -> list[Message]:
    out: list[Message] = []
    for a in actions:
        if isinstance(a, Publish | SendTo) and isinstance(a.msg, kind):
            out.append(a.msg)
    return out


def news_out(actions: list[Action]) -> list[News]:
    return [n for p in sent(actions, Push) if isinstance(p, Push) for n in p.news]


def state(m: Membership, who: str) -> tuple[str, int] | None:
    v = m.member(who)
    return None if v is None else (v.state, v.incarnation)


def test_join_through_a_seed() -> None:
    seed, joiner = node("seed"), node("new")
    acts = seed.on_message(wire(joiner.snapshot_request()), 1.0)
    assert state(seed, "new") == ("alive", 0)
    assert Alive("new", 0, "east", addr("new")) in news_out(acts), "pushed at once"
    replies = [a for a in acts if isinstance(a, SendTo)]
    assert [(r.member_id, r.address) for r in replies] == [("new", addr("new").peer)]
    snap = wire(replies[0].msg)
    assert isinstance(snap, Snapshot)
    acts = joiner.on_snapshot(snap, 1.1)
    assert state(joiner, "seed") == ("alive", 0)
    assert not news_out(acts), "a snapshot is old news: merged quietly"
    assert Subscribe(addr("seed").gossip) in joiner.tick(1.2)
    assert joiner.publishers_to_follow() == {"seed"}


# (state before, news, state after) for member "x" known alive at incarnation 2
PRECEDENCE = [
    ("alive", Alive("x", 1, "east", addr("x")), ("alive", 2)),
    ("alive", Alive("x", 3, "east", addr("x")), ("alive", 3)),
    ("alive", Suspect("x", 1, "o"), ("alive", 2)),
    ("alive", Suspect("x", 2, "o"), ("suspect", 2)),
    ("alive", Dead("x", 2, "o"), ("dead", 2)),
    ("alive", Dead("x", 1, "o"), ("alive", 2)),
    ("alive", Left("x", 2), ("left", 2)),
    ("suspect", Alive("x", 2, "east", addr("x")), ("suspect", 2)),
    ("suspect", Alive("x", 3, "east", addr("x")), ("alive", 3)),
    ("suspect", Dead("x", 2, "o"), ("dead", 2)),
    ("dead", Alive("x", 2, "east", addr("x")), ("dead", 2)),
    ("dead", Alive("x", 3, "east", addr("x")), ("alive", 3)),
    ("dead", Suspect("x", 5, "o"), ("dead", 2)),
    ("dead", Left("x", 2), ("left", 2)),
    ("left", Dead("x", 2, "o"), ("left", 2)),
    ("left", Alive("x", 3, "east", addr("x")), ("alive", 3)),
]


@pytest.mark.parametrize(("before", "news", "after"), PRECEDENCE)
def test_precedence(before: str, news: News, after: tuple[str, int]) -> None:
    m = node("me")
    m.on_message(Push("o", 1, (Alive("x", 2, "east", addr("x")),)), 0.0)
    setup: dict[str, News] = {"suspect": Suspect("x", 2, "o"), "dead": Dead("x", 2, "o"),
                              "left": Left("x", 2)}
    if before in setup:
        m.on_message(Push("o", 2, (setup[before],)), 0.0)
    assert state(m, "x") == (before, 2)
    acts = m.on_message(Push("p", 1, (news,)), 1.0)
    assert state(m, "x") == after
    changed = after != (before, 2)
    assert (news in news_out(acts)) == changed, "relay exactly what changed our view"
    assert any(isinstance(a, MemberChanged) for a in acts) == changed


@pytest.mark.parametrize("news", [Suspect("me", 0, "o"), Dead("me", 0, "o")])
def test_refutation(news: News) -> None:
    m = node("me")
    acts = m.on_message(Push("o", 1, (news,)), 1.0)
    assert m.incarnation == 1
    assert Alive("me", 1, "east", addr("me")) in news_out(acts)
    assert state(m, "me") == ("alive", 1)
    # an old accusation is ignored
    assert not news_out(m.on_message(Push("o", 2, (Suspect("me", 0, "o"),)), 2.0))


def test_news_about_unknown_members_is_ignored() -> None:
    m = node("me")
    assert m.on_message(Push("o", 1, (Suspect("ghost", 1, "o"), Dead("ghost", 1, "o"))),
                        0.0) == []
    assert m.member("ghost") is None


def test_leave_is_reliable_and_received_as_left() -> None:
    a, b = node("a"), node("b")
    b.on_message(Push("z", 1, (Alive("a", 0, "east", addr("a")),)), 0.0)
    acts = a.leave(5.0)
    [rel] = sent(acts, Reliable)
    assert isinstance(rel, Reliable) and rel.kind == "leave"
    assert Left("a", 0) in news_out(acts)
    assert a.on_message(Push("b", 9, (Suspect("a", 0, "b"),)), 5.1) == [], "gone: deaf"
    repeats = [x for t in (6.0, 7.0, 8.0, 9.0, 10.0) for x in news_out(a.tick(t))]
    assert repeats.count(Left("a", 0)) == CFG.leave_repeats
    b.on_message(wire(rel), 5.2)
    assert state(b, "a") == ("left", 0)


def test_reliable_gap_is_requested_and_filled_in_order() -> None:
    pub, sub = node("p"), node("s")
    sub.on_message(Push("z", 1, (Alive("p", 0, "east", addr("p")),)), 0.0)
    sub.on_message(Beat("p", 1, 0, "east", addr("p"), rseq=0), 0.1)
    envs = [pub.publish_reliable("purge", bytes([i]))[0] for i in range(3)]
    msgs = [a.msg for a in envs if isinstance(a, Publish)]
    assert all(isinstance(m, Reliable) for m in msgs)
    first = sub.on_message(msgs[0], 1.0)
    assert [d.payload for d in first if isinstance(d, Deliver)] == [b"\x00"]
    late = sub.on_message(msgs[2], 1.1)  # msgs[1] lost
    assert not [d for d in late if isinstance(d, Deliver)]
    [req] = sent(late, ResendRequest)
    assert isinstance(req, ResendRequest) and (req.first, req.last) == (2, 3)
    assert not sent(pub.on_message(req, 1.2), Reliable), "no address for an unknown requester"
    pub.on_message(Push("z", 1, (Alive("s", 0, "east", addr("s")),)), 1.2)
    answers = pub.on_message(req, 1.3)
    resent = [m for m in sent(answers, Reliable) if isinstance(m, Reliable)]
    assert [m.rseq for m in resent] == [2, 3]
    got = [d.payload for m in resent for d in sub.on_message(m, 1.4) if isinstance(d, Deliver)]
    assert got == [b"\x01", b"\x02"], "in order, exactly once"


def test_ping_is_acked_and_dead_speakers_are_told() -> None:
    m = node("me")
    m.on_message(Push("o", 1, (Alive("x", 0, "east", addr("x")),)), 0.0)
    [ack] = sent(m.on_message(Ping("x", 1, 42, "me"), 1.0), Ack)
    assert isinstance(ack, Ack)
    assert (ack.sender, ack.nonce, ack.target, ack.incarnation) == ("me", 42, "me", 0)
    m.on_message(Push("o", 2, (Dead("x", 0, "o"),)), 2.0)
    acts = m.on_message(Beat("x", 5, 0, "east", addr("x")), 3.0)
    assert Dead("x", 0, "me") in news_out(acts), "a zombie hears it is dead, so it refutes"
    assert state(m, "x") == ("dead", 0)


@pytest.mark.parametrize("first_word", [
    Push("o", 1, (Alive("x", 0, "east", addr("x")),)),
    Beat("x", 1, 0, "east", addr("x")),
    Snapshot("o", 1, (MemberRecord("x", 0, "east", addr("x"), "alive"),)),
])
def test_a_new_member_is_followed_at_the_next_tick(first_word: Message) -> None:
    """The core marks its follow graph stale on a newcomer (the shell needs no nudge)."""
    m = node("me")
    assert not [a for a in m.tick(0.0) if isinstance(a, Subscribe)]
    m.on_message(first_word, 0.1)
    assert Subscribe(addr("x").gossip) in m.tick(0.2)
    assert "x" in m.publishers_to_follow() and "x" in m.detector.watched()


def test_only_first_hand_word_is_vouched_for() -> None:
    """An Ack about x ends our doubt but never lets us vouch for x to the next prober.

    Otherwise observers whose windows expire at different times vouch for a crashed
    member to one another in turn, for ever (issue 4: a crash never declared dead).
    """
    m = node("me")
    for who in "xbc":
        m.on_message(Push("o", 1, (Alive(who, 0, "east", addr(who)),)), 0.0)
    assert Subscribe(addr("x").gossip) in m.tick(0.0)
    m.on_message(Beat("x", 1, 0, "east", addr("x")), 1.0)
    [ack] = sent(m.on_message(Probe("b", 1, 7, "x"), 1.1), Ack)
    assert isinstance(ack, Ack) and (ack.target, ack.nonce) == ("x", 7), "heard it: vouch"
    t, pings = 1.0, list[Ping]()
    while not pings:
        t += 0.05
        pings = [p for p in sent(m.tick(t), Ping) if isinstance(p, Ping) and p.target == "x"]
    m.on_message(Ack("b", 2, pings[0].nonce, "x", 0), t + 0.01)  # b vouches: doubt over
    assert not [n for n in news_out(m.tick(t + CFG.probe_timeout + 0.05)) if n.id == "x"]
    assert sent(m.on_message(Probe("c", 1, 9, "x"), t + 0.02), Ack) == [], (
        "b's word is not ours to pass on")
    m.on_message(Beat("x", 2, 0, "east", addr("x")), t + 0.5)
    assert sent(m.on_message(Probe("c", 2, 10, "x"), t + 0.6), Ack), "heard again: vouch"


def test_own_failed_probe_confirms_a_suspicion_heard_first() -> None:
    """Issue 4: on real sockets observers tick at different phases, so another's
    suspicion arrives before our own probe times out. Our failed probe is still an
    independent confirmation: it is published, and the timer shortens."""
    m = node("me")
    for who in "xbcd":
        m.on_message(Push("o", 1, (Alive(who, 0, "east", addr(who)),)), 0.0)
    m.tick(0.0)
    m.on_message(Beat("x", 1, 0, "east", addr("x")), 1.0)
    t, pings = 1.0, list[Ping]()
    while not pings:  # x falls silent: our window expires, we probe
        t += 0.05
        pings = [p for p in sent(m.tick(t), Ping) if isinstance(p, Ping) and p.target == "x"]
    m.on_message(Push("b", 2, (Suspect("x", 0, "b"),)), t + 0.01)  # b was quicker
    assert state(m, "x") == ("suspect", 0)
    before = m.detector.timeout("x")
    acts = m.tick(t + CFG.probe_timeout + 0.01)  # our own probe got no answer either
    assert Suspect("x", 0, "me") in news_out(acts)
    assert m.detector.timeout("x") < before


def test_beats_carry_load_and_digest() -> None:
    m = node("me")
    m.set_load({"www": ServiceLoad(2, 16, 3, 0, 5.0, 10.0)})
    beats: list[Message] = []
    for i in range(30):
        beats += sent(m.tick(i * 0.1), Beat)
    assert len(beats) in (2, 3)
    b = beats[0]
    assert isinstance(b, Beat) and b.load == (("www", ServiceLoad(2, 16, 3, 0, 5.0, 10.0)),)
    assert b.digest == m.digest() and b.members == 1


def test_digest_mismatch_fetches_a_snapshot_once_it_persists() -> None:
    m = node("me")
    m.on_message(Push("o", 1, (Alive("x", 0, "east", addr("x")),)), 0.0)
    t = 0.0
    reqs: list[Message] = []
    while t < 20:
        reqs += sent(m.on_message(Beat("x", int(t) + 1, 0, "east", addr("x"), digest=1), t),
                     SnapshotRequest)
        t += 1.0
    assert 2 <= len(reqs) <= 1 + 20 / CFG.snapshot_cooldown
    m2 = node("me2")
    m2.on_message(Push("o", 1, (Alive("x", 0, "east", addr("x")),)), 0.0)
    for t in range(20):
        assert not sent(m2.on_message(Beat("x", t + 1, 0, "east", addr("x"),
                                           digest=m2.digest()), float(t)), SnapshotRequest)


ops = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3),
                         st.sampled_from(["alive", "suspect", "dead", "left"])), max_size=40)


def _news(who: str, inc: int, kind: str) -> News:
    if kind == "alive":
        return Alive(who, inc, "east", addr(who))
    if kind == "suspect":
        return Suspect(who, inc, "o")
    return Dead(who, inc, "o") if kind == "dead" else Left(who, inc)


@given(ops)
def test_invariants_under_any_news(seq: list[tuple[str, int, str]]) -> None:
    m = node("me")
    seen: dict[str, int] = {}
    for i, (who, inc, kind) in enumerate(seq):
        m.on_message(Push("o", i + 1, (_news(who, inc, kind),)), float(i))
        v = m.member(who)
        if v is not None:
            assert v.incarnation >= seen.get(who, 0), "incarnations never go back"
            seen[who] = v.incarnation
    fresh = node("me")
    for v in m.members():
        fresh.on_message(Snapshot("o", 1, (MemberRecord(v.id, v.incarnation, v.dc,
                                                        v.addresses, v.state),)), 0.0)
    assert fresh.digest() == m.digest(), "digest depends on the view only"


@given(st.permutations([Alive(c, i, "east", addr(c)) for c in "abcdef" for i in (0, 1)]))
def test_digest_is_order_independent(news: list[Alive]) -> None:
    a, b = node("me"), node("me")
    for i, n in enumerate(news):
        a.on_message(Push("o", i + 1, (n,)), 0.0)
    for i, n in enumerate(sorted(news, key=lambda n: (n.id, n.incarnation))):
        b.on_message(Push("o", i + 1, (n,)), 0.0)
    assert a.digest() == b.digest()


@given(st.integers(2, 300), st.integers(1, 4), st.integers(0, 40))
def test_overlay_every_member_has_observers_and_news_reaches_all(n: int, dcs: int, cap: int
                                                                  ) -> None:
    members = [(f"m{i}", f"dc{i % dcs}") for i in range(n)]
    o = Overlay(members, CFG.successors, cap)
    follows = {m: o.followees(m) for m, _ in members}
    for m, _ in members:
        observers = o.observers(m)
        assert observers <= {f for f, fs in follows.items() if m in fs}, "observers follow m"
        assert len(observers) >= min(n - 1, CFG.successors)
        assert m not in follows[m]
    bound = 2 * CFG.successors + n.bit_length() + cap + dcs
    assert max(len(f) for f in follows.values()) <= bound
    reached, frontier = {members[0][0]}, [members[0][0]]
    while frontier:  # news flows publisher -> follower
        p = frontier.pop()
        for f, fs in follows.items():
            if p in fs and f not in reached:
                reached.add(f)
                frontier.append(f)
    assert len(reached) == n


member_ids = st.sampled_from(["me", "a", "b", "c"])
any_news = st.one_of(
    st.builds(Alive, member_ids, st.integers(0, 3), st.sampled_from(["east", "west"]),
              member_ids.map(addr)),
    st.builds(Suspect, member_ids, st.integers(0, 3), member_ids),
    st.builds(Dead, member_ids, st.integers(0, 3), member_ids),
    st.builds(Left, member_ids, st.integers(0, 3)),
)
any_message = st.one_of(
    st.builds(Beat, member_ids, st.integers(0, 9), st.integers(0, 3), st.just("east"),
              member_ids.map(addr), st.just(()), st.integers(0, 3), st.integers(0, 5),
              st.integers(0, 4), st.lists(any_news, max_size=3).map(tuple)),
    st.builds(Push, member_ids, st.integers(0, 9), st.lists(any_news, max_size=3).map(tuple)),
    st.builds(SnapshotRequest, member_ids, st.integers(0, 9),
              st.builds(Alive, member_ids, st.integers(0, 3), st.just("east"),
                        member_ids.map(addr))),
    st.builds(Reliable, member_ids, st.integers(0, 9), st.integers(0, 6),
              st.sampled_from(["leave", "purge"]), st.binary(max_size=3)),
    st.builds(ResendRequest, member_ids, st.integers(0, 9), st.integers(0, 6),
              st.integers(0, 6)),
    st.builds(Ping, member_ids, st.integers(0, 9), st.integers(0, 3), member_ids),
    st.builds(Ack, member_ids, st.integers(0, 9), st.integers(0, 3), member_ids,
              st.integers(0, 3)),
)


@given(st.lists(st.tuples(any_message, st.floats(0, 2)), max_size=60))
def test_any_message_sequence_keeps_the_core_sound(steps: list[tuple[Message, float]]) -> None:
    """Valid-but-arbitrary traffic: no exception, and our own record stays alive."""
    m = node("me")
    now = 0.0
    for msg, dt in steps:
        now += dt
        for a in m.on_message(msg, now) + m.tick(now):
            if isinstance(a, Publish | SendTo):
                assert decode(encode(a.msg)) == a.msg, "every action is encodable"
        assert state(m, "me") == ("alive", m.incarnation)
    fresh = Membership(SelfInfo("me", "east", addr("me"), m.incarnation), CFG, random.Random(0))
    for v in m.members():
        fresh.on_message(Snapshot("o", 1, (MemberRecord(v.id, v.incarnation, v.dc, v.addresses,
                                                        v.state),)), 0.0)
    assert fresh.digest() == m.digest(), "the digest is a function of the view"
