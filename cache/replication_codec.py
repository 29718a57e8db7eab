"""The wire form of cache replication: puts, announcements, purges and fetches.

Version 1; keys are only ever added. Every message is a small msgpack map
(decoded with hard limits, then checked field by field) plus, for an entry, the
body as its own frame so it is never copied into msgpack:

    put       PUB   [topic, meta{v, t="put", from, svc, key, var, st, hd, rq, rs, org}, body]
    announce  PUB   [topic, meta{v, t="ann", from, svc, key, var, rq, rs, org, sz}]
    purge     reliable envelope payload: msgpack {v, org, id, key, pfx, at}
    fetch     peer request meta {v, key, var}; reply meta = entry fields, body frame
    purges    peer request meta {v}; reply meta {v, since}, body = msgpack [[key, pfx, at]…]
              (a rejoining node asks what was purged while it was away)

Topics: `b"c*"` for entries every node may take (scope `all`), `b"c:" + dc + b"\\0"`
for one datacenter's (ZeroMQ filters on the publisher side, so dc-scoped puts
never cross to another dc; the NUL stops `east` matching `east2`). Every byte
from a peer is untrusted: decoders raise `ReplicaWireError` — the sender's
fault — and nothing else. Plain data in, plain data out: the node wires it to
sockets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from cache.entry import CacheEntry

VERSION = 1
ALL_TOPIC = b"c*"
MAX_META = 256 * 1024
MAX_KEY = 16 * 1024
MAX_ID = 256
MAX_HEADERS = 256
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
MAX_TIME = 1e11  # year 5138: later response times are nonsense, not data
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")


class ReplicaWireError(ValueError):
    """A replication message broke the schema or a limit (the sending peer's fault)."""


def dc_topic(dc: str) -> bytes:
    return b"c:" + dc.encode("utf-8", "surrogatepass") + b"\0"


@dataclass(frozen=True, slots=True)
class Put:
    """An entry, body included, for peers in scope."""

    sender: str
    service: str
    entry: CacheEntry


@dataclass(frozen=True, slots=True)
class Announce:
    """A stored entry too large to push: peers fetch it from `sender` when first asked."""

    sender: str
    service: str
    key: str
    variant: str
    size: int
    request_time: float
    response_time: float
    origin: str


@dataclass(frozen=True, slots=True)
class Purge:
    """A purge of one key or a key prefix, done at `at` (wall clock) on node `origin`."""

    origin: str
    pid: int  # random per purge: relays and resends are recognised by (origin, pid)
    key: str
    is_prefix: bool
    at: float


# -- encoding ---------------------------------------------------------------------


# One Packer for the process, as node/protocol.py has: msgpack.packb is a Python function
# that builds a Packer per call (a third of replicating a stored entry). Shared safely:
# pack() resets its buffer after each value, failed ones too, and keeps the GIL.
_packer = msgpack.Packer(use_bin_type=True)


def _pack(obj: dict[str, Any]) -> bytes:
    return _packer.pack(obj)  # type: ignore[no-any-return]


def entry_fields(entry: CacheEntry, *, packing: bool = False) -> dict[str, Any]:
    """An entry's metadata as a msgpack-ready map (the body travels apart); decoded, the
    fields are lists. `packing`: the map goes straight to msgpack, which packs the stored
    (name, value) tuples as the same arrays, so they are not copied into lists."""
    return {
        "v": VERSION,
        "key": entry.key,
        "var": entry.variant,
        "st": entry.status,
        "hd": entry.headers if packing else [[k, v] for k, v in entry.headers],
        "rq": entry.request_time,
        "rs": entry.response_time,
        "org": entry.origin,
    }


def encode_put(put: Put) -> list[bytes]:
    meta = entry_fields(put.entry, packing=True)
    meta["t"], meta["from"], meta["svc"] = "put", put.sender, put.service
    return [_pack(meta), put.entry.body]


def encode_announce(ann: Announce) -> list[bytes]:
    meta = {
        "v": VERSION, "t": "ann", "from": ann.sender, "svc": ann.service, "key": ann.key,
        "var": ann.variant, "rq": ann.request_time, "rs": ann.response_time,
        "org": ann.origin, "sz": ann.size,
    }
    return [_pack(meta)]


def encode_purge(purge: Purge) -> bytes:
    return _pack({"v": VERSION, "org": purge.origin, "id": purge.pid, "key": purge.key,
                  "pfx": purge.is_prefix, "at": purge.at})


def fetch_meta(key: str, variant: str) -> dict[str, Any]:
    return {"v": VERSION, "key": key, "var": variant}


MAX_STONES = 20_000
MAX_STONE_BYTES = 4 * 1024 * 1024


def encode_purges(since: float, stones: list[tuple[str, bool, float]]
                  ) -> tuple[dict[str, Any], bytes]:
    """A purge record, `stones` the latest first, cut to the decoder's limits; a cut
    record is complete only after the first purge it leaves out, so `since` moves there."""
    out: list[list[Any]] = []
    size = 0
    for key, is_prefix, at in stones[:MAX_STONES]:
        size += len(key.encode("utf-8", "surrogatepass")) + 16
        if size > MAX_STONE_BYTES // 2:
            since = max(since, at)
            break
        out.append([key, is_prefix, at])
    else:
        if len(stones) > MAX_STONES:
            since = max(since, stones[MAX_STONES][2])
    return {"v": VERSION, "since": since}, msgpack.packb(out, use_bin_type=True)


# -- decoding ---------------------------------------------------------------------


def unpack(data: bytes) -> dict[str, Any]:
    """A msgpack map with string keys, within limits."""
    if len(data) > MAX_META:
        raise ReplicaWireError(f"metadata of {len(data)} bytes exceeds {MAX_META}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=MAX_META,
                              max_bin_len=MAX_META, max_array_len=4096, max_map_len=64,
                              max_ext_len=0)
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise ReplicaWireError(f"undecodable metadata: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ReplicaWireError(f"metadata is a {type(obj).__name__}, not a map")
    version = obj.get("v")
    if version != VERSION:
        raise ReplicaWireError(f"unsupported version {str(version)[:20]!r} (we speak {VERSION})")
    return obj


def _str(meta: dict[str, Any], name: str, limit: int) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise ReplicaWireError(f"{name}: expected a string of at most {limit} characters")
    return value


def _int(meta: dict[str, Any], name: str, low: int, high: int) -> int:
    value = meta.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ReplicaWireError(f"{name}: expected an integer between {low} and {high}")
    return value


def _time(meta: dict[str, Any], name: str) -> float:
    value = meta.get(name)
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not 0 <= value <= MAX_TIME):
        raise ReplicaWireError(f"{name}: expected a time in epoch seconds")
    return float(value)


def _bool(meta: dict[str, Any], name: str) -> bool:
    value = meta.get(name)
    if not isinstance(value, bool):
        raise ReplicaWireError(f"{name}: expected true or false")
    return value


def _headers(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise ReplicaWireError(f"hd: expected a list of at most {MAX_HEADERS} pairs")
    out: list[tuple[str, str]] = []
    total = 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2
                or not isinstance(item[0], str) or not isinstance(item[1], str)):
            raise ReplicaWireError("hd: every field must be a [name, value] pair of strings")
        name, value = item
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise ReplicaWireError(f"hd: invalid field {name[:40]!r}")
        total += len(name) + len(value)
        if total > MAX_HEADER_BYTES:
            raise ReplicaWireError(f"hd: more than {MAX_HEADER_BYTES} bytes")
        out.append((name, value))
    return tuple(out)


def _times(meta: dict[str, Any]) -> tuple[float, float]:
    rq, rs = _time(meta, "rq"), _time(meta, "rs")
    if rq > rs:
        raise ReplicaWireError("rq: the request cannot be sent after its response arrived")
    return rq, rs


def decode_entry(meta: dict[str, Any], body: tuple[bytes, ...] | list[bytes],
                 max_body: int = MAX_BODY) -> CacheEntry:
    """An entry from its fields and exactly one body frame (of at most `max_body` bytes)."""
    if len(body) != 1:
        raise ReplicaWireError(f"expected one body frame, got {len(body)}")
    if len(body[0]) > max_body:
        raise ReplicaWireError(f"body of {len(body[0])} bytes exceeds {max_body}")
    rq, rs = _times(meta)
    return CacheEntry(
        key=_str(meta, "key", MAX_KEY), variant=_str(meta, "var", MAX_KEY),
        status=_int(meta, "st", 100, 999), headers=_headers(meta.get("hd")),
        body=bytes(body[0]), request_time=rq, response_time=rs,
        origin=_str(meta, "org", MAX_ID),
    )


def decode_put(frames: list[bytes], max_body: int = MAX_BODY) -> Put | Announce:
    """A PUB message (topic already removed): a put or an announcement."""
    if not frames:
        raise ReplicaWireError("empty message")
    meta = unpack(frames[0])
    kind = meta.get("t")
    sender, service = _str(meta, "from", MAX_ID), _str(meta, "svc", MAX_ID)
    if kind == "put":
        return Put(sender, service, decode_entry(meta, frames[1:], max_body))
    if kind == "ann":
        if len(frames) != 1:
            raise ReplicaWireError("an announcement carries no body frame")
        rq, rs = _times(meta)
        return Announce(sender, service, _str(meta, "key", MAX_KEY), _str(meta, "var", MAX_KEY),
                        _int(meta, "sz", 0, 1 << 40), rq, rs, _str(meta, "org", MAX_ID))
    raise ReplicaWireError(f"t: unknown message type {str(kind)[:20]!r}")


def decode_purge(payload: bytes) -> Purge:
    meta = unpack(payload)
    return Purge(_str(meta, "org", MAX_ID), _int(meta, "id", 0, (1 << 63) - 1),
                 _str(meta, "key", MAX_KEY), _bool(meta, "pfx"), _time(meta, "at"))


def decode_fetch(meta: dict[str, Any]) -> tuple[str, str]:
    """The (key, variant) a fetch asks for; `meta` is the transport's decoded map."""
    if meta.get("v") != VERSION:
        raise ReplicaWireError(f"unsupported version {str(meta.get('v'))[:20]!r}")
    return _str(meta, "key", MAX_KEY), _str(meta, "var", MAX_KEY)


def decode_purges(meta: dict[str, Any], body: tuple[bytes, ...] | list[bytes]
                  ) -> tuple[float, list[tuple[str, bool, float]]]:
    """(since, [(key, is_prefix, at)…]) from a peer's purge record."""
    if meta.get("v") != VERSION:
        raise ReplicaWireError(f"unsupported version {str(meta.get('v'))[:20]!r}")
    since = _time(meta, "since")
    if len(body) != 1 or len(body[0]) > MAX_STONE_BYTES:
        raise ReplicaWireError(f"expected one record frame of at most {MAX_STONE_BYTES} bytes")
    try:
        raw = msgpack.unpackb(body[0], raw=False, max_str_len=MAX_KEY, max_bin_len=0,
                              max_array_len=MAX_STONES, max_map_len=0, max_ext_len=0)
    except Exception as exc:
        raise ReplicaWireError(f"undecodable purge record: {type(exc).__name__}") from None
    if not isinstance(raw, list):
        raise ReplicaWireError("the purge record is not a list")
    stones = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3:
            raise ReplicaWireError("every purge must be [key, is_prefix, at]")
        fields = {"key": item[0], "pfx": item[1], "at": item[2]}
        stones.append((_str(fields, "key", MAX_KEY), _bool(fields, "pfx"), _time(fields, "at")))
    return since, stones
