"""Anti-herding counts what is outstanding at a peer, not everything ever sent.

A forward that came back gave its slot back (`LoadTable.note_done`), but only
against the report it was counted under: once a newer report arrives, the
peer's own numbers already include it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.load import ServiceLoad
from mesh.loadtable import LoadTable, LoadTableError

# (True, n): send n requests; (False, k): the k-th still-outstanding one comes back.
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=60)


def _peer(free: int, at: float = 1.0, seq: int = 1) -> LoadTable:
    t = LoadTable("self")
    t.update("p", "west", "alive", 1, {"peer": "tcp://p:7947"},
             {"www": ServiceLoad(workers=1, slots=free, in_flight=0, queued=0)}, at, seq=seq)
    return t


@given(st.integers(0, 40), ops)
def test_effective_free_is_report_minus_outstanding(free: int, steps: list[tuple[bool, int]]
                                                    ) -> None:
    t = _peer(free)
    tokens: list[int] = []
    for send, n in steps:
        if send:
            tokens += [t.note_sent("p", "www") for _ in range(n)]
        elif tokens:
            t.note_done("p", "www", tokens.pop(n % len(tokens)))
        assert t.sent_since_report("p", "www") == len(tokens)
        assert t.effective_free("p", "www") == max(0, free - len(tokens))


@given(st.integers(1, 40), st.integers(1, 20), st.integers(0, 20))
def test_a_newer_report_makes_older_tokens_void(free: int, before: int, after: int) -> None:
    t = _peer(free)
    old = [t.note_sent("p", "www") for _ in range(before)]
    assert t.update("p", "west", "alive", 1, {"peer": "tcp://p:7947"},
                    {"www": ServiceLoad(workers=1, slots=free, in_flight=0, queued=0)}, 2.0,
                    seq=2)
    new = [t.note_sent("p", "www") for _ in range(after)]
    for token in old:  # counted by the peer's own report now: no double release
        t.note_done("p", "www", token)
    assert t.sent_since_report("p", "www") == after
    for token in new:
        t.note_done("p", "www", token)
    assert t.sent_since_report("p", "www") == 0
    assert t.effective_free("p", "www") == free


def test_unknown_peer_tokens_and_bad_counts() -> None:
    t = _peer(3)
    assert t.note_sent("nobody", "www") == 0
    t.note_done("nobody", "www", 0)  # a peer that just left: ignored
    t.note_done("p", "www", 0)  # a token from "unknown peer": ignored
    token = t.note_sent("p", "www")
    t.note_done("p", "api", token)  # another service: never below zero
    assert t.sent_since_report("p", "api") == 0 and t.sent_since_report("p", "www") == 1
    with pytest.raises(LoadTableError, match="negative"):
        t.note_done("p", "www", token, -1)


@given(st.integers(1, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))
def test_forwards_a_newer_report_counted_busy_give_their_slots_back_when_done(
        slots: int, busy: int, returned: int, sent_after: int) -> None:
    busy = min(busy, slots)
    t = _peer(slots)
    old = [t.note_sent("p", "www") for _ in range(returned)]
    # the peer reports while `busy` of its slots are taken (some of them ours)
    t.update("p", "west", "alive", 1, {"peer": "tcp://p:7947"},
             {"www": ServiceLoad(workers=1, slots=slots, in_flight=busy, queued=0)}, 2.0, seq=2)
    for _ in range(sent_after):
        t.note_sent("p", "www")
    for token in old:
        t.note_done("p", "www", token)
    freed = min(busy, returned)  # never more than the report counted busy
    expected = max(0, min(slots, slots - busy + freed) - sent_after)
    assert t.effective_free("p", "www") == expected
    assert t.effective_free("p", "www") <= slots
