"""One member cannot speak for another for long: the subject refutes what others say of it."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.membership import Membership, Publish, SelfInfo
from gossip.messages import Addresses, Alive, Dead, Left, News, Push, Suspect

CFG = GossipConfig.lan()


def addr(i: str) -> Addresses:
    return Addresses(f"http://{i}", f"tcp://{i}:7946", f"tcp://{i}:7947")


def node(i: str) -> Membership:
    return Membership(SelfInfo(i, "east", addr(i), 10), CFG, random.Random(i))


def pushes(actions: Sequence[object]) -> list[Push]:
    return [a.msg for a in actions if isinstance(a, Publish) and isinstance(a.msg, Push)]


def _meet(*ms: Membership) -> None:
    for m in ms:
        for other in ms:
            if other is not m:
                m.on_message(Push(other.me.id, 1, (Alive(other.me.id, other.incarnation,
                                                         "east", other.me.addresses),)), 0.0)


def forgeries(victim: str, inc: int) -> list[News]:
    return [Left(victim, inc), Dead(victim, inc, "mallory"), Suspect(victim, inc, "mallory"),
            Alive(victim, inc, "east", addr("mallory")), Alive(victim, inc, "west", addr(victim))]


@given(st.integers(min_value=10, max_value=2**40), st.integers(min_value=0, max_value=4))
def test_a_forged_claim_is_refuted_by_its_subject(inc: int, which: int) -> None:
    a, c = node("a"), node("c")
    _meet(a, c)
    lie = forgeries("a", inc)[which]
    seq = 100
    c.on_message(Push("mallory", seq, (lie,)), 1.0)  # mallory is any authorised member
    # The lie travels on to its subject (c relays what changed its view, or the digest does).
    out = a.on_message(Push("c", seq + 1, (lie,)), 1.1)
    assert a.incarnation == inc + 1 and a.stats["refuted"] == 1
    refutation = [n for p in pushes(out) for n in p.news if n.id == "a"]
    assert refutation == [Alive("a", inc + 1, "east", addr("a"))]
    c.on_message(pushes(out)[0], 1.2)
    view = c.member("a")
    assert view is not None
    assert (view.state, view.addresses, view.dc) == ("alive", addr("a"), "east")


def test_our_own_news_echoed_back_is_not_a_forgery() -> None:
    a = node("a")
    a.on_message(Push("c", 5, (Alive("a", a.incarnation, "east", addr("a")),)), 1.0)
    assert a.stats["refuted"] == 0 and a.incarnation == 10
