"""A node's purge record: `since` never claims more than the tombstones remember, and the
record's wire form round-trips, cuts honestly and refuses hostile bytes."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import replication_codec as codec
from cache.replication_codec import ReplicaWireError, decode_purges, encode_purges
from cache.tombstones import Tombstones

KEYS = st.sampled_from(["http://a/", "http://a/x", "http://a/x/y", "http://b/x", "http://a/xy"])
TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), KEYS, st.booleans(), TIMES),  # a purge heard live
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=50)),
    st.tuples(st.just("merge"), TIMES),  # a peer's record, complete after this time
), max_size=40)
DOWN = st.lists(st.tuples(KEYS, st.booleans(), TIMES), max_size=8)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(OPS, TIMES, DOWN)
def test_every_purge_after_since_is_still_remembered(
        ops: list[tuple], start: float, down: list[tuple[str, bool, float]]) -> None:
    clock = Clock()
    stones = Tombstones(clock, max_count=3, max_prefixes=2, max_age=100.0, since=start)
    # Purges made before we started (while we were down): only peers' records tell them.
    purges = [p for p in down if p[2] <= start]
    for op in ops:
        if op[0] == "add":
            stones.add(op[1], op[2], max(op[3], start))
            purges.append((op[1], op[2], max(op[3], start)))
        elif op[0] == "wait":
            clock.now += op[1]
        else:
            stones.merge(op[1], [p for p in purges if p[2] > op[1]])
        for key, is_prefix, at in purges:
            if at > stones.since:  # the record claims it: it must still block
                target = key + "z" if is_prefix else key
                assert stones.blocks_key(target, at), (key, is_prefix, at, stones.since)
    record = stones.newest_first()
    assert [s.at for s in record] == sorted((s.at for s in record), reverse=True)


def test_merge_reaches_back_to_the_older_record() -> None:
    stones = Tombstones(Clock(), since=500.0)
    stones.merge(100.0, [("http://a/x", False, 300.0)])
    assert stones.since == 100.0 and stones.blocks_key("http://a/x", 250.0)
    stones.merge(400.0, [])
    assert stones.since == 100.0  # a younger record adds nothing to how far back we know


@given(st.floats(min_value=0, max_value=1e9),
       st.lists(st.tuples(st.text(max_size=40), st.booleans(), TIMES), max_size=50))
def test_record_round_trips(since: float, stones: list[tuple[str, bool, float]]) -> None:
    meta, body = encode_purges(since, stones)
    got_since, got = decode_purges(msgpack.unpackb(msgpack.packb(meta)), (body,))
    assert (got_since, got) == (since, stones)


def test_a_cut_record_starts_after_the_first_purge_it_leaves_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_STONES", 3)
    stones = [(f"http://a/{i}", False, 100.0 - i) for i in range(5)]  # latest first
    meta, body = encode_purges(10.0, stones)
    since, got = decode_purges(meta, (body,))
    assert got == stones[:3] and since == 97.0  # purges at or before 97 may be missing
    monkeypatch.setattr(codec, "MAX_STONES", 20_000)
    monkeypatch.setattr(codec, "MAX_STONE_BYTES", 120)  # now the byte limit cuts
    since, got = decode_purges(*_one(encode_purges(10.0, stones)))
    assert len(got) < 3 and since == stones[len(got)][2]


def _one(pair: tuple[dict, bytes]) -> tuple[dict, tuple[bytes]]:
    return pair[0], (pair[1],)


@pytest.mark.parametrize("meta, body", [
    ({"v": 2, "since": 1.0}, [msgpack.packb([])]),
    ({"v": 1}, [msgpack.packb([])]),
    ({"v": 1, "since": float("nan")}, [msgpack.packb([])]),
    ({"v": 1, "since": 1.0}, []),
    ({"v": 1, "since": 1.0}, [b"\xc1"]),
    ({"v": 1, "since": 1.0}, [msgpack.packb({"a": 1})]),
    ({"v": 1, "since": 1.0}, [msgpack.packb([["k", True]])]),
    ({"v": 1, "since": 1.0}, [msgpack.packb([["k", 1, 2.0]])]),
    ({"v": 1, "since": 1.0}, [msgpack.packb([[b"k", True, 2.0]])]),
    ({"v": 1, "since": 1.0}, [msgpack.packb([["k", True, -1.0]])]),
    ({"v": 1, "since": 1.0}, [msgpack.packb([["k" * 20_000, True, 1.0]])]),
])
def test_hostile_records_raise_the_wire_error(meta: dict, body: list[bytes]) -> None:
    with pytest.raises(ReplicaWireError):
        decode_purges(meta, body)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_the_wire_error(data: bytes) -> None:
    try:
        decode_purges({"v": 1, "since": 0.0}, (data,))
    except ReplicaWireError:
        pass
