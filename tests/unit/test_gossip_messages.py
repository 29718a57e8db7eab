"""The gossip codec: every type round-trips; anything malformed is a DecodeError, nothing else."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.load import ServiceLoad
from gossip.messages import (
    MAX_MESSAGE_BYTES,
    MAX_NEWS,
    MAX_STR,
    TYPE_IDS,
    Ack,
    Addresses,
    Alive,
    Beat,
    DcSummary,
    Dead,
    DecodeError,
    Left,
    MemberRecord,
    Message,
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

ids = st.text(min_size=1, max_size=40)
ints = st.integers(0, 2**64 - 1)
small = st.integers(0, 2**31)
# loads travel as float32: generate values float32 can hold exactly
f32 = st.floats(0, 2.0**100, width=32, allow_nan=False, allow_infinity=False)
addrs = st.builds(Addresses, st.text(max_size=60), ids, ids, st.text(max_size=60))
loads = st.lists(
    st.tuples(ids, st.builds(ServiceLoad, small, small, small, small, f32, f32, f32, f32)),
    max_size=5,
).map(tuple)
alive = st.builds(Alive, ids, ints, ids, addrs)
news = st.one_of(
    alive,
    st.builds(Suspect, ids, ints, ids),
    st.builds(Dead, ids, ints, ids),
    st.builds(Left, ids, ints),
)
news_list = st.lists(news, max_size=8).map(tuple)
record = st.builds(MemberRecord, ids, ints, ids, addrs,
                   st.sampled_from(["alive", "suspect", "dead", "left"]))

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Beat, ids, ints, ints, ids, addrs, loads, ints, ints, ints, news_list),
    st.builds(Push, ids, ints, news_list),
    st.builds(SnapshotRequest, ids, ints, alive),
    st.builds(Snapshot, ids, ints, st.lists(record, max_size=10).map(tuple), ints),
    st.builds(Reliable, ids, ints, ints, ids, st.binary(max_size=200)),
    st.builds(ResendRequest, ids, ints, ints, ints),
    st.builds(DcSummary, ids, ints, ids, ints, loads),
    st.builds(Ping, ids, ints, ints, ids),
    st.builds(Probe, ids, ints, ints, ids),
    st.builds(Ack, ids, ints, ints, ids, ints),
)


def decodes_or_rejects(data: bytes) -> None:
    """The decoder's whole contract on hostile input."""
    try:
        msg = decode(data)
    except DecodeError:
        return
    assert type(msg) in TYPE_IDS


@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


A = Addresses("http://h:8080", "tcp://h:7946", "tcp://h:7947", "tcp://h:7950")
ONE_OF_EACH: list[Message] = [
    Beat("a", 1, 2, "east", A, (("www", ServiceLoad(1, 2, 3, 4, 0.5, 1.0, 0.0, 0.0)),), 9, 3, 1,
         (Alive("b", 1, "east", A), Suspect("c", 1, "a"), Dead("d", 2, "a"), Left("e", 3))),
    Push("a", 2, (Left("e", 3),)),
    SnapshotRequest("a", 3, Alive("a", 1, "east", A)),
    Snapshot("a", 4, (MemberRecord("b", 1, "west", A, "suspect"),), 77),
    Reliable("a", 5, 1, "purge", b"\x00payload"),
    ResendRequest("a", 6, 1, 4),
    DcSummary("a", 7, "east", 12, (("www", ServiceLoad(10, 20, 3, 0, 4.0, 100.0, 0.0, 0.0)),)),
    Ping("a", 8, 1, "b"),
    Probe("a", 9, 1, "c"),
    Ack("b", 10, 1, "c", 4),
]


def test_every_type_has_an_id_and_round_trips() -> None:
    assert {type(m) for m in ONE_OF_EACH} == set(TYPE_IDS)
    assert len(set(TYPE_IDS.values())) == len(TYPE_IDS)
    for m in ONE_OF_EACH:
        assert decode(encode(m)) == m


@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    decodes_or_rejects(data)


@given(st.binary(max_size=400))
def test_random_bytes_after_a_valid_version(data: bytes) -> None:
    decodes_or_rejects(b"\x01" + data)


