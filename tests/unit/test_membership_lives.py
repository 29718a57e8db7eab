"""Which process a member is (`MemberView.life`): the membership tells a restart apart
from a refutation, so the node can give up at once on what it forwarded to the earlier
process (QA: a rolling restart left a forward waiting for a peer's reply until its
30 s deadline; the peer had restarted under the same id and would never answer).

A life comes from the member's own beats (`rseq = life << 22 | n`, gossip/reliable.py
"Lives"); roll-overs within one process (after 2**22 envelopes) are not a restart, and a
late beat of an older process changes nothing. Pure: the core and a clock."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gossip.actions import Action, MemberChanged
from gossip.config import GossipConfig
from gossip.membership import Membership, SelfInfo
from gossip.messages import Addresses, Alive, Beat, Push, Suspect, decode, encode
from gossip.reliable import MAX_LIFE, ROLLOVERS, SEQ_BITS, Outbox, later_process, life_of

CFG = GossipConfig.lan()
LIFE1 = 1_700_000_000_000  # incarnations start at wall-clock milliseconds (gossip/agent.py)
LIFE2 = LIFE1 + 90_000  # restarted a minute and a half later


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


def node(i: str, inc: int) -> Membership:
    return Membership(SelfInfo(i, "east", addr(i), inc), CFG, random.Random(i))


def beat(sender: str, seq: int, inc: int, life: int, n: int = 0) -> Beat:
    b = Beat(sender, seq, inc, "east", addr(sender), rseq=life << SEQ_BITS | n)
    out = decode(encode(b))  # what travels is what the core reads
    assert isinstance(out, Beat)
    return out


def changes(actions: list[Action], who: str) -> list[MemberChanged]:
    return [a for a in actions if isinstance(a, MemberChanged) and a.view.id == who]


def life(m: Membership, who: str) -> int:
    view = m.member(who)
    assert view is not None
    return view.life


def test_a_restart_changes_the_life_a_refutation_does_not() -> None:
    a = node("a", LIFE1 - 60_000)
    first = changes(a.on_message(beat("b", 1, LIFE1, LIFE1), 0.0), "b")
    assert [c.view.life for c in first] == [LIFE1]  # one change: b joined, as process LIFE1
    assert changes(a.on_message(beat("b", 2, LIFE1, LIFE1, 3), 1.0), "b") == []

    # Suspected, b refutes: a higher incarnation, the same process.
    a.on_message(Push("c", 1, (Suspect("b", LIFE1, "c"),)), 1.5)
    refuted = changes(a.on_message(beat("b", 3, LIFE1 + 1, LIFE1, 3), 2.0), "b")
    assert [(c.view.state, c.view.incarnation, c.view.life) for c in refuted] == [
        ("alive", LIFE1 + 1, LIFE1)]

    # Killed -9 and back on the same ports before anyone noticed: a new process. One
    # change says both the new incarnation and the new life.
    restarted = changes(a.on_message(beat("b", 1, LIFE2, LIFE2), 3.0), "b")
    assert [(c.view.incarnation, c.view.life) for c in restarted] == [(LIFE2, LIFE2)]
    assert life(a, "b") == LIFE2


def test_a_known_incarnation_learns_its_life_from_the_first_beat() -> None:
    """News (a seed's push, a snapshot) names a member before its own beats do: the first
    beat at that incarnation tells its process, with a change of its own."""
    a = node("a", LIFE1 - 60_000)
    a.on_message(Push("c", 1, (Alive("b", LIFE1, "east", addr("b")),)), 0.0)
    assert life(a, "b") == 0
    got = changes(a.on_message(beat("b", 1, LIFE1, LIFE1), 0.5), "b")
    assert [(c.view.incarnation, c.view.life) for c in got] == [(LIFE1, LIFE1)]


def test_a_late_beat_of_the_earlier_process_changes_nothing() -> None:
    a = node("a", LIFE1 - 60_000)
    a.on_message(beat("b", 1, LIFE1, LIFE1), 0.0)
    a.on_message(beat("b", 1, LIFE2, LIFE2), 1.0)
    assert changes(a.on_message(beat("b", 9, LIFE1, LIFE1), 1.1), "b") == []
    assert life(a, "b") == LIFE2


def test_roll_overs_are_the_same_process() -> None:
    a = node("a", LIFE1 - 60_000)
    a.on_message(beat("b", 1, LIFE1, LIFE1), 0.0)
    for k, t in ((1, 1.0), (2, 2.0), (ROLLOVERS, 3.0)):
        assert changes(a.on_message(beat("b", 1 + k, LIFE1, LIFE1 + k, 1), t), "b") == []
    assert life(a, "b") == LIFE1


# One member's beats: each a step of its incarnation (0: unchanged, 1: a refutation) and
# what its life does: the same, a roll-over (+1..ROLLOVERS), a later process (+ more),
# or a late beat of an older process.
STEPS = st.lists(st.tuples(st.sampled_from(["same", "roll", "restart", "older"]),
                           st.integers(0, ROLLOVERS), st.booleans()), max_size=30)


@given(STEPS)
def test_the_life_changes_exactly_when_a_later_process_speaks(steps: list[tuple[str, int, bool]]
                                                               ) -> None:
    a = node("a", LIFE1 - 60_000)
    inc = first = cur = LIFE1  # b's incarnation, its process's first life, its current life
    a.on_message(beat("b", 1, inc, cur), 0.0)
    for t, (what, k, refute) in enumerate(steps, start=1):
        sent_life, sent_inc = cur, inc
        if what == "roll":
            cur = sent_life = cur + 1 + k // 8  # up to 128 roll-overs at once
        elif what == "restart":
            inc = first = cur = sent_life = sent_inc = cur + ROLLOVERS + 1 + k * 1000
        elif what == "older":  # and an incarnation below b's current one
            sent_life, sent_inc = first - ROLLOVERS - 1 - k, inc - 1
        if refute and what != "older":
            inc = sent_inc = inc + 1
        if what == "roll" and cur - first > ROLLOVERS:
            first = cur  # past the roll-over room: indistinguishable from a restart
        before = life(a, "b")
        got = changes(a.on_message(beat("b", 1 + t, sent_inc, sent_life, 1), float(t)), "b")
        after = life(a, "b")
        assert after == first, (what, before, after, first)
        assert len(got) <= 1  # one change per beat, whatever it says
        if after != before:
            assert got and got[0].view.life == after
        assert all(c.view.life == after for c in got)


@given(st.integers(0, MAX_LIFE), st.integers(0, MAX_LIFE))
def test_later_process_is_only_past_the_roll_over_room(known: int, life_: int) -> None:
    assert later_process(known, life_) == (known > 0 and life_ - known > ROLLOVERS)


@given(st.integers(1, MAX_LIFE), st.integers(0, 3), st.integers(-5, ROLLOVERS + 5))
def test_an_outbox_owns_its_first_life_and_its_roll_overs_only(first: int, rolls: int,
                                                                 delta: int) -> None:
    box = Outbox(4, life=first)
    for _ in range(rolls):  # jump to the end of the current life, then one more envelope
        box.last = (life_of(box.last) << SEQ_BITS) | ((1 << SEQ_BITS) - 1)
        box.next("b", 1, "purge", b"")
    assert life_of(box.last) == first + rolls
    assert box.owns(first + delta) == (0 <= delta <= rolls)
    assert not Outbox(4, life=0).owns(0)  # a process that does not say owns nothing


def test_a_member_owns_its_own_life_only() -> None:
    b = node("b", LIFE2)
    assert b.owns_life(LIFE2)
    assert not b.owns_life(LIFE1)  # the earlier process under the same id
    assert not b.owns_life(LIFE2 + ROLLOVERS + 1)
