"""The on-disk format of one cache entry file (the `files` store's codec).

A file is: a fixed 24-byte header, msgpack metadata (every CacheEntry field but
the body), the body, and a 16-byte blake2b digest over everything before it.

    header = magic "S0CE" | version u8 | reserved u8 u16 | meta_len u32 |
             body_len u64 | reserved u32           (big-endian, 24 bytes)

The header carries both lengths so a reader can check the file's size without
reading the body, and the index rebuild at start reads only header + metadata.
Every byte of a file may be hostile (another process, a disk fault, an
attacker with write access to the directory): decoding checks sizes against hard
limits before allocating, validates the metadata schema, and raises
`EntryFormatError` — and nothing else — for anything it does not like.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from cache.entry import CacheEntry

MAGIC = b"S0CE"
VERSION = 1
_HEADER = struct.Struct(">4sBBHIQI")
HEADER_SIZE = _HEADER.size  # 24
DIGEST_SIZE = 16
MAX_META = 1 << 20  # metadata bigger than this is not ours
MAX_HEADERS = 1000  # header fields per entry
MAX_STR = 64 * 1024  # any one string in the metadata (key, header value, ...)
MAX_BODY = 1 << 31


class EntryFormatError(ValueError):
    """A file that is not a valid entry: damaged, truncated, foreign or hostile."""


@dataclass(frozen=True, slots=True)
class Header:
    meta_len: int
    body_len: int

    @property
    def file_size(self) -> int:
        return HEADER_SIZE + self.meta_len + self.body_len + DIGEST_SIZE


def encode_parts(entry: CacheEntry) -> tuple[bytes, bytes, bytes]:
    """(header + metadata, body, digest): written in that order they form the file.

    Parts instead of one buffer so a large body is never copied. Raises
    EntryFormatError when the entry cannot be represented (limits, bad text)."""
    meta_dict = {
        "k": entry.key,
        "v": entry.variant,
        "s": entry.status,
        "h": [list(item) for item in entry.headers],
        "q": entry.request_time,
        "r": entry.response_time,
        "o": entry.origin,
    }
    _check_meta(meta_dict)  # refuse to write what we would refuse to read
    meta_dict["q"], meta_dict["r"] = float(entry.request_time), float(entry.response_time)
    try:
        meta = msgpack.packb(meta_dict, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
        raise EntryFormatError(f"entry cannot be encoded: {exc}") from None
    if len(meta) > MAX_META:
        raise EntryFormatError(f"metadata of {len(meta)} bytes exceeds {MAX_META}")
    if len(entry.body) > MAX_BODY:
        raise EntryFormatError(f"body of {len(entry.body)} bytes exceeds {MAX_BODY}")
    head = _HEADER.pack(MAGIC, VERSION, 0, 0, len(meta), len(entry.body), 0) + meta
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    digest.update(head)
    digest.update(entry.body)
    return head, entry.body, digest.digest()


def encode_entry(entry: CacheEntry) -> bytes:
    return b"".join(encode_parts(entry))


def decode_header(data: bytes) -> Header:
    """Parse the fixed header (the first HEADER_SIZE bytes of `data`)."""
    if len(data) < HEADER_SIZE:
        raise EntryFormatError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    magic, version, _r1, _r2, meta_len, body_len, _r3 = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EntryFormatError("not a cache entry file (bad magic)")
    if version != VERSION:
        raise EntryFormatError(f"unsupported entry format version {version}")
    if meta_len > MAX_META:
        raise EntryFormatError(f"metadata length {meta_len} exceeds {MAX_META}")
    if body_len > MAX_BODY:
        raise EntryFormatError(f"body length {body_len} exceeds {MAX_BODY}")
    return Header(meta_len, body_len)


def decode_meta(meta: bytes) -> CacheEntry:
    """The entry described by `meta`, with an empty body (index rebuild, newer-wins)."""
    try:
        obj = msgpack.unpackb(
            meta, raw=False, strict_map_key=True, max_str_len=MAX_STR, max_bin_len=0,
            max_array_len=MAX_HEADERS, max_map_len=16, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise EntryFormatError(f"unreadable metadata: {type(exc).__name__}") from None
    _check_meta(obj)
    return CacheEntry(
        key=obj["k"], variant=obj["v"], status=obj["s"],
        headers=tuple((k, v) for k, v in obj["h"]), body=b"",
        request_time=float(obj["q"]), response_time=float(obj["r"]), origin=obj["o"],
    )


def decode_entry(data: bytes) -> CacheEntry:
    """The whole entry in `data` (one complete file), checksum verified."""
    header = decode_header(data)
    if len(data) != header.file_size:
        raise EntryFormatError(
            f"file is {len(data)} bytes, header says {header.file_size} (truncated or padded)"
        )
    end = len(data) - DIGEST_SIZE
    view = memoryview(data)
    digest = hashlib.blake2b(view[:end], digest_size=DIGEST_SIZE).digest()
    if digest != data[end:]:
        raise EntryFormatError("checksum mismatch")
    meta_end = HEADER_SIZE + header.meta_len
    entry = decode_meta(data[HEADER_SIZE:meta_end])
    return CacheEntry(
        key=entry.key, variant=entry.variant, status=entry.status, headers=entry.headers,
        body=data[meta_end:end], request_time=entry.request_time,
        response_time=entry.response_time, origin=entry.origin,
    )


def _check_meta(obj: Any) -> None:
    """Schema of the metadata map: exact fields, types and ranges."""
    if not isinstance(obj, dict) or set(obj) != {"k", "v", "s", "h", "q", "r", "o"}:
        raise EntryFormatError("metadata is not the expected map")
    for name in ("k", "v", "o"):
        if not isinstance(obj[name], str) or len(obj[name]) > MAX_STR:
            raise EntryFormatError(f"metadata field {name!r} is not a short string")
    status = obj["s"]
    if type(status) is not int or not 100 <= status <= 999:
        raise EntryFormatError("metadata status is not an HTTP status code")
    for name in ("q", "r"):
        value = obj[name]
        if type(value) not in (int, float) or not math.isfinite(value):
            raise EntryFormatError(f"metadata field {name!r} is not a finite time")
    headers = obj["h"]
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise EntryFormatError("metadata headers are not a bounded list")
    for item in headers:
        if (
            not isinstance(item, list | tuple) or len(item) != 2
            or not isinstance(item[0], str) or not isinstance(item[1], str)
            or len(item[0]) > MAX_STR or len(item[1]) > MAX_STR
        ):
            raise EntryFormatError("metadata header is not a (name, value) pair of strings")
