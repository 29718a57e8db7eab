"""The entry file codec: round trips, and damage is always detected as EntryFormatError."""

from __future__ import annotations

import struct

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.files_format import (
    DIGEST_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_HEADERS,
    EntryFormatError,
    decode_entry,
    decode_header,
    decode_meta,
    encode_entry,
)

text = st.text(max_size=40)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
entries = st.builds(
    CacheEntry,
    key=text,
    variant=text,
    status=st.integers(100, 999),
    headers=st.lists(st.tuples(text, text), max_size=8).map(tuple),
    body=st.binary(max_size=2000),
    request_time=times,
    response_time=times,
    origin=text,
)


@given(entries)
def test_round_trip(entry: CacheEntry) -> None:
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    header = decode_header(data)
    assert header.file_size == len(data)
    meta = decode_meta(data[HEADER_SIZE : HEADER_SIZE + header.meta_len])
    assert meta == CacheEntry(
        entry.key, entry.variant, entry.status, entry.headers, b"",
        entry.request_time, entry.response_time, entry.origin,
    )


@given(entries, st.data())
def test_flipped_bytes_are_detected(entry: CacheEntry, data: st.DataObject) -> None:
    encoded = bytearray(encode_entry(entry))
    flips = data.draw(st.lists(st.integers(0, len(encoded) - 1), min_size=1, max_size=4))
    for pos in flips:
        encoded[pos] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_entry(bytes(encoded))
    except EntryFormatError:
        return
    assert decoded == entry  # only possible if the flips cancelled out


@given(entries, st.data())
def test_truncation_and_padding_are_detected(entry: CacheEntry, data: st.DataObject) -> None:
    encoded = encode_entry(entry)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(EntryFormatError):
        decode_entry(encoded[:cut])
    with pytest.raises(EntryFormatError):
        decode_entry(encoded + data.draw(st.binary(min_size=1, max_size=30)))


@given(entries, st.data())
def test_random_splices_never_raise_anything_else(entry: CacheEntry, data: st.DataObject) -> None:
    encoded = encode_entry(entry)
    start = data.draw(st.integers(0, len(encoded)))
    end = data.draw(st.integers(start, len(encoded)))
    mutated = encoded[:start] + data.draw(st.binary(max_size=64)) + encoded[end:]
    try:
        assert decode_entry(mutated) == entry
    except EntryFormatError:
        pass


@given(st.binary(max_size=200))
def test_random_bytes_are_rejected(blob: bytes) -> None:
    with pytest.raises(EntryFormatError):
        decode_entry(blob)


@given(st.binary(max_size=300))
def test_random_metadata_never_raises_anything_else(blob: bytes) -> None:
    try:
        decode_meta(blob)
    except EntryFormatError:
        pass


@given(st.dictionaries(st.sampled_from("kvshqro"), st.none() | st.integers(-(2**63), 2**64 - 1)
                       | text | st.lists(
    st.lists(text, max_size=3), max_size=3) | st.floats(), max_size=7))
def test_schema_violations_are_format_errors(obj: dict[str, object]) -> None:
    try:
        entry = decode_meta(msgpack.packb(obj))
    except EntryFormatError:
        return
    assert isinstance(entry.key, str) and 100 <= entry.status <= 999


def _header(meta_len: int, body_len: int, magic: bytes = MAGIC, version: int = 1) -> bytes:
    return struct.pack(">4sBBHIQI", magic, version, 0, 0, meta_len, body_len, 0)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (_header(2**32 - 1, 0), "metadata length"),
        (_header(10, 2**64 - 1), "body length"),
        (_header(10, 10, magic=b"NOPE"), "bad magic"),
        (_header(10, 10, version=9), "version 9"),
        (_header(10, 10) + b"x" * 5, "truncated or padded"),
        (b"S0C", "truncated header"),
    ],
)
def test_hostile_headers(blob: bytes, match: str) -> None:
    with pytest.raises(EntryFormatError, match=match):
        decode_entry(blob)


def test_too_many_headers_refused_on_write_and_read() -> None:
    many = tuple(("x", "y") for _ in range(MAX_HEADERS + 1))
    entry = CacheEntry("k", "", 200, many, b"", 0.0, 0.0)
    with pytest.raises(EntryFormatError):
        encode_entry(entry)
    meta = msgpack.packb({"k": "k", "v": "", "s": 200, "h": [list(h) for h in many],
                          "q": 0.0, "r": 0.0, "o": ""})
    with pytest.raises(EntryFormatError):
        decode_meta(meta)


def test_unencodable_text_is_a_format_error() -> None:
    with pytest.raises(EntryFormatError):
        encode_entry(CacheEntry("\udcff", "", 200, (), b"", 0.0, 0.0))


def test_digest_covers_the_body() -> None:
    data = bytearray(encode_entry(CacheEntry("k", "", 200, (), b"body", 0.0, 0.0)))
    data[-DIGEST_SIZE - 1] ^= 1
    with pytest.raises(EntryFormatError, match="checksum"):
        decode_entry(bytes(data))
