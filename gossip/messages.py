"""Every gossip message as a frozen dataclass, and the one msgpack codec for them.

Wire format: one version byte, then a msgpack array ``[type_id, field, ...]``.
Fields travel positionally (no key names on the wire: beats go out every second
from every node, so bytes matter). Type ids are listed once, below, and only
ever appended to — like memberlist's ``net.go`` and Zyre's ``zre_msg``.

Every message carries ``sender`` (the publisher's member id) and ``seq``, a
per-publisher counter incremented on every message it publishes; a subscriber
that sees ``seq`` jump knows PUB/SUB dropped something (counted, not repaired).
Messages that must not be lost travel as ``Reliable`` envelopes with their own
contiguous ``rseq``; beats repeat the last ``rseq`` so a gap is noticed even when
nothing else follows, and is repaired with ``ResendRequest`` over the peer socket.

Decoding trusts nothing: size, msgpack lengths, nesting, counts and string lengths
are bounded, and the decoded value is checked against the schema. Anything wrong
raises ``DecodeError`` and nothing else — the shell counts it as a drop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack  # type: ignore[import-untyped]

from gossip.load import ServiceLoad

VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024  # a 1,000-member snapshot is ~100 KiB
MAX_STR: Final = 256  # ids, dc names, endpoints, service names, reliable kinds
MAX_PAYLOAD: Final = 1024 * 1024  # opaque Reliable payload (cache purges etc.)
MAX_NEWS: Final = 64  # news items in one Beat/Push
MAX_SERVICES: Final = 256  # services in one load report
MAX_MEMBERS: Final = 65_536  # members in one snapshot
MAX_INT: Final = 2**64 - 1  # msgpack uint64: digests use all 64 bits


class DecodeError(ValueError):
    """The bytes are not a valid Scale0 gossip message: the remote peer's fault.

    Upstream this is a counted (and rate-limited) drop, never a crash.
    """


# ---------------------------------------------------------------------------
# Parts


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where to reach a node; ``workers`` is empty when not advertised."""

    http: str
    gossip: str  # its PUB endpoint: subscribe here
    peer: str  # its ROUTER endpoint: snapshots, resends, pings, forwarded requests
    workers: str = ""


@dataclass(frozen=True, slots=True)
class Alive:
    """News: ``id`` is alive at ``incarnation`` (a join, or a refutation)."""

    id: str
    incarnation: int
    dc: str
    addresses: Addresses


@dataclass(frozen=True, slots=True)
class Suspect:
    """News: observer ``by`` suspects ``id`` at ``incarnation``."""

    id: str
    incarnation: int
    by: str


@dataclass(frozen=True, slots=True)
class Dead:
    """News: ``id`` at ``incarnation`` is declared dead (by ``by``)."""

    id: str
    incarnation: int
    by: str


@dataclass(frozen=True, slots=True)
class Left:
    """News: ``id`` left cleanly at ``incarnation``."""

    id: str
    incarnation: int


News: TypeAlias = Alive | Suspect | Dead | Left

