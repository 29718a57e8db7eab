"""Reliable streams are per publisher *life*: a member killed with -9 and restarted
numbers its envelopes from the start again, and its peers must deliver them (QA: purges
from a node restarted within ~1 s were dropped silently as duplicates of the old
life's). A late envelope of the older life must not be delivered after the new one's,
and no envelope is refused without a count."""

from __future__ import annotations

import random
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.actions import Action, Deliver, Publish, SendTo
from gossip.config import GossipConfig
from gossip.membership import Membership, SelfInfo
from gossip.messages import Addresses, Alive, Beat, Push, Reliable, ResendRequest, decode, encode
from gossip.reliable import SEQ_BITS, SEQ_MASK, Inbox, Outbox, first_of, life_of

CFG = GossipConfig.lan()
LIFE1 = 1_700_000_000_000  # incarnations are wall-clock milliseconds (gossip/agent.py)
LIFE2 = LIFE1 + 800  # back 0.8 s later
A = LIFE1 - 60_000  # a started a minute earlier
M = TypeVar("M", Reliable, Beat, ResendRequest)


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


def node(i: str, inc: int) -> Membership:
    return Membership(SelfInfo(i, "east", addr(i), inc), CFG, random.Random(i))


def wire(m: M) -> M:
    out = decode(encode(m))
    assert out == m
    return m


def published(actions: list[Action]) -> list[Reliable]:
    return [a.msg for a in actions if isinstance(a, Publish) and isinstance(a.msg, Reliable)]


def delivered(actions: list[Action]) -> list[bytes]:
    return [a.payload for a in actions if isinstance(a, Deliver)]


def purge(b: Membership, what: bytes) -> Reliable:
    [env] = published(b.publish_reliable("purge", what))
    return wire(env)


def test_a_restarted_senders_envelopes_are_delivered_and_the_old_lifes_late_one_is_not() -> None:
    a = node("a", A)
    b1 = node("b", LIFE1)
    a.on_message(Push("z", 1, (Alive("b", LIFE1, "east", addr("b")),)), 0.0)
    got: list[bytes] = []
    life1 = [purge(b1, f"1.{i}".encode()) for i in range(1, 6)]
    for t, env in enumerate(life1[:4]):
        got += delivered(a.on_message(env, 1.0 + t / 10))
    late = life1[4]  # still in flight (or in a resend) when b1 is killed -9
    assert got == [b"1.1", b"1.2", b"1.3", b"1.4"]

    b2 = node("b", LIFE2)  # the same id and addresses, 0.8 s later: numbering starts again
    life2 = [purge(b2, f"2.{i}".encode()) for i in range(1, 4)]
    assert [life_of(e.rseq) for e in life2] == [LIFE2] * 3
    assert [e.rseq & SEQ_MASK for e in life2] == [1, 2, 3]
    # Its envelopes arrive before anything raised the incarnation a knows (its first beat
    # comes at a random point of its interval): each is delivered, once, in order.
    for t, env in enumerate(life2):
        got += delivered(a.on_message(env, 2.0 + t / 10))
    got += delivered(a.on_message(life2[1], 2.5))  # a resend crossing the original
    beat = Beat("b", 9, LIFE2, "east", addr("b"), rseq=b2._outbox.last)
    got += delivered(a.on_message(wire(beat), 2.6))
    got += delivered(a.on_message(late, 2.7))  # the old life's, late: not after the new one's
    got += delivered(a.tick(20.0))  # nothing held back either
    assert got == [b"1.1", b"1.2", b"1.3", b"1.4", b"2.1", b"2.2", b"2.3"]
    assert a.reliable_dropped() == {"stale_life": 1, "duplicate": 1, "overflow": 0,
                                    "skipped": 0}
    # The new life goes on normally.
    assert delivered(a.on_message(purge(b2, b"2.4"), 3.0)) == [b"2.4"]


