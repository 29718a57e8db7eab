"""The worker ⇄ node wire protocol, written once as data, with its one codec.

A message is 2 or 3 ZeroMQ frames (the ROUTER adds the worker's identity in
front on the node side):

    [VERSION + command byte, msgpack metadata array, body?]

(the version tag and the command share a frame: every frame costs a syscall-ish
zmq_send, and the hot path sends four fewer per request and reply).

The metadata is a msgpack *array* whose positions are the fields listed in
`SCHEMA` for the command (arrays, not maps: smaller and faster to check). The
body of REQUEST, BODY and REPLY travels as its own frame, never copied into
msgpack. Flow control is credit based: whoever reads a streamed body grants
the sender chunks with CREDIT (an initial window, then one per chunk read);
the sender never has more chunks in flight than it was granted.

Every inbound frame is untrusted: `decode` bounds frame count, metadata size,
msgpack lengths and nesting, then checks the schema (types, ranges, header
syntax). Anything else raises `ProtocolError` with a reason — nothing else.

Command ids: only ever append to `Cmd`; a changed meaning needs a new VERSION.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final

import msgpack  # type: ignore[import-untyped]

VERSION: Final = b"S0W1"


class ProtocolError(Exception):
    """The peer (a worker or the node) sent frames we cannot accept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Cmd(IntEnum):
    """Command ids. Only append to this list."""

    READY = 1  # worker → node: join, or change its offer
    HEARTBEAT = 2  # both ways
    REQUEST = 3  # node → worker, + body frame
    BODY = 4  # both ways: a streamed body's next chunk, + chunk frame
    CREDIT = 5  # both ways: the reader grants more chunks
    REPLY = 6  # worker → node, + body frame
    CANCEL = 7  # node → worker: client gone or deadline passed
    DISCONNECT = 8  # worker → node: draining (a second one: gone, in-flight unanswered);
    #                node → worker: unknown, please re-register
    ABORT = 9  # worker → node: a streamed reply failed midway; the client must see it broken
    BATCH = 10  # both ways: several messages in one zmq message (see `encode_batch`)
    PACKED = 11  # both ways: a BATCH whose messages' frames share one frame (`encode_packed`)


@dataclass(frozen=True, slots=True)
class Limits:
    """What `decode` accepts at most. Defaults fit any sane HTTP request."""

    max_meta: int = 128 * 1024  # bytes of msgpack metadata
    # One string (a target, a header value): as long as the whole header budget, so any
    # request head the node's front accepts ([limits] max_header_size, at most
    # max_header_bytes) reaches the worker; a longer value was dropped by the worker as a
    # malformed frame and its request waited for its deadline (504).
    max_str: int = 96 * 1024
    max_headers: int = 24 * 1024  # header fields: all a 96 KiB head can hold (4 bytes each)
    max_header_bytes: int = 96 * 1024  # sum of header names and values
    max_services: int = 64
    max_body_frame: int = 16 * 1024 * 1024  # one body frame
    max_batch: int = 256  # messages in one BATCH


DEFAULT_LIMITS: Final = Limits()
HeaderList = tuple[tuple[str, str], ...]


class _Command:
    """What every message has: its command, `CMD`, a class attribute set below each class.

    Not `CMD: ClassVar[Cmd] = ...` in each dataclass: compiled (mypyc, `make compiled`),
    a ClassVar in a dataclass's body is taken for a field."""

    __slots__ = ()
    CMD: ClassVar[Cmd]


# Messages are values nobody changes, but not frozen: a frozen dataclass's __init__ sets
# every field through object.__setattr__, 2.2 µs for a REQUEST against 0.24 µs — and a
# round trip builds four of them. Those of every round trip and streamed chunk write their
# __init__ out (init=False): mypyc leaves the one dataclasses generates interpreted
# (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True)
class Ready(_Command):
    services: tuple[str, ...]
    concurrency: int
    name: str = ""
    pid: int = 0


@dataclass(slots=True)
class Heartbeat(_Command):
    pass


