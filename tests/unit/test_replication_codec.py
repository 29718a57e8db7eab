"""The replication wire codec: round trips, and hostile bytes only ever raise ReplicaWireError."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.replication_codec import (
    Announce,
    Purge,
    Put,
    ReplicaWireError,
    dc_topic,
    decode_entry,
    decode_fetch,
    decode_purge,
    decode_put,
    encode_announce,
    encode_purge,
    encode_put,
    entry_fields,
    fetch_meta,
)

TEXT = st.text(max_size=30)
TOKEN = st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True)
VALUE = st.text(max_size=40).filter(lambda v: not any(c in v for c in "\r\n\0"))
TIME = st.floats(min_value=0, max_value=1e10, allow_nan=False)
HEADERS = st.lists(st.tuples(TOKEN, VALUE), max_size=8).map(tuple)


@st.composite
def entries(draw: st.DrawFn) -> CacheEntry:
    rq = draw(TIME)
    rs = draw(st.floats(min_value=rq, max_value=1e10, allow_nan=False))
    return CacheEntry(draw(TEXT), draw(TEXT), draw(st.integers(100, 999)), draw(HEADERS),
                      draw(st.binary(max_size=200)), rq, rs, draw(TEXT))


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@given(entries(), TEXT, TEXT)
def test_put_round_trip(entry: CacheEntry, sender: str, service: str) -> None:
    assert decode_put(encode_put(Put(sender, service, entry))) == Put(sender, service, entry)


@given(entries(), TEXT, TEXT)
def test_announce_round_trip(entry: CacheEntry, sender: str, service: str) -> None:
    ann = Announce(sender, service, entry.key, entry.variant, len(entry.body),
                   entry.request_time, entry.response_time, entry.origin)
    assert decode_put(encode_announce(ann)) == ann


@given(TEXT, st.integers(0, (1 << 63) - 1), TEXT, st.booleans(), TIME)
def test_purge_round_trip(origin: str, pid: int, key: str, prefix: bool, at: float) -> None:
    purge = Purge(origin, pid, key, prefix, at)
    assert decode_purge(encode_purge(purge)) == purge


@given(entries())
def test_fetch_round_trip(entry: CacheEntry) -> None:
    assert decode_fetch(fetch_meta(entry.key, entry.variant)) == (entry.key, entry.variant)
    assert decode_entry(entry_fields(entry), [entry.body]) == entry


@given(st.lists(st.binary(max_size=300), max_size=3))
def test_random_frames_raise_only_wire_errors(frames: list[bytes]) -> None:
    try:
        decode_put(frames)
    except ReplicaWireError:
        pass


@given(st.binary(max_size=300))
def test_random_purge_bytes_raise_only_wire_errors(payload: bytes) -> None:
    try:
        decode_purge(payload)
    except ReplicaWireError:
        pass


@given(entries(), st.sampled_from(["v", "t", "from", "svc", "key", "var", "st", "hd", "rq",
                                   "rs", "org"]), JUNK)
def test_mutated_put_metadata_is_refused_or_valid(entry: CacheEntry, field: str,
                                                  junk: Any) -> None:
    meta = msgpack.unpackb(encode_put(Put("a", "b", entry))[0])
    meta[field] = junk
    try:
        put = decode_put([msgpack.packb(meta, use_bin_type=True), entry.body])
    except ReplicaWireError:
        return
    assert isinstance(put, Put)  # junk that happened to be valid


@given(st.dictionaries(st.text(max_size=5), JUNK, max_size=8))
def test_junk_maps_raise_only_wire_errors(meta: dict[str, Any]) -> None:
    for decode in (lambda: decode_put([msgpack.packb(meta)]),
                   lambda: decode_purge(msgpack.packb(meta)),
                   lambda: decode_fetch(meta),
                   lambda: decode_entry(meta, [b""])):
        try:
            decode()
        except ReplicaWireError:
            pass


def test_limits_and_schema_errors_say_what_was_wrong() -> None:
    entry = CacheEntry("http://a/x", "", 200, (("A", "b"),), b"body", 1.0, 2.0, "n1")
    meta, body = encode_put(Put("n1", "www", entry))
    cases: list[tuple[list[bytes], str]] = [
        ([], "empty"),
        ([meta], "one body frame"),
        ([meta, body, body], "one body frame"),
        ([b"\xc1"], "undecodable"),
        ([msgpack.packb([1, 2])], "not a map"),
        ([msgpack.packb({"v": 2})], "unsupported version"),
        ([*encode_announce(Announce("n1", "w", "k", "", 1, 1.0, 2.0, "o")), b"x"], "no body"),
    ]
    for frames, why in cases:
        with pytest.raises(ReplicaWireError, match=why):
            decode_put(frames)
    with pytest.raises(ReplicaWireError, match="exceeds"):
        decode_put([meta, body], max_body=3)
    with pytest.raises(ReplicaWireError, match="exceeds"):
        decode_put([b"\x00" * (300 * 1024)])
    bad = entry_fields(entry) | {"rq": 3.0}
    with pytest.raises(ReplicaWireError, match="rq"):
        decode_entry(bad, [b""])
    bad = entry_fields(entry) | {"hd": [["Bad Name", "x"]]}
    with pytest.raises(ReplicaWireError, match="invalid field"):
        decode_entry(bad, [b""])
    bad = entry_fields(entry) | {"hd": [["A", "x\r\nInjected: 1"]]}
    with pytest.raises(ReplicaWireError, match="invalid field"):
        decode_entry(bad, [b""])
    bad = entry_fields(entry) | {"rs": float("inf")}
    with pytest.raises(ReplicaWireError, match="rs"):
        decode_entry(bad, [b""])


def test_dc_topics_do_not_prefix_each_other() -> None:
    assert not dc_topic("east2").startswith(dc_topic("east"))


@given(entries())
def test_packing_the_stored_pairs_sends_the_same_bytes(entry: CacheEntry) -> None:
    """encode_put hands msgpack the stored tuples; peers must read the same bytes as lists."""
    from cache.replication_codec import _pack

    assert _pack(entry_fields(entry, packing=True)) == _pack(entry_fields(entry))