def test_a_new_lifes_beat_asks_for_envelopes_pub_dropped_before_we_reconnected() -> None:
    """After a restart the first envelopes often reach no subscriber at all (ZeroMQ's
    reconnect backoff): the beat's rseq says a new life has three, so a asks for them."""
    a = node("a", A)
    b1 = node("b", LIFE1)
    a.on_message(Push("z", 1, (Alive("b", LIFE1, "east", addr("b")),)), 0.0)
    a.on_message(Push("z", 2, (Alive("a", A, "east", addr("a")),)), 0.0)
    b1.on_message(Push("z", 1, (Alive("a", A, "east", addr("a")),)), 0.0)
    for i in range(5):
        a.on_message(purge(b1, b"old%d" % i), 1.0)
    b2 = node("b", LIFE2)
    b2.on_message(Push("z", 1, (Alive("a", A, "east", addr("a")),)), 0.0)
    for i in range(3):
        purge(b2, b"new%d" % i)  # lost
    beat = Beat("b", 4, LIFE2, "east", addr("b"), rseq=b2._outbox.last)
    acts = a.on_message(wire(beat), 2.0)
    reqs = [x.msg for x in acts if isinstance(x, SendTo) and isinstance(x.msg, ResendRequest)]
    assert [(r.first, r.last) for r in reqs] == [(first_of(LIFE2), first_of(LIFE2) + 2)]
    answers = [x.msg for x in b2.on_message(wire(reqs[0]), 2.1)
               if isinstance(x, SendTo) and isinstance(x.msg, Reliable)]
    got = [p for m in answers for p in delivered(a.on_message(wire(m), 2.2))]
    assert got == [b"new0", b"new1", b"new2"]


def test_what_the_old_life_left_buffered_is_delivered_before_the_new_one() -> None:
    inbox = Inbox(give_up=5.0)
    r = [Reliable("b", i, first_of(LIFE1) + i, "purge", b"%d" % i) for i in range(4)]
    assert inbox.accept(r[0], 0.0)[0] == [r[0]]
    assert inbox.accept(r[2], 0.1)[0] == []  # r[1] lost, and its life ends before a resend
    inbox.accept(r[3], 0.2)
    new = Reliable("b", 1, first_of(LIFE2), "purge", b"new")
    ready, gap = inbox.accept(new, 0.3)
    assert ready == [r[2], r[3], new] and gap is None
    assert inbox.skipped == 1 and inbox.restarts == 1
    assert inbox.accept(r[1], 0.4) == ([], None)
    assert inbox.dropped["stale_life"] == 1


def test_a_late_beat_of_the_old_life_changes_nothing() -> None:
    inbox = Inbox(give_up=5.0)
    inbox.accept(Reliable("b", 1, first_of(LIFE2), "purge"), 0.0)
    assert inbox.head("b", first_of(LIFE1) + 40, 0.1) == ([], None)
    assert inbox.head("b", first_of(LIFE2), 0.2) == ([], None)


def test_a_forgotten_stream_remembers_its_life() -> None:
    """Unfollowed (or reaped), then followed again: the same life resumes where we were —
    what it published meanwhile is a gap to ask for (a partition's purges, QA: lost after
    a cut longer than dead_retention) — a newer one is heard from its start, an older one
    stays refused; `keep_life=False` leaves nothing."""
    inbox = Inbox(give_up=5.0)
    inbox.head("b", first_of(LIFE1) + 9, 0.0)
    inbox.forget("b")
    assert inbox.head("b", first_of(LIFE1) + 20, 1.0) == ([], (first_of(LIFE1) + 10,
                                                               first_of(LIFE1) + 20))
    missed = Reliable("b", 2, first_of(LIFE1) + 10, "purge")
    assert inbox.accept(missed, 1.1)[0] == [missed]
    inbox.forget("b")
    assert inbox.accept(Reliable("b", 1, first_of(LIFE1 - 5) + 3, "purge"), 2.0) == ([], None)
    assert inbox.dropped["stale_life"] == 1
    assert inbox.head("b", first_of(LIFE2) + 1, 3.0) == ([], (first_of(LIFE2), first_of(LIFE2) + 1))
    inbox.forget("b", keep_life=False)
    assert not inbox._lives and not inbox._streams