@dataclass(slots=True, init=False)
class RequestMsg(_Command):
    id: int
    method: str
    target: str
    headers: HeaderList
    deadline: float  # seconds remaining when sent
    scheme: str
    host: str
    client: str
    request_id: str
    more: bool  # BODY frames follow
    body: bytes

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, id: int, method: str, target: str, headers: HeaderList, deadline: float,
        scheme: str = "http", host: str = "", client: str = "", request_id: str = "",
        more: bool = False, body: bytes = b"",
    ) -> None:
        self.id = id
        self.method = method
        self.target = target
        self.headers = headers
        self.deadline = deadline
        self.scheme = scheme
        self.host = host
        self.client = client
        self.request_id = request_id
        self.more = more
        self.body = body


@dataclass(slots=True, init=False)
class BodyMsg(_Command):
    id: int
    more: bool
    body: bytes

    def __init__(self, id: int, more: bool, body: bytes = b"") -> None:
        self.id = id
        self.more = more
        self.body = body


@dataclass(slots=True, init=False)
class Credit(_Command):
    id: int
    chunks: int

    def __init__(self, id: int, chunks: int) -> None:
        self.id = id
        self.chunks = chunks


@dataclass(slots=True, init=False)
class Reply(_Command):
    id: int
    status: int
    headers: HeaderList
    more: bool
    body: bytes

    def __init__(self, id: int, status: int, headers: HeaderList, more: bool = False,
                 body: bytes = b"") -> None:
        self.id = id
        self.status = status
        self.headers = headers
        self.more = more
        self.body = body


@dataclass(slots=True)
class Cancel(_Command):
    id: int


@dataclass(slots=True)
class Disconnect(_Command):
    pass


@dataclass(slots=True)
class Abort(_Command):
    id: int
    reason: str = ""


@dataclass(slots=True, init=False)
class Batch(_Command):
    """Undecoded messages (each one's frames) carried in one zmq message.

    Why: every zmq message a process sends wakes libzmq's I/O thread, which wakes
    the peer's; with 50 requests in flight that signalling was most of the cost of
    a round trip. A batch of n is one wake-up. No parts = "I accept batches": a
    peer sends BATCH only after the other side said so, so peers that predate
    BATCH never see one (an old node logs the announcement once as malformed).
    PACKED is the same with every frame in one (`packed`), announced the same way
    and sent only to a peer that announced it; older peers only ever get BATCH."""

    parts: tuple[tuple[bytes, ...], ...]
    packed: bool  # came as PACKED (no parts: the peer accepts PACKED)

    def __init__(self, parts: tuple[tuple[bytes, ...], ...] = (), packed: bool = False) -> None:
        self.parts = parts
        self.packed = packed


Message = (Batch | Abort | Ready | Heartbeat | RequestMsg | BodyMsg | Credit | Reply | Cancel
           | Disconnect)
Ready.CMD, Heartbeat.CMD, RequestMsg.CMD = Cmd.READY, Cmd.HEARTBEAT, Cmd.REQUEST
BodyMsg.CMD, Credit.CMD, Reply.CMD, Cancel.CMD = Cmd.BODY, Cmd.CREDIT, Cmd.REPLY, Cmd.CANCEL
Disconnect.CMD, Abort.CMD, Batch.CMD = Cmd.DISCONNECT, Cmd.ABORT, Cmd.BATCH

# -- field checkers: (value, limits) -> value, or raise ProtocolError ------------
Check = Callable[[Any, Limits], Any]
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TOKENS: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_BAD_VALUE: Final = re.compile(r"[\x00\r\n]")
# Header-name lists that passed `_headers`' check, joined, with how many names they were: a
# worker (or node) sends the same few lists again and again, and the regex and the count
# are half the check's cost. Bounded in entries and in each entry's length.
_NAMES_SEEN: Final[dict[str, int]] = {}
_NAMES_SEEN_KEPT: Final = 256
_NAMES_SEEN_LONGEST: Final = 1024
_BAD_TEXT: Final = re.compile(r"[\x00-\x1f\x7f ]")  # methods, targets: no controls, no spaces
MAX_ID: Final = 2**63 - 1
_MAX_SECONDS: Final = 86400 * 7  # the longest deadline a peer may ask for


