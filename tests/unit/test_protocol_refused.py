"""protocol.salvage_id on REQUESTs: the id of one `decode` refused, read defensively, so a
worker whose limits refuse a request answers it at once instead of dropping it."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol import (
    MAX_ID,
    Cmd,
    Limits,
    ProtocolError,
    Reply,
    RequestMsg,
    decode,
    encode,
    salvage_id,
)

ids = st.integers(0, MAX_ID)
REQUESTS = (Cmd.REQUEST,)
REQUEST_HEAD = encode(RequestMsg(0, "GET", "/", (), 1.0, "http", "h", "", "", False, b""))[0]


def request(rid: int, headers: tuple[tuple[str, str], ...] = (("Host", "h"),)) -> list[bytes]:
    return encode(RequestMsg(rid, "GET", "/x", headers, 5.0, "http", "h", "10.0.0.1", "r",
                             False, b""))


@given(st.lists(st.binary(max_size=80), max_size=4))
def test_any_frames_give_an_id_or_none_and_never_raise(frames: list[bytes]) -> None:
    got = salvage_id(frames, REQUESTS)
    assert got is None or (type(got) is int and 0 <= got <= MAX_ID)


@given(ids, st.binary(max_size=60))
def test_any_metadata_after_a_request_head_never_raises(rid: int, junk: bytes) -> None:
    meta = request(rid)[1]
    for cut in (meta[:1], meta[:len(meta) // 2], junk, meta[:3] + junk):
        got = salvage_id([REQUEST_HEAD, cut, b""], REQUESTS)
        assert got is None or 0 <= got <= MAX_ID


@given(ids)
def test_the_id_of_a_request_a_workers_limits_refuse(rid: int) -> None:
    tight = Limits(max_header_bytes=100)
    frames = request(rid, (("X-Big", "v" * 300),))
    with pytest.raises(ProtocolError):
        decode(frames, tight)
    assert salvage_id(frames, REQUESTS) == rid


@given(ids)
def test_metadata_over_max_meta_still_names_its_request(rid: int) -> None:
    frames = request(rid, (("X-Big", "v" * 2000),))
    with pytest.raises(ProtocolError):
        decode(frames, Limits(max_meta=512))
    assert salvage_id(frames, REQUESTS) == rid


@given(ids)
def test_only_the_kinds_asked_for_are_named(rid: int) -> None:
    assert salvage_id(request(rid)) is None  # the node never salvages a REQUEST
    assert salvage_id(encode(Reply(rid, 200, (), False, b"")), REQUESTS) is None
    assert salvage_id([REQUEST_HEAD, msgpack.packb(["7", *range(9)]), b""], REQUESTS) is None
    assert salvage_id([REQUEST_HEAD, msgpack.packb([-1, *range(9)]), b""], REQUESTS) is None


def test_decode_names_the_limit_a_request_broke_and_never_shows_its_data() -> None:
    frames = request(7, (("X-Big", "v" * 300),))
    with pytest.raises(ProtocolError) as info:
        decode(frames, Limits(max_str=200))
    assert "exceeds max_str_len(200)" in info.value.reason
    extra = [frames[0], frames[1] + msgpack.packb("secret-token"), b""]
    with pytest.raises(ProtocolError) as info:
        decode(extra)
    assert "secret" not in info.value.reason


@given(st.lists(st.tuples(st.sampled_from(["Host", "X-A", "Via"]),
                          st.text(st.characters(blacklist_characters="\r\n\x00",
                                                blacklist_categories=("Cs",)), max_size=8)),
                min_size=1, max_size=5),
       st.data())
def test_a_header_value_with_cr_lf_or_nul_is_refused_in_a_request_and_a_reply(
        fields: list[tuple[str, str]], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(fields) - 1))
    name, value = fields[i]
    at = data.draw(st.integers(0, len(value)))
    bad = data.draw(st.sampled_from(["\r", "\n", "\x00"]))
    fields[i] = (name, value[:at] + bad + value[at:])
    for frames in (request(1, tuple(fields)), encode(Reply(1, 200, tuple(fields), False, b""))):
        with pytest.raises(ProtocolError):
            decode(frames)
