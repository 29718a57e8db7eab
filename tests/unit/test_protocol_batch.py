"""BATCH and PACKED: several encoded messages in one zmq message (PACKED: in one
frame). Round trips keep every message and its order; hostile batches only ever
raise ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol import (
    PACK_BELOW,
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
    encode_packed,
    packable,
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


# -- PACKED ----------------------------------------------------------------------
PACKED_HEAD = VERSION + bytes([Cmd.PACKED])


@given(st.lists(plain, max_size=40))
def test_a_packed_batch_round_trips_every_message_in_order(msgs: list[Message]) -> None:
    encoded = [encode(m) for m in msgs]
    frames = encode_packed(encoded)
    assert len(frames) == 3  # whatever the number of messages
    batch = decode(frames)
    assert isinstance(batch, Batch) and batch.packed
    assert [list(p) for p in batch.parts] == encoded
    assert [decode(list(p)) for p in batch.parts] == msgs
    assert encode(batch) == frames  # the dataclass form encodes to the same frames


def test_the_empty_packed_batch_is_its_announcement_and_differs_from_batch_s() -> None:
    assert decode(encode_packed([])) == Batch((), packed=True)
    assert decode(encode_packed([])) != decode(encode_batch([]))
    assert encode_packed([])[0] == PACKED_HEAD


def test_only_small_frames_are_packable() -> None:
    small = encode(Reply(1, 200, (), False, b"x" * (PACK_BELOW - 1)))
    large = encode(Reply(2, 200, (), False, b"x" * PACK_BELOW))
    assert packable([small, small]) and not packable([small, large])


@given(st.lists(plain, min_size=1, max_size=10), st.data())
def test_packed_lengths_that_do_not_match_the_blob_are_refused(msgs: list[Message],
                                                               data: st.DataObject) -> None:
    head, index, blob = encode_packed([encode(m) for m in msgs])
    cut = data.draw(st.integers(0, len(blob) - 1)) if blob else None
    if cut is not None:
        with pytest.raises(ProtocolError, match="add up"):
            decode([head, index, blob[:cut]])
    with pytest.raises(ProtocolError, match="add up"):
        decode([head, index, blob + b"x"])
    with pytest.raises(ProtocolError, match="3 frames"):
        decode([head, index, blob, b""])


def test_nested_and_oversized_packed_batches_are_refused() -> None:
    for inner in (encode_batch([]), encode_packed([])):
        with pytest.raises(ProtocolError, match="inside a PACKED"):
            decode(encode_packed([inner]))
        with pytest.raises(ProtocolError, match="inside a BATCH"):
            decode(encode_batch([inner]))
    many = encode_packed([encode(Cancel(1))] * 4)
    with pytest.raises(ProtocolError):
        decode(many, Limits(max_batch=3))
    assert isinstance(decode(many), Batch)
    with pytest.raises(ProtocolError, match="metadata longer"):
        decode(many, Limits(max_meta=len(many[1]) - 1))
    for bad in ([PACKED_HEAD, msgpack.packb([[1]]), b"x"],
                [PACKED_HEAD, msgpack.packb([[1, 1, 1, 1]]), b"xxxx"],
                [PACKED_HEAD, msgpack.packb([[-1, 1]]), b""],
                [PACKED_HEAD, msgpack.packb([[True, 1]]), b"xx"],
                [PACKED_HEAD, msgpack.packb([2]), b"xx"],
                [PACKED_HEAD, msgpack.packb({"a": 1}), b""],
                [PACKED_HEAD, b"\xc1", b""],
                [PACKED_HEAD, msgpack.packb([])]):
        with pytest.raises(ProtocolError):
            decode(bad)


@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=5), max_leaves=20),
       st.binary(max_size=40), st.integers(0, 2))
def test_any_packed_index_and_blob_raise_only_protocol_error(meta: object, blob: bytes,
                                                             extra: int) -> None:
    frames = [PACKED_HEAD, msgpack.packb(meta), blob, *[b""] * extra][: 3 + extra]
    try:
        out = decode(frames)
    except ProtocolError:
        return
    assert isinstance(out, Batch) and out.packed
    assert sum(len(f) for p in out.parts for f in p) == len(blob)
    for part in out.parts:  # what a receiver does next: decode each part
        try:
            decode(list(part))
        except ProtocolError:
            pass


@given(st.lists(st.lists(st.binary(max_size=30), min_size=2, max_size=3), max_size=8))
def test_well_framed_packed_batches_of_any_bytes_decode_part_by_part(
        parts: list[list[bytes]]) -> None:
    """The index adds up, the contents are anything: the batch decodes into exactly
    those frames, and each part then only ever raises ProtocolError (or is a message)."""
    frames = [PACKED_HEAD, msgpack.packb([[len(f) for f in p] for p in parts]),
              b"".join(f for p in parts for f in p)]
    heads = (VERSION + bytes([Cmd.BATCH]), PACKED_HEAD)
    if any(p[0] in heads for p in parts):
        with pytest.raises(ProtocolError):
            decode(frames)
        return
    out = decode(frames)
    assert isinstance(out, Batch) and [list(p) for p in out.parts] == parts
    for part in out.parts:
        try:
            decode(list(part))
        except ProtocolError:
            pass
