"""The mongo store's document decoder: valid documents round trip, anything else is skipped.

Pure (no server): documents from MongoDB are untrusted input like any other.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.mongo import _decode, _encode

text = st.text(max_size=30)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
entries = st.builds(
    CacheEntry, key=text, variant=text, status=st.integers(100, 999),
    headers=st.lists(st.tuples(text, text), max_size=5).map(tuple), body=st.binary(max_size=200),
    request_time=times, response_time=times, origin=text,
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@given(entries)
def test_round_trip(entry: CacheEntry) -> None:
    doc = _encode(entry)
    assert _decode(doc, with_body=True) == entry
    meta = _decode({k: v for k, v in doc.items() if k != "body"}, with_body=False)
    assert meta is not None and meta.body == b"" and meta.key == entry.key


@given(entries, st.sampled_from(["key", "variant", "status", "headers", "body", "rq", "rs",
                                 "origin"]), values)
def test_any_wrong_field_is_skipped_not_raised(entry: CacheEntry, field: str, value: Any) -> None:
    doc = _encode(entry)
    doc[field] = value
    decoded = _decode(doc, with_body=True)
    if decoded is not None:  # the replacement happened to be valid for that field
        assert isinstance(decoded.key, str) and 100 <= decoded.status <= 999


@given(st.dictionaries(text, values, max_size=10))
def test_random_documents_are_skipped(doc: dict[str, Any]) -> None:
    assert _decode(doc, with_body=True) is None or isinstance(doc.get("key"), str)