@given(messages, st.data())
def test_truncation(msg: Message, data: st.DataObject) -> None:
    wire = encode(msg)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(DecodeError):
        decode(wire[:cut])


@given(messages, st.data())
def test_mutation(msg: Message, data: st.DataObject) -> None:
    wire = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    decodes_or_rejects(bytes(wire))


scalars = (st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5)
           | st.binary(max_size=5) | st.floats())


@given(st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=30))
def test_arbitrary_msgpack_values(value: object) -> None:
    decodes_or_rejects(b"\x01" + msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("data", [
    b"",
    b"\x01",
    b"\x02" + msgpack.packb([1, "a", 1]),  # unknown version
    b"\x01" + b"\x91" * 100_000 + b"\xc0",  # nesting far past any schema
    b"\x01\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
    b"\x01\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
    b"\x01\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    b"\x01\xdf\x00\x00\x00\x01\xc0\xc0",  # a map
    b"\x01\xd4\x01\x00",  # an ext type
    b"\x01" + msgpack.packb([99, "a", 1]),  # unknown type id
    b"\x01" + msgpack.packb([8, "a", 1, 2]),  # Ping missing a field
    b"\x01" + msgpack.packb([8, "a", -1, 2, "b"]),  # negative seq
    b"\x01" + msgpack.packb([8, "a", 1.5, 2, "b"]),  # float seq
    b"\x01" + msgpack.packb([8, "", 1, 2, "b"]),  # empty sender
    b"\x01" + msgpack.packb([8, "a" * (MAX_STR + 1), 1, 2, "b"]),  # sender too long
    b"\x01" + msgpack.packb([8, True, 1, 2, "b"]),  # wrong type
    b"\x01" + msgpack.packb([8, "a", True, 2, "b"]),  # bool is not an int here
    b"\x01" + msgpack.packb([2, "a", 1, [[1, "x", 1, "dc", ["h", "g", "p"]]]]),  # 3 addresses
    b"\x01" + msgpack.packb([2, "a", 1, [[7, "x", 1]]]),  # unknown news kind
    b"\x01" + msgpack.packb([2, "a", 1, [[4, "x", 1]] * (MAX_NEWS + 1)]),  # too much news
    b"\x01" + msgpack.packb([7, "a", 1, "dc", 1, [["s", 1, 1, 1, 1, float("nan"), 0, 0, 0]]]),
    b"\x01" + msgpack.packb([7, "a", 1, "dc", 1, [["s", 1, 1, 1, 1, float("inf"), 0, 0, 0]]]),
    b"\x01" + msgpack.packb([7, "a", 1, "dc", 1, [["s", 1, 1, 1, 1, -1.0, 0, 0, 0]]]),
    b"\x01" + msgpack.packb([4, "a", 1, [["x", 1, "dc", ["", "g", "p", ""], 9]], 0]),  # state
    b"\x01" + msgpack.packb([5, "a", 1, 1, "leave", "not bytes"]),
    b"\x01" + msgpack.packb([1, "a", 1]) + b"\xc0",  # trailing bytes
    b"\x01" + b"\x00" * (MAX_MESSAGE_BYTES + 1),  # too big
])
def test_malformed_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_decode_error_says_what_is_wrong() -> None:
    with pytest.raises(DecodeError, match="seq"):
        decode(b"\x01" + msgpack.packb([8, "a", -1, 2, "b"]))


def test_beat_is_small() -> None:
    """A beat with three services and no news stays small: it goes out every second."""
    load = tuple((f"service-{i}", ServiceLoad(8, 64, 10, 2, 12.5, 300.0, 1.0, 2.0))
                 for i in range(3))
    a = Addresses("http://10.0.0.1:8080", "tcp://10.0.0.1:7946", "tcp://10.0.0.1:7947")
    beat = Beat("node-17", 12345, 1732700000, "east", a, load, 2**63 + 5, 1000, 3)
    assert len(encode(beat)) < 300


def test_encoding_is_positional_and_versioned() -> None:
    wire = encode(Ping("a", 7, 9, "b"))
    assert wire[0] == 1
    assert msgpack.unpackb(wire[1:]) == [TYPE_IDS[Ping], "a", 7, 9, "b"]