def _int(lo: int, hi: int) -> Check:
    def check(v: Any, _: Limits) -> int:
        if type(v) is not int or not lo <= v <= hi:
            raise ProtocolError(f"expected an integer in [{lo}, {hi}], got {_show(v)}")
        return v

    return check


def _str(pattern: re.Pattern[str] | None = None, allow_empty: bool = True) -> Check:
    def check(v: Any, lim: Limits) -> str:
        if type(v) is not str or len(v) > lim.max_str:
            raise ProtocolError(f"expected a string of at most {lim.max_str} chars")
        if not v and not allow_empty:
            raise ProtocolError("expected a non-empty string")
        if v and pattern is not None and pattern.search(v):
            raise ProtocolError(f"string has forbidden characters: {v[:40]!r}")
        return v

    return check


def _bool(v: Any, _: Limits) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"expected a boolean, got {_show(v)}")
    return v


def _seconds(v: Any, _: Limits) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not 0 <= v <= _MAX_SECONDS:
        raise ProtocolError(f"expected seconds in [0, 604800], got {_show(v)}")
    return float(v)


def _services(v: Any, lim: Limits) -> tuple[str, ...]:
    if type(v) is not list or not 1 <= len(v) <= lim.max_services:
        raise ProtocolError(f"expected 1..{lim.max_services} service names")
    names = tuple(_SERVICE(s, lim) for s in v)
    return names


def _headers(v: Any, lim: Limits) -> HeaderList:
    # Flat [name, value, name, value, ...]: half the msgpack objects of pairs.
    if type(v) is not list or len(v) % 2 or len(v) > 2 * lim.max_headers:
        raise ProtocolError(f"expected a flat list of at most {lim.max_headers} header fields")
    # Every field at once (a regex over all names, one over all values); the loop below
    # runs only to say which field is wrong. A tab cannot hide a CR, LF or NUL.
    names, values = v[0::2], v[1::2]
    try:
        joined = "\n".join(names)  # a name holding a LF would pass as two: counted
        joined_values = "\t".join(values)
        count = len(names)
        names_ok = _NAMES_SEEN.get(joined) == count
        if (not names_ok and _TOKENS.fullmatch(joined) is not None
                and joined.count("\n") == count - 1):
            names_ok = True
            if len(joined) <= _NAMES_SEEN_LONGEST:
                if len(_NAMES_SEEN) >= _NAMES_SEEN_KEPT:
                    _NAMES_SEEN.clear()
                _NAMES_SEEN[joined] = count
        if (names_ok
                # three C scans: a tenth of the regex's cost over a browser's values
                and "\r" not in joined_values and "\n" not in joined_values
                and "\x00" not in joined_values
                # the fields' length: both joins less their separators
                and len(joined) + len(joined_values) + 2 - len(v) <= lim.max_header_bytes):
            # len(v) is even: pairs. No strict= (a keyword makes zip parse its arguments
            # the slow way, a tenth of this function).
            return tuple(zip(names, values))  # noqa: B905
    except TypeError:
        pass  # a name or value that is not a string: the loop says so
    total = 0
    out: list[tuple[str, str]] = []
    for i in range(0, len(v), 2):
        name, value = v[i], v[i + 1]
        if type(name) is not str or type(value) is not str:
            raise ProtocolError("header names and values must be strings")
        if not _TOKEN.match(name):
            raise ProtocolError(f"invalid header name {name[:40]!r}")
        if _BAD_VALUE.search(value):
            raise ProtocolError(f"header {name[:40]!r} has a CR, LF or NUL in its value")
        total += len(name) + len(value)
        if total > lim.max_header_bytes:
            raise ProtocolError(f"headers longer than {lim.max_header_bytes} bytes")
        out.append((name, value))
    return tuple(out)


def _show(v: Any) -> str:
    return type(v).__name__ if not isinstance(v, int | float) else repr(v)[:24]


