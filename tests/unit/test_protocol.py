"""The worker protocol codec: every message round-trips; hostile frames only ever
raise ProtocolError."""

from __future__ import annotations

import dataclasses
import math
import re

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from node import protocol
from node.protocol import (
    SCHEMA,
    VERSION,
    Abort,
    Batch,
    BodyMsg,
    Cancel,
    Cmd,
    Credit,
    Disconnect,
    Heartbeat,
    Limits,
    Message,
    ProtocolError,
    Ready,
    Reply,
    RequestMsg,
    _headers,
    _reply_fields,
    _request_fields,
    check_fields,
    decode,
    encode,
    encode_by_schema,
    salvage_id,
)

ids = st.integers(0, 2**63 - 1)
token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789-_.!#"),
                min_size=1, max_size=30)
value = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                max_size=60)
visible = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)
headers = st.lists(st.tuples(token, value), max_size=12).map(tuple)
service = st.text(st.sampled_from("abcxyz019_.-"), min_size=1, max_size=20)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ready, st.lists(service, min_size=1, max_size=5).map(tuple),
              st.integers(0, 100_000), value, st.integers(0, 2**31)),
    st.just(Heartbeat()),
    st.builds(RequestMsg, ids, visible, visible, headers,
              st.floats(0, 604800, allow_nan=False), st.sampled_from(["http", "https"]),
              st.sampled_from(["", "example.com:8080"]), st.sampled_from(["", "10.0.0.1"]),
              value, st.booleans(), st.binary(max_size=300)),
    st.builds(BodyMsg, ids, st.booleans(), st.binary(max_size=300)),
    st.builds(Credit, ids, st.integers(1, 65536)),
    st.builds(Reply, ids, st.integers(100, 599), headers, st.booleans(), st.binary(max_size=300)),
    st.builds(Cancel, ids),
    st.just(Disconnect()),
    st.builds(Abort, ids, value),
)