def test_the_numbers_roll_over_into_the_next_life_and_fit_the_wire() -> None:
    out = Outbox(keep=4, life=LIFE1)
    out.last = LIFE1 << SEQ_BITS | (SEQ_MASK - 1)
    a, b, c = (out.next("b", i, "purge", b"") for i in range(3))
    assert [a.rseq, b.rseq, c.rseq] == [LIFE1 << SEQ_BITS | SEQ_MASK, first_of(LIFE1 + 1),
                                        first_of(LIFE1 + 1) + 1]
    assert wire(c) == c
    inbox = Inbox(give_up=5.0)
    assert [m for x in (a, b, c) for m in inbox.accept(x, 0.0)[0]] == [a, b, c]
    assert sum(inbox.dropped.values()) == inbox.skipped == 0


def test_an_older_sender_without_a_life_numbers_from_one_as_before() -> None:
    out = Outbox(keep=4)
    assert [out.next("b", i, "purge", b"").rseq for i in range(3)] == [1, 2, 3]


# -- the property: any interleaving of two lives ------------------------------------------

def _events() -> st.SearchStrategy[tuple[int, int, list[tuple[str, int, int]]]]:
    """(n1, n2, events): life 1 sent n1 envelopes, life 2 n2; every life-2 envelope arrives
    at least once, life-1 ones maybe; beats from either life (with a head it reached), in
    any order, duplicates included (resends)."""
    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int, int]]]:
        n1 = draw(st.integers(1, 8))
        n2 = draw(st.integers(1, 8))
        must = [("env", 2, i) for i in range(1, n2 + 1)]
        extra = draw(st.lists(
            st.one_of(st.tuples(st.just("env"), st.just(1), st.integers(1, n1)),
                      st.tuples(st.just("env"), st.just(2), st.integers(1, n2)),
                      st.tuples(st.just("beat"), st.just(1), st.integers(1, n1)),
                      st.tuples(st.just("beat"), st.just(2), st.integers(0, n2))),
            max_size=20))
        return n1, n2, draw(st.permutations(must + extra))
    return build()


@settings(max_examples=300, deadline=None)
@given(_events())
def test_any_interleaving_of_two_lives_delivers_the_new_life_exactly_once_in_order(
        case: tuple[int, int, list[tuple[str, int, int]]]) -> None:
    n1, n2, events = case
    lives = {1: LIFE1, 2: LIFE2}
    env = {(life, i): Reliable("b", i, first_of(lives[life]) + i - 1, "purge", b"%d.%d" % (life, i))
           for life, n in ((1, n1), (2, n2)) for i in range(1, n + 1)}
    inbox = Inbox(give_up=5.0)
    out: list[Reliable] = inbox.accept(env[1, 1], 0.0)[0]  # a already hears life 1
    assert out == [env[1, 1]]
    switched = False
    before: set[Reliable] = {env[1, 1]}  # life-1 envelopes that reached a before the switch
    stale = 0
    now = 0.0
    for what, life, i in events:
        now += 0.01
        switched = switched or life == 2
        if what == "env":
            if life == 1 and not switched:
                before.add(env[1, i])
            stale += life == 1 and switched
            out += inbox.accept(env[life, i], now)[0]
        else:
            out += inbox.head("b", first_of(lives[life]) + i - 1, now)[0]
    out += inbox.expire(now + 10.0)
    old = [m for m in out if life_of(m.rseq) == LIFE1]
    new = [m for m in out if life_of(m.rseq) == LIFE2]
    assert out == old + new, "nothing of life 1 after life 2's"
    assert new == [env[2, i] for i in range(1, n2 + 1)], "life 2: all, once, in order"
    assert set(old) == before and [m.rseq for m in old] == sorted({m.rseq for m in old})
    assert inbox.dropped["stale_life"] == stale