_OVER_LIMIT: Final = re.compile(r"[0-9]{1,12} exceeds max_[a-z]{1,8}_len\([0-9]{1,12}\)")
_SERVICE = _str(re.compile(r"[^A-Za-z0-9_.\-]"), allow_empty=False)
_ID = _int(0, MAX_ID)

# -- the protocol as data: command -> (class, [(field, check)], has_body) --------
SCHEMA: dict[Cmd, tuple[type[Any], tuple[tuple[str, Check], ...], bool]] = {
    Cmd.READY: (
        Ready,
        (("services", _services), ("concurrency", _int(0, 100_000)), ("name", _str(_BAD_VALUE)),
         ("pid", _int(0, 2**31))),
        False,
    ),
    Cmd.HEARTBEAT: (Heartbeat, (), False),
    Cmd.REQUEST: (
        RequestMsg,
        (("id", _ID), ("method", _str(_BAD_TEXT, allow_empty=False)),
         ("target", _str(_BAD_TEXT, allow_empty=False)), ("headers", _headers),
         ("deadline", _seconds), ("scheme", _str(_BAD_TEXT)), ("host", _str(_BAD_TEXT)),
         ("client", _str(_BAD_TEXT)), ("request_id", _str(_BAD_VALUE)), ("more", _bool)),
        True,
    ),
    Cmd.BODY: (BodyMsg, (("id", _ID), ("more", _bool)), True),
    Cmd.CREDIT: (Credit, (("id", _ID), ("chunks", _int(1, 1 << 16))), False),
    Cmd.REPLY: (
        Reply,
        (("id", _ID), ("status", _int(100, 599)), ("headers", _headers), ("more", _bool)),
        True,
    ),
    Cmd.CANCEL: (Cancel, (("id", _ID),), False),
    Cmd.DISCONNECT: (Disconnect, (), False),
    Cmd.ABORT: (Abort, (("id", _ID), ("reason", _str(_BAD_VALUE))), False),
    Cmd.BATCH: (Batch, (), False),  # its own layout: encode_batch / _decode_batch
    Cmd.PACKED: (Batch, (), False),  # its own layout: encode_packed / _decode_packed
}
_HEADS: Final = {cmd: VERSION + bytes([cmd]) for cmd in Cmd}
_BY_HEAD: Final = {head: cmd for cmd, head in _HEADS.items()}
_REQUEST_HEAD: Final = _HEADS[Cmd.REQUEST]
_REPLY_HEAD: Final = _HEADS[Cmd.REPLY]
_PACKED_HEAD: Final = _HEADS[Cmd.PACKED]
# One Packer for the process: msgpack.packb is a Python function that builds a new Packer
# per call. Sharing it is safe: pack() resets its buffer after each value (and after a
# failed one), and for the plain values packed here it never lets go of the GIL.
_packb: Final = msgpack.Packer().pack


def _flat(headers: HeaderList) -> list[str]:
    """[name, value, name, value, ...]: a compiled loop (list(chain.from_iterable(...))
    walks every pair through the iterator protocol, a quarter of a REQUEST's encoding)."""
    flat: list[str] = []
    for name, value in headers:
        flat.append(name)
        flat.append(value)
    return flat


def encode(msg: Message) -> list[bytes]:
    """The frames of `msg` (without a ROUTER identity)."""
    kind = type(msg)
    # The two messages of every round trip skip the schema walk (getattr per field):
    # 2.3 → 1.1 µs a REQUEST here. test_protocol holds them to the walk's bytes.
    if kind is RequestMsg:
        rq: RequestMsg = msg  # type: ignore[assignment]
        return [_REQUEST_HEAD, _packb([rq.id, rq.method, rq.target, _flat(rq.headers),
                                       rq.deadline, rq.scheme, rq.host, rq.client,
                                       rq.request_id, rq.more]), rq.body]
    if kind is Reply:
        rp: Reply = msg  # type: ignore[assignment]
        return [_REPLY_HEAD, _packb([rp.id, rp.status, _flat(rp.headers), rp.more]),
                rp.body]
    return encode_by_schema(msg)