STATES: Final = ("alive", "suspect", "dead", "left")


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One row of a snapshot."""

    id: str
    incarnation: int
    dc: str
    addresses: Addresses
    state: str  # one of STATES


LoadReport: TypeAlias = tuple[tuple[str, ServiceLoad], ...]


# ---------------------------------------------------------------------------
# Messages (published on PUB unless noted "peer socket")


@dataclass(frozen=True, slots=True)
class Beat:
    """State beat, every interval: who I am, my load, my membership digest, recent news."""

    sender: str
    seq: int
    incarnation: int
    dc: str
    addresses: Addresses
    load: LoadReport = ()
    digest: int = 0  # order-independent hash of (id, incarnation) over live members
    members: int = 0  # how many live members the digest covers
    rseq: int = 0  # last reliable sequence number published (gap detection)
    news: tuple[News, ...] = ()  # piggybacked, bounded retransmissions


@dataclass(frozen=True, slots=True)
class Push:
    """News published the moment it is learned, not waiting for the next beat."""

    sender: str
    seq: int
    news: tuple[News, ...]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Peer socket: "send me your member list"; ``me`` introduces the requester (join)."""

    sender: str
    seq: int
    me: Alive


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Peer socket: the full member list (the ZeroMQ guide's Clone pattern)."""

    sender: str
    seq: int
    members: tuple[MemberRecord, ...]
    digest: int = 0


@dataclass(frozen=True, slots=True)
class Reliable:
    """An envelope that must not be lost: ``kind`` says who reads ``payload``.

    Kinds in use: ``"leave"`` (membership; empty payload). The cache replication
    layer adds its own kinds (e.g. purges) with its own payload encoding.
    """

    sender: str
    seq: int
    rseq: int
    kind: str
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class ResendRequest:
    """Peer socket: "publisher, send me your reliable messages ``first..last`` again"."""

    sender: str
    seq: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class DcSummary:
    """One datacenter's aggregate, for the other datacenters."""

    sender: str
    seq: int
    dc: str
    alive: int
    load: LoadReport = ()


@dataclass(frozen=True, slots=True)
class Ping:
    """Peer socket: are you there? (``target`` is the receiver's own id)."""

    sender: str
    seq: int
    nonce: int
    target: str


@dataclass(frozen=True, slots=True)
class Probe:
    """Peer socket, to another observer of ``target``: have you heard from it lately?"""

    sender: str
    seq: int
    nonce: int
    target: str


@dataclass(frozen=True, slots=True)
class Ack:
    """Peer socket: ``target`` was alive at ``incarnation`` (said by itself or an observer)."""

    sender: str
    seq: int
    nonce: int
    target: str
    incarnation: int


Message: TypeAlias = (
    Beat | Push | SnapshotRequest | Snapshot | Reliable | ResendRequest | DcSummary
    | Ping | Probe | Ack
)

# Type ids: only append to this list; never renumber or reuse.
TYPE_IDS: Final[dict[type, int]] = {
    Beat: 1,
    Push: 2,
    SnapshotRequest: 3,
    Snapshot: 4,
    Reliable: 5,
    ResendRequest: 6,
    DcSummary: 7,
    Ping: 8,
    Probe: 9,
    Ack: 10,
}

# News kinds inside Beat/Push/Snapshot: only append.
_NEWS_IDS: Final[dict[type, int]] = {Alive: 1, Suspect: 2, Dead: 3, Left: 4}


# ---------------------------------------------------------------------------
# Encoding


def _addr(a: Addresses) -> list[str]:
    return [a.http, a.gossip, a.peer, a.workers]


def _load(report: LoadReport) -> list[list[Any]]:
    return [
        [name, s.workers, s.slots, s.in_flight, s.queued, s.p50_ms, s.rps, s.fwd_in_rps,
         s.fwd_out_rps]
        for name, s in report
    ]


def _news(n: News) -> list[Any]:
    kind = _NEWS_IDS[type(n)]
    if isinstance(n, Alive):
        return [kind, n.id, n.incarnation, n.dc, _addr(n.addresses)]
    if isinstance(n, Suspect | Dead):
        return [kind, n.id, n.incarnation, n.by]
    return [kind, n.id, n.incarnation]


def _fields(msg: Message) -> list[Any]:
    if isinstance(msg, Beat):
        return [msg.incarnation, msg.dc, _addr(msg.addresses), _load(msg.load), msg.digest,
                msg.members, msg.rseq, [_news(n) for n in msg.news]]
    if isinstance(msg, Push):
        return [[_news(n) for n in msg.news]]
    if isinstance(msg, SnapshotRequest):
        return [_news(msg.me)]
    if isinstance(msg, Snapshot):
        return [[[m.id, m.incarnation, m.dc, _addr(m.addresses), STATES.index(m.state)]
                 for m in msg.members], msg.digest]
    if isinstance(msg, Reliable):
        return [msg.rseq, msg.kind, msg.payload]
    if isinstance(msg, ResendRequest):
        return [msg.first, msg.last]
    if isinstance(msg, DcSummary):
        return [msg.dc, msg.alive, _load(msg.load)]
    if isinstance(msg, Ping | Probe):
        return [msg.nonce, msg.target]
    return [msg.nonce, msg.target, msg.incarnation]


_PACKER_OPTS: Final = {"use_bin_type": True, "use_single_float": True}


def encode(msg: Message) -> bytes:
    """Serialise ``msg``: version byte + msgpack array. Loads' floats go as float32."""
    body = [TYPE_IDS[type(msg)], msg.sender, msg.seq, *_fields(msg)]
    packed: bytes = msgpack.packb(body, **_PACKER_OPTS)
    return bytes([VERSION]) + packed


# ---------------------------------------------------------------------------
# Decoding: every check raises DecodeError


def _fail(why: str) -> DecodeError:
    return DecodeError(f"bad gossip message: {why}")


def _list(v: Any, what: str, lo: int, hi: int) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(f"{what} is not an array")
    if not lo <= len(v) <= hi:
        raise _fail(f"{what} has {len(v)} items, expected {lo}..{hi}")
    return v


def _str(v: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(v, str):
        raise _fail(f"{what} is not a string")
    if len(v) > MAX_STR or (not empty and not v):
        raise _fail(f"{what} has length {len(v)}, expected {0 if empty else 1}..{MAX_STR}")
    return v


def _int(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INT:
        raise _fail(f"{what} is not an integer in 0..2**64-1")
    return v


def _float(v: Any, what: str) -> float:
    if type(v) is int:
        v = float(v)
    if type(v) is not float or not 0.0 <= v < float("inf"):  # also rejects NaN
        raise _fail(f"{what} is not a finite non-negative number")
    return v


def _dec_addr(v: Any) -> Addresses:
    a = _list(v, "addresses", 4, 4)
    return Addresses(_str(a[0], "http address", empty=True), _str(a[1], "gossip address"),
                     _str(a[2], "peer address"), _str(a[3], "workers address", empty=True))


def _dec_load(v: Any) -> LoadReport:
    out = []
    for row in _list(v, "load", 0, MAX_SERVICES):
        r = _list(row, "service load", 9, 9)
        ints = [_int(x, "load count") for x in r[1:5]]
        floats = [_float(x, "load figure") for x in r[5:9]]
        out.append((_str(r[0], "service name"), ServiceLoad(*ints, *floats)))
    return tuple(out)


def _dec_news(v: Any) -> News:
    n = _list(v, "news", 3, 5)
    kind = n[0]
    if kind == 1 and len(n) == 5:
        return Alive(_str(n[1], "id"), _int(n[2], "incarnation"), _str(n[3], "dc"),
                     _dec_addr(n[4]))
    if kind in (2, 3) and len(n) == 4:
        cls = Suspect if kind == 2 else Dead
        return cls(_str(n[1], "id"), _int(n[2], "incarnation"), _str(n[3], "observer"))
    if kind == 4 and len(n) == 3:
        return Left(_str(n[1], "id"), _int(n[2], "incarnation"))
    raise _fail("unknown news kind or wrong field count")


def _dec_news_list(v: Any) -> tuple[News, ...]:
    return tuple(_dec_news(x) for x in _list(v, "news list", 0, MAX_NEWS))


def _dec_alive(v: Any) -> Alive:
    n = _dec_news(v)
    if not isinstance(n, Alive):
        raise _fail("expected an Alive record")
    return n


def _dec_member(v: Any) -> MemberRecord:
    m = _list(v, "member", 5, 5)
    state = m[4]
    if type(state) is not int or not 0 <= state < len(STATES):
        raise _fail("member state out of range")
    return MemberRecord(_str(m[0], "id"), _int(m[1], "incarnation"), _str(m[2], "dc"),
                        _dec_addr(m[3]), STATES[state])


def _payload(v: Any) -> bytes:
    if not isinstance(v, bytes) or len(v) > MAX_PAYLOAD:
        raise _fail("payload is not bytes within the size limit")
    return v


_Decoder = Callable[[str, int, list[Any]], Message]

# type id -> (field count after sender/seq, builder)
_DECODERS: Final[dict[int, tuple[int, _Decoder]]] = {
    1: (8, lambda s, q, f: Beat(s, q, _int(f[0], "incarnation"), _str(f[1], "dc"),
                                _dec_addr(f[2]), _dec_load(f[3]), _int(f[4], "digest"),
                                _int(f[5], "members"), _int(f[6], "rseq"),
                                _dec_news_list(f[7]))),
    2: (1, lambda s, q, f: Push(s, q, _dec_news_list(f[0]))),
    3: (1, lambda s, q, f: SnapshotRequest(s, q, _dec_alive(f[0]))),
    4: (2, lambda s, q, f: Snapshot(
        s, q, tuple(_dec_member(m) for m in _list(f[0], "members", 0, MAX_MEMBERS)),
        _int(f[1], "digest"))),
    5: (3, lambda s, q, f: Reliable(s, q, _int(f[0], "rseq"), _str(f[1], "kind"),
                                    _payload(f[2]))),
    6: (2, lambda s, q, f: ResendRequest(s, q, _int(f[0], "first"), _int(f[1], "last"))),
    7: (3, lambda s, q, f: DcSummary(s, q, _str(f[0], "dc"), _int(f[1], "alive"),
                                     _dec_load(f[2]))),
    8: (2, lambda s, q, f: Ping(s, q, _int(f[0], "nonce"), _str(f[1], "target"))),
    9: (2, lambda s, q, f: Probe(s, q, _int(f[0], "nonce"), _str(f[1], "target"))),
    10: (3, lambda s, q, f: Ack(s, q, _int(f[0], "nonce"), _str(f[1], "target"),
                                _int(f[2], "incarnation"))),
}


def decode(data: bytes) -> Message:
    """Parse and validate one message; raise ``DecodeError`` (only) if anything is off."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise _fail(f"{len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    if len(data) < 2:
        raise _fail("too short")
    if data[0] != VERSION:
        raise _fail(f"version {data[0]} is not {VERSION}")
    try:
        body = msgpack.unpackb(
            bytes(data[1:]), raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_PAYLOAD, max_bin_len=MAX_PAYLOAD, max_array_len=MAX_MEMBERS,
            max_map_len=0, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several families; all mean "malformed"
        raise _fail(f"not valid msgpack ({type(e).__name__})") from None
    top = _list(body, "message", 3, 3 + 8)
    tid = top[0]
    if type(tid) is not int or tid not in _DECODERS:
        raise _fail(f"unknown type id {tid!r}")
    count, build = _DECODERS[tid]
    if len(top) != 3 + count:
        raise _fail(f"type {tid} needs {count} fields, got {len(top) - 3}")
    try:
        return build(_str(top[1], "sender"), _int(top[2], "seq"), top[3:])
    except DecodeError:
        raise
    except Exception as e:  # a schema check we missed must still be a drop, not a crash
        raise _fail(f"schema ({type(e).__name__})") from None


def encoded_size(msg: Message) -> int:
    """Bytes on the wire for ``msg`` (the simulator's bandwidth accounting)."""
    return len(encode(msg))
