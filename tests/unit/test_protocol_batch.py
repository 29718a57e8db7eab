"""BATCH: several encoded messages in one zmq message. Round trips keep every
message and its order; hostile batches only ever raise ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol import (
    VERSION,
    Batch,
    BodyMsg,
    Cancel,
    Cmd,
    Credit,
    Heartbeat,
    Limits,
    Message,
    ProtocolError,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
)

ids = st.integers(0, 2**63 - 1)
token = st.text(st.sampled_from("abcXYZ019-_."), min_size=1, max_size=12)
value = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                max_size=20)
headers = st.lists(st.tuples(token, value), max_size=4).map(tuple)
plain: st.SearchStrategy[Message] = st.one_of(
    st.just(Heartbeat()),
    st.builds(RequestMsg, ids, st.just("GET"), st.just("/a?b"), headers,
              st.floats(0, 60, allow_nan=False), body=st.binary(max_size=50)),
    st.builds(BodyMsg, ids, st.booleans(), st.binary(max_size=50)),
    st.builds(Credit, ids, st.integers(1, 65536)),
    st.builds(Reply, ids, st.integers(100, 599), headers, st.booleans(), st.binary(max_size=50)),
    st.builds(Cancel, ids),
)


@given(st.lists(plain, max_size=40))
def test_a_batch_round_trips_every_message_in_order(msgs: list[Message]) -> None:
    frames = encode_batch([encode(m) for m in msgs])
    batch = decode(frames)
    assert isinstance(batch, Batch)
    assert [decode(list(p)) for p in batch.parts] == msgs
    assert encode(batch) == frames  # the dataclass form encodes to the same frames


def test_the_empty_batch_is_the_announcement() -> None:
    assert decode(encode_batch([])) == Batch(())
    assert encode_batch([])[0] == VERSION + bytes([Cmd.BATCH])


@given(st.lists(plain, min_size=1, max_size=10), st.data())
def test_miscounted_or_truncated_batches_are_refused(msgs: list[Message],
                                                     data: st.DataObject) -> None:
    frames = encode_batch([encode(m) for m in msgs])
    cut = data.draw(st.integers(2, len(frames) - 1))
    with pytest.raises(ProtocolError):
        decode(frames[:cut])  # fewer frames than the counts promise
    with pytest.raises(ProtocolError):
        decode([*frames, b"extra"])


def test_nested_batches_and_limits_are_refused() -> None:
    head = VERSION + bytes([Cmd.BATCH])
    inner = encode_batch([])
    with pytest.raises(ProtocolError, match="inside a BATCH"):
        decode([head, msgpack.packb([2]), *inner])
    small = Limits(max_batch=3)
    many = encode_batch([encode(Cancel(1))] * 4)
    with pytest.raises(ProtocolError):
        decode(many, small)
    assert isinstance(decode(many), Batch)
    for bad in ([head, msgpack.packb([1])], [head, msgpack.packb([4]), b"", b"", b"", b""],
                [head, msgpack.packb({"a": 1})], [head, b"\xc1"], [head, msgpack.packb(["2"])],
                [head, msgpack.packb([True, True]), b"", b"", b"", b""]):
        with pytest.raises(ProtocolError):
            decode(bad)


@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=5), max_leaves=20),
       st.lists(st.binary(max_size=12), max_size=12))
def test_any_batch_metadata_and_frames_raise_only_protocol_error(meta: object,
                                                                 rest: list[bytes]) -> None:
    frames = [VERSION + bytes([Cmd.BATCH]), msgpack.packb(meta), *rest]
    try:
        out = decode(frames)
    except ProtocolError:
        return
    assert isinstance(out, Batch)
    for part in out.parts:  # what a receiver does next: decode each part
        try:
            decode(list(part))
        except ProtocolError:
            pass