def encode_by_schema(msg: Message) -> list[bytes]:
    """`encode` for any message, walking SCHEMA (the reference the shortcuts agree with)."""
    if type(msg) is Batch:
        encoder = encode_packed if msg.packed else encode_batch
        return encoder([list(p) for p in msg.parts])
    _, fields, has_body = SCHEMA[msg.CMD]
    meta = [
        _flat(getattr(msg, name)) if name == "headers" else getattr(msg, name)
        for name, _ in fields
    ]
    if msg.CMD is Cmd.READY:
        meta[0] = list(meta[0])
    frames = [_HEADS[msg.CMD], _packb(meta)]
    if has_body:
        frames.append(msg.body)  # type: ignore[union-attr]
    return frames


def encode_batch(messages: Sequence[Sequence[bytes]]) -> list[bytes]:
    """One BATCH holding already-encoded `messages` (none: the announcement).

    Frames: [VERSION+BATCH, msgpack array of each message's frame count, then
    every message's frames in order]. Bodies stay frames of their own (no copy)."""
    frames = [_HEADS[Cmd.BATCH], _packb([len(m) for m in messages])]
    for m in messages:
        frames.extend(m)
    return frames


# A frame of PACKED's blob at least this long makes its batch go as BATCH instead: large
# bodies keep their own zero-copy frames rather than being copied into the blob and out.
PACK_BELOW: Final = 16 * 1024


def packable(messages: Sequence[Sequence[bytes]]) -> bool:
    """Whether `messages` may go as one PACKED (every frame small)."""
    return all(len(f) < PACK_BELOW for m in messages for f in m)


def encode_packed(messages: Sequence[Sequence[bytes]]) -> list[bytes]:
    """One PACKED holding already-encoded `messages` (none: the announcement).

    Frames: [VERSION+PACKED, msgpack array of each message's frame lengths, every
    frame of every message concatenated in order]. Three zmq frames whatever n:
    each frame costs a send, a receive and the I/O threads' framing on both sides,
    and a batch of 20 replies was 42 frames. For small frames only (`packable`)."""
    return [_HEADS[Cmd.PACKED], _packb([[len(f) for f in m] for m in messages]),
            b"".join(f for m in messages for f in m)]


