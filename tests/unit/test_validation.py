"""Conditional requests, 304 merging (§3.2, §4.3.4), client conditionals, stored fields."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.validation import (
    conditional_headers,
    merge_not_modified,
    not_modified,
    stored_header_items,
    validators_match,
)

LM = formatdate(1_600_000_000, usegmt=True)
LATER = formatdate(1_600_000_500, usegmt=True)


def entry(headers: list[tuple[str, str]]) -> CacheEntry:
    return CacheEntry("http://h/x", "", 200, tuple(headers), b"body", 10.0, 11.0, "n1")


def test_conditional_headers() -> None:
    assert conditional_headers([("ETag", '"v1"'), ("Last-Modified", LM)]) == [
        ("If-None-Match", '"v1"'),
        ("If-Modified-Since", LM),
    ]
    assert conditional_headers([("Last-Modified", "garbage")]) == []
    assert conditional_headers([]) == []


def test_validators_match() -> None:
    stored = [("ETag", '"v1"'), ("Last-Modified", LM)]
    assert validators_match(stored, [("ETag", '"v1"')])
    assert validators_match(stored, [("ETag", 'W/"v1"')])
    assert not validators_match(stored, [("ETag", '"v2"')])
    assert validators_match(stored, [("Last-Modified", LM)])
    assert not validators_match(stored, [("Last-Modified", LATER)])
    assert not validators_match(stored, [])
    assert validators_match([], [])
    # A Flask 304 to the If-Modified-Since made from an entry with only a Last-Modified:
    # Werkzeug drops Last-Modified from 304s; the 304 is about that entry all the same.
    assert validators_match([("Last-Modified", LM)], [("Date", LATER)])


def test_merge_replaces_fields_but_not_body_framing() -> None:
    old = entry(
        [
            ("ETag", '"v1"'),
            ("Cache-Control", "max-age=1"),
            ("Content-Length", "4"),
            ("Content-Type", "text/plain"),
            ("Age", "50"),
            ("X-Keep", "yes"),
        ]
    )
    merged = merge_not_modified(
        old,
        [
            ("Cache-Control", "max-age=600"),
            ("ETag", '"v1"'),
            ("Content-Length", "0"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Content-Type", "text/html"),
        ],
        20.0,
        21.0,
    )
    h = dict(merged.headers)
    assert h["Cache-Control"] == "max-age=600"
    assert h["Content-Length"] == "4" and h["Content-Type"] == "text/plain"
    assert "Age" not in h and "X-Hop" not in h and "Connection" not in h
    assert h["X-Keep"] == "yes"
    assert merged.body == b"body" and (merged.request_time, merged.response_time) == (20.0, 21.0)


def test_client_conditionals() -> None:
    stored = [("ETag", 'W/"v1"'), ("Last-Modified", LM)]
    assert not_modified([("If-None-Match", '"x", "v1"')], stored)
    assert not_modified([("If-None-Match", "*")], stored)
    assert not not_modified([("If-None-Match", '"v2"'), ("If-Modified-Since", LATER)], stored)
    assert not_modified([("If-Modified-Since", LATER)], stored)
    assert not not_modified([("If-Modified-Since", formatdate(1_500_000_000, usegmt=True))], stored)
    assert not not_modified([], stored)
    assert not not_modified([("If-None-Match", '"v1"')], [])


def test_stored_header_items_drop_hop_by_hop_and_cache_status() -> None:
    items = stored_header_items(
        [
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Transfer-Encoding", "chunked"),
            ("X-Cache", "HIT"),
            ("Cache-Status", "other; hit"),
            ("Age", "3"),
            ("A", "b"),
        ]
    )
    assert items == (("Age", "3"), ("A", "b"))


fields = st.lists(
    st.tuples(
        st.sampled_from(
            ["ETag", "Last-Modified", "Cache-Control", "Age", "Content-Length", "X-A", "Connection"]
        ),
        st.text(max_size=20),
    ),
    max_size=8,
)


@given(fields, fields)
def test_merge_never_loses_body_or_keeps_hop_fields(
    old: list[tuple[str, str]], new: list[tuple[str, str]]
) -> None:
    e = entry(old)
    merged = merge_not_modified(e, new, 30.0, 31.0)
    assert merged.body == e.body and merged.status == e.status and merged.key == e.key
    assert all(k.lower() != "connection" for k, _ in merged.headers)
    for k, v in new:
        if k in ("Cache-Control", "X-A") and not any(
            k.lower() in c.lower() for n, c in new if n == "Connection"
        ):
            assert (k, v) in merged.headers or any(n == k for n, _ in merged.headers)
    conditional_headers(merged.headers)
    validators_match(old, new)
    not_modified(new, old)