@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def test_body_travels_as_its_own_frame() -> None:
    body = b"x" * 100_000
    frames = encode(Reply(7, 200, (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")), False, body))
    assert frames[0] == VERSION + bytes([Cmd.REPLY]) and frames[2] is body
    assert len(frames[1]) < 100
    assert decode(frames).headers == (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))  # type: ignore[union-attr]


@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_frames_raise_only_protocol_error(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except ProtocolError:
        pass


@given(messages, st.data())
def test_mutated_frames_raise_only_protocol_error(msg: Message, data: st.DataObject) -> None:
    frames = encode(msg)
    i = data.draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[i])
    for _ in range(data.draw(st.integers(1, 4))):
        if frame and data.draw(st.booleans()):
            frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
        else:
            frame = frame[: data.draw(st.integers(0, len(frame)))]
    frames[i] = bytes(frame)
    try:
        out = decode(frames)
    except ProtocolError:
        return
    assert type(out).CMD in Cmd  # a mutation may still decode to some valid message


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | st.text(max_size=8))


@given(st.recursive(scalars, lambda c: st.lists(c, max_size=4), max_leaves=30),
       st.sampled_from(list(Cmd)))
def test_any_msgpack_metadata_raises_only_protocol_error(meta: object, cmd: Cmd) -> None:
    frames = [VERSION + bytes([cmd]), msgpack.packb(meta), b""]
    for n in (2, 3):
        try:
            decode(frames[:n])
        except ProtocolError:
            pass


BAD = [
    ("version", [b"S0W9\x02", msgpack.packb([])]),
    ("unknown command", [VERSION + b"\xff", msgpack.packb([])]),
    ("too many frames", [VERSION + b"\x02", msgpack.packb([]), b"", b""]),
    ("body on heartbeat", [VERSION + b"\x02", msgpack.packb([]), b"x"]),
    ("deep nesting", [VERSION + b"\x07", b"\x91" * 5000 + b"\x00"]),
    ("huge array header", [VERSION + b"\x07", b"\xdd\xff\xff\xff\xff"]),
    ("map", [VERSION + b"\x07", msgpack.packb({"id": 1})]),
    ("bool as int", [VERSION + b"\x07", msgpack.packb([True])]),
    ("negative id", [VERSION + b"\x07", msgpack.packb([-1])]),
    ("header injection", encode(Reply(1, 200, (("X", "a\r\nSet-Cookie: evil"),)))),
    ("bad header name", encode(Reply(1, 200, (("X Y", "a"),)))),
    ("status range", [VERSION + b"\x06", msgpack.packb([1, 99, [], False]), b""]),
    ("nan deadline", encode(RequestMsg(1, "GET", "/", (), float("nan")))),
    ("space in target", encode(RequestMsg(1, "GET", "/a b", (), 1.0))),
    ("ext type", [VERSION + b"\x07", msgpack.packb([msgpack.ExtType(1, b"x")])]),
    ("zero concurrency service list", encode(Ready((), 1))),
]


@pytest.mark.parametrize(("why", "frames"), BAD, ids=[b[0] for b in BAD])
def test_bad_frames_are_refused_with_a_reason(why: str, frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.reason


def test_limits_bound_headers_and_sizes() -> None:
    small = Limits(max_headers=2, max_meta=10_000, max_body_frame=10)
    many = Reply(1, 200, (("A", "1"), ("B", "2"), ("C", "3")))
    with pytest.raises(ProtocolError, match="header"):
        decode(encode(many), small)
    with pytest.raises(ProtocolError, match="body frame"):
        decode(encode(BodyMsg(1, True, b"x" * 11)), small)
    with pytest.raises(ProtocolError, match="metadata longer"):
        decode(encode(Reply(1, 200, (("A", "v" * 10_001),))), small)


@given(st.lists(st.binary(max_size=80), max_size=4), st.sampled_from([Cmd.REPLY, Cmd.BODY]))
def test_salvage_id_never_raises(frames: list[bytes], cmd: Cmd) -> None:
    got = salvage_id([VERSION + bytes([cmd]), *frames[:2]])
    assert got is None or 0 <= got <= 2**63 - 1


def test_salvage_id_names_the_request_of_a_broken_reply() -> None:
    frames = encode(Reply(42, 200, (("X", "a\r\nb"),)))
    with pytest.raises(ProtocolError):
        decode(frames)
    assert salvage_id(frames) == 42
    assert salvage_id(encode(Cancel(42))) is None  # only replies from a worker count


def test_schema_lists_each_class_fields_in_their_own_order() -> None:
    """decode builds messages positionally from SCHEMA: the orders must agree."""
    for cls, fields, has_body in SCHEMA.values():
        if cls is Batch:
            continue
        own = [f.name for f in dataclasses.fields(cls)]
        assert own == [name for name, _ in fields] + (["body"] if has_body else []), cls


_HEADER_TEXT = st.one_of(st.sampled_from(["Host", "x-a", "a b", "a\nb", "v\r", "nul\x00", "\t",
                                          "", "é", "ok"]),
                         st.text(max_size=6))


@given(st.lists(st.one_of(_HEADER_TEXT, st.integers(0, 3)), max_size=10))
@example(["a\nb", "ok"])  # a LF inside a name must not pass for two names
@example(["Host", "a", "x-a", "b\r"])
def test_header_fields_accepted_exactly_when_each_one_is_valid(flat: list[object]) -> None:
    """The all-at-once check of header fields agrees with checking them one by one."""
    lim = Limits(max_header_bytes=40)
    one_by_one = (
        len(flat) % 2 == 0 and all(type(x) is str for x in flat)
        and all(re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", str(n)) for n in flat[0::2])
        and not any(c in str(x) for x in flat[1::2] for c in "\r\n\x00")
        and sum(len(str(x)) for x in flat) <= lim.max_header_bytes)
    try:
        got = _headers(flat, lim)
    except ProtocolError:
        assert not one_by_one
        return
    assert one_by_one and got == tuple(zip(flat[0::2], flat[1::2], strict=True))


def test_remembered_header_names_never_let_a_name_with_a_lf_pass_and_stay_bounded() -> None:
    """`_headers` remembers name lists that passed (joined, with their count): the same
    text from fewer names, one holding a LF, is still refused; the memo stays bounded."""
    lim = Limits()
    assert _headers(["a", "1", "b", "2"], lim) == (("a", "1"), ("b", "2"))
    assert protocol._NAMES_SEEN.get("a\nb") == 2
    for _ in range(2):
        with pytest.raises(ProtocolError, match="invalid header name"):
            _headers(["a\nb", "1"], lim)
    for i in range(3 * protocol._NAMES_SEEN_KEPT):
        _headers([f"x-{i}", "v"], lim)
        assert len(protocol._NAMES_SEEN) <= protocol._NAMES_SEEN_KEPT
    long_name = "n" * (protocol._NAMES_SEEN_LONGEST + 1)
    assert _headers([long_name, "v"], Limits(max_header_bytes=4096)) == ((long_name, "v"),)
    assert long_name not in protocol._NAMES_SEEN  # checked, not kept


# -- the shortcuts for REQUEST and REPLY agree with the schema walk -------------------------
_ANY_FIELD = st.one_of(st.text(max_size=8), st.integers(-2, 2**64), st.booleans(), st.none(),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.lists(_HEADER_TEXT, max_size=6))
_LONG = "x" * 41  # over the test's max_str
# Per field: the near misses of its own rule, so each rule is broken often, alone or together.
_NEAR: dict[Cmd, list[list[object]]] = {
    Cmd.REQUEST: [
        [-1, 2**63, True, 1.0],  # id
        ["", "G T", "G\x00", "G\x7f", _LONG, 5],  # method
        ["", "/a b", "/\r", _LONG, b"/"],  # target
        [["a b", "x"], ["a"], ["x", "\r"], ["a\nb", "x"], "s", [1, 2], ["x", _LONG * 6]],
        [-1, -0.0, 604800, 604800.5, math.nan, math.inf, True, "1"],  # deadline
        ["a b", "\x7f", "\t", 1, None, _LONG],  # scheme
        ["a b", "\x7f", 1, None, _LONG],  # host
        ["a b", "\x7f", 1, None, _LONG],  # client
        ["a\r", "\x00", "a b", _LONG, 1],  # request_id: spaces are fine, controls are not
        [0, 1, None, "true"],  # more
    ],
    Cmd.REPLY: [
        [-1, 2**63, True, 1.0],
        [99, 600, 200.0, True, "200"],
        [["a b", "x"], ["a"], ["x", "\r"], "s", [1, 2], ["x", _LONG * 6]],
        [0, 1, None],
    ],
}


def _mutated(cmd: Cmd, meta: list[object], data: st.DataObject) -> list[object]:
    out = list(meta)
    for i, near in enumerate(_NEAR[cmd]):
        how = data.draw(st.integers(0, 5))
        if how == 4:
            out[i] = data.draw(st.sampled_from(near))
        elif how == 5:
            out[i] = data.draw(_ANY_FIELD)
    return out


_REQUEST_META = st.tuples(ids, visible, visible, headers, st.floats(0, 604800), st.booleans())


@given(_REQUEST_META, st.data())
def test_request_shortcut_agrees_with_the_schema_walk(
        valid: tuple[int, str, str, tuple[tuple[str, str], ...], float, bool],
        data: st.DataObject) -> None:
    """Valid metadata with fields swapped for near misses or arbitrary values: the
    shortcut accepts exactly what check_fields accepts, with the same values, and leaves
    the rest to the walk (which says what is wrong)."""
    rid, method, target, hdrs, deadline, more = valid
    meta: list[object] = [rid, method, target, [x for p in hdrs for x in p], deadline, "http",
                          "h", "c", "r 1", more]
    _agree(Cmd.REQUEST, _request_fields, _mutated(Cmd.REQUEST, meta, data))


@given(ids, st.integers(100, 599), headers, st.booleans(), st.data())
def test_reply_shortcut_agrees_with_the_schema_walk(
        rid: int, status: int, hdrs: tuple[tuple[str, str], ...], more: bool,
        data: st.DataObject) -> None:
    meta: list[object] = [rid, status, [x for p in hdrs for x in p], more]
    _agree(Cmd.REPLY, _reply_fields, _mutated(Cmd.REPLY, meta, data))


_VALID = {Cmd.REQUEST: [7, "GET", "/x", ["Host", "h"], 2, "http", "h", "c", "r 1", True],
          Cmd.REPLY: [7, 200, ["Host", "h"], True]}
_SHORTCUT = {Cmd.REQUEST: _request_fields, Cmd.REPLY: _reply_fields}


@pytest.mark.parametrize(("cmd", "field", "bad"), [
    (cmd, field, bad) for cmd, table in _NEAR.items()
    for field, near in enumerate(table) for bad in near])
def test_each_near_miss_alone_is_judged_as_the_schema_walk_judges_it(
        cmd: Cmd, field: int, bad: object) -> None:
    meta = list(_VALID[cmd])
    meta[field] = bad
    _agree(cmd, _SHORTCUT[cmd], meta)


def _agree(cmd: Cmd, shortcut: object, meta: list[object]) -> None:
    lim = Limits(max_str=40, max_header_bytes=200)
    got = shortcut(meta, lim)  # type: ignore[operator]
    try:
        want = check_fields(cmd, meta, lim)
    except ProtocolError:
        assert got is None
        return
    assert got is not None
    assert got == want
    assert [type(x) for x in got] == [type(x) for x in want]  # float(deadline), not an int


@given(messages)
def test_encode_shortcuts_write_the_schema_walks_bytes(msg: Message) -> None:
    assert encode(msg) == encode_by_schema(msg)