def _decode_packed(frames: Sequence[bytes], limits: Limits) -> Batch:
    if len(frames) != 3:
        raise ProtocolError(f"PACKED takes 3 frames, got {len(frames)}")
    index, blob = frames[1], frames[2]
    if len(index) > limits.max_meta:
        raise ProtocolError(f"metadata longer than {limits.max_meta} bytes")
    try:
        lengths = msgpack.unpackb(index, use_list=True, max_str_len=0, max_bin_len=0,
                                  max_array_len=limits.max_batch, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        raise ProtocolError(f"PACKED: bad frame lengths: {type(exc).__name__}") from None
    if type(lengths) is not list or not all(
            type(m) is list and 2 <= len(m) <= 3 and all(type(n) is int and n >= 0 for n in m)
            for m in lengths):
        raise ProtocolError(f"PACKED: expected at most {limits.max_batch} messages of 2 or 3 "
                            "frame lengths")
    total = sum(n for m in lengths for n in m)
    if total != len(blob):
        raise ProtocolError(f"PACKED: lengths add up to {total} bytes, {len(blob)} came")
    blob = blob if type(blob) is bytes else bytes(blob)
    heads = (_HEADS[Cmd.BATCH], _HEADS[Cmd.PACKED])
    parts: list[tuple[bytes, ...]] = []
    pos = 0
    for m in lengths:
        part = []
        for n in m:
            part.append(blob[pos:pos + n])
            pos += n
        if part[0] in heads:
            raise ProtocolError("a batch inside a PACKED")
        parts.append(tuple(part))
    return Batch(tuple(parts), packed=True)


def _decode_batch(frames: Sequence[bytes], limits: Limits) -> Batch:
    try:
        counts = msgpack.unpackb(frames[1], use_list=True, max_str_len=0, max_bin_len=0,
                                 max_array_len=limits.max_batch, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        raise ProtocolError(f"BATCH: bad frame counts: {type(exc).__name__}") from None
    if type(counts) is not list or not all(type(c) is int and 2 <= c <= 3 for c in counts):
        raise ProtocolError(f"BATCH: expected at most {limits.max_batch} frame counts of 2 or 3")
    if sum(counts) != len(frames) - 2:
        raise ProtocolError(f"BATCH: counts add up to {sum(counts)} frames, "
                            f"{len(frames) - 2} came")
    parts: list[tuple[bytes, ...]] = []
    pos = 2
    heads = (_HEADS[Cmd.BATCH], _HEADS[Cmd.PACKED])
    for c in counts:
        part = tuple(f if type(f) is bytes else bytes(f) for f in frames[pos:pos + c])
        if part[0] in heads:
            raise ProtocolError("a batch inside a BATCH")
        parts.append(part)
        pos += c
    return Batch(tuple(parts))


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def decode(frames: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> Message:
    """The message in `frames`, or ProtocolError saying why not.

    A BATCH comes back as `Batch` with its parts undecoded: decode each in turn."""
    if len(frames) >= 2 and frames[0] == _HEADS[Cmd.BATCH]:
        if len(frames) > 2 + 3 * limits.max_batch:
            raise ProtocolError(f"BATCH of more than {limits.max_batch} messages")
        if len(frames[1]) > limits.max_meta:
            raise ProtocolError(f"metadata longer than {limits.max_meta} bytes")
        return _decode_batch(frames, limits)
    if frames and frames[0] == _PACKED_HEAD:
        return _decode_packed(frames, limits)
    if not 2 <= len(frames) <= 3:
        raise ProtocolError(f"expected 2 or 3 frames, got {len(frames)}")
    head, meta_frame = frames[0], frames[1]
    cmd = _BY_HEAD.get(head if type(head) is bytes else bytes(head))
    if cmd is None:
        if len(head) != len(VERSION) + 1 or head[: len(VERSION)] != VERSION:
            raise ProtocolError(f"unknown protocol version {bytes(head[:8])!r}")
        raise ProtocolError(f"unknown command {head[-1]}")
    cls, fields, has_body = SCHEMA[cmd]
    if len(frames) != 2 + has_body:
        raise ProtocolError(f"{cmd.name} takes {2 + has_body} frames, got {len(frames)}")
    if len(meta_frame) > limits.max_meta:
        raise ProtocolError(f"metadata longer than {limits.max_meta} bytes")
    try:
        meta = msgpack.unpackb(
            meta_frame,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_str_len=limits.max_str,
            max_bin_len=0,
            max_array_len=max(2 * limits.max_headers, 16),
            max_map_len=0,
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        # Only a limit's own message is shown ("N exceeds max_str_len(M)"): others, such as
        # ExtraData's, would carry the data itself.
        over = _OVER_LIMIT.fullmatch(str(exc)) if type(exc) is ValueError else None
        detail = f" ({over.group()})" if over else ""
        raise ProtocolError(f"bad msgpack metadata: {type(exc).__name__}{detail}") from None
    if type(meta) is not list or len(meta) != len(fields):
        raise ProtocolError(f"{cmd.name} metadata must be an array of {len(fields)} fields")
    shortcut = _SHORTCUTS.get(cmd)
    values = shortcut(meta, limits) if shortcut is not None else None
    if values is None:
        values = check_fields(cmd, meta, limits)
    if has_body:
        body = frames[2]
        if len(body) > limits.max_body_frame:
            raise ProtocolError(f"body frame longer than {limits.max_body_frame} bytes")
        values.append(body if type(body) is bytes else bytes(body))
    return cls(*values)  # type: ignore[no-any-return]


def check_fields(cmd: Cmd, meta: list[Any], limits: Limits) -> list[Any]:
    """The checked field values of `cmd` from its metadata array, walking SCHEMA.

    Positional, in SCHEMA's order (each class's own field order, body last; a unit test
    holds them equal): no dict of keyword arguments per message. Raises ProtocolError
    naming the first bad field."""
    values: list[Any] = []
    for (name, check), value in zip(SCHEMA[cmd][1], meta, strict=True):
        try:
            values.append(check(value, limits))
        except ProtocolError as exc:
            raise ProtocolError(f"{cmd.name}.{name}: {exc.reason}") from None
    return values


# -- shortcuts for the two messages of every round trip -------------------------------
# The schema walk calls one checker per field (ten for a REQUEST: 5.6 of its 6.3 µs
# here). These check the same rules in one expression and return the values, or None
# for anything they do not accept, which then goes through `check_fields` for the
# precise reason. test_protocol holds each to `check_fields` on arbitrary metadata.


def _plain_text(text: str) -> bool:
    """No control character and no space (what _BAD_TEXT refuses). One search over the
    five plain-text fields of a REQUEST at once: a single-character class matches the
    concatenation exactly when it matches one of them. Printable text without a space
    passes without the regex (a C scan, a third of its cost); other text (obs-text, a
    tab) goes to the regex, which decides."""
    if text.isprintable() and " " not in text:
        return True
    return _BAD_TEXT.search(text) is None


def _request_fields(m: list[Any], lim: Limits) -> list[Any] | None:
    id_, method, target, headers, deadline, scheme, host, client, request_id, more = m
    ms = lim.max_str
    if not (type(id_) is int and 0 <= id_ <= MAX_ID
            and type(method) is str and type(target) is str and type(scheme) is str
            and type(host) is str and type(client) is str and type(request_id) is str
            and method and target and type(more) is bool
            and (type(deadline) is float or type(deadline) is int)
            and 0 <= deadline <= _MAX_SECONDS  # also false for NaN; inf is above
            and len(method) <= ms and len(target) <= ms and len(scheme) <= ms
            and len(host) <= ms and len(client) <= ms and len(request_id) <= ms
            and _plain_text(method + target + scheme + host + client)
            and ("\r" not in request_id and "\n" not in request_id
                 and "\x00" not in request_id)):
        return None
    try:
        fields = _headers(headers, lim)
    except ProtocolError:
        return None
    return [id_, method, target, fields, float(deadline), scheme, host, client,
            request_id, more]


def _reply_fields(m: list[Any], lim: Limits) -> list[Any] | None:
    id_, status, headers, more = m
    if not (type(id_) is int and 0 <= id_ <= MAX_ID and type(status) is int
            and 100 <= status <= 599 and type(more) is bool):
        return None
    try:
        fields = _headers(headers, lim)
    except ProtocolError:
        return None
    return [id_, status, fields, more]


_SHORTCUTS: Final[dict[Cmd, Callable[[list[Any], Limits], list[Any] | None]]] = {
    Cmd.REQUEST: _request_fields,
    Cmd.REPLY: _reply_fields,
}


_FROM_WORKERS: Final = (Cmd.REPLY, Cmd.BODY, Cmd.ABORT)


def salvage_id(frames: Sequence[bytes], kinds: Sequence[Cmd] = _FROM_WORKERS) -> int | None:
    """The request id of an undecodable message of one of `kinds`, if it can still be read.

    Lets the node fail the one request a broken REPLY/BODY/ABORT belongs to at once (502)
    instead of at its deadline, and a worker answer a REQUEST its limits refuse (431)
    instead of dropping it. Never raises."""
    try:
        if len(frames) < 2 or _BY_HEAD.get(bytes(frames[0])) not in kinds:
            return None
        unpacker = msgpack.Unpacker(max_buffer_size=128, max_bin_len=0,
                                    max_map_len=0, max_ext_len=0)
        unpacker.feed(frames[1][:64])
        header = unpacker.read_array_header()
        first = unpacker.unpack() if header else None
    except Exception:
        return None
    return first if type(first) is int and 0 <= first <= MAX_ID else None
