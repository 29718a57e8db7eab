"""Cache-Control / Pragma parsing: RFC examples, junk tolerance, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import cachecontrol
from cache.cachecontrol import (
    DELTA_MAX,
    MAX_DIRECTIVES,
    MAX_FIELD_LENGTH,
    _split_members,
    _split_quoted,
    parse_cache_control,
    parse_delta,
    request_directives,
)


@pytest.mark.parametrize(
    ("field", "name", "arg"),
    [
        ("max-age=60", "max-age", "60"),
        ("Max-Age=60", "max-age", "60"),
        ("public, max-age=60", "public", None),
        ('private="Set-Cookie, X-A", max-age=5', "private", "Set-Cookie, X-A"),
        ('no-cache="a\\"b"', "no-cache", 'a"b'),
        ("s-maxage = 10", "s-maxage", "10"),
        ("  ,, no-store ,", "no-store", None),
    ],
)
def test_parses_members(field: str, name: str, arg: str | None) -> None:
    d = parse_cache_control(field)
    assert d.has(name)
    assert d.values[name] == arg


def test_quoted_comma_does_not_split() -> None:
    d = parse_cache_control('private="a, max-age=9", max-age=1')
    assert d.seconds("max-age") == 1


def test_first_occurrence_wins() -> None:
    assert parse_cache_control(["max-age=5", "max-age=100"]).seconds("max-age") == 5


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0),
        ("17", 17),
        (" 3 ", 3),
        ("-1", None),
        ("1.5", None),
        ("", None),
        ("x", None),
        ("99999999999999999999", DELTA_MAX),
        ("٣", None),
    ],
)
def test_delta_seconds(raw: str, value: int | None) -> None:
    assert parse_delta(raw) == value


def test_flags() -> None:
    d = parse_cache_control(
        "no-cache, must-revalidate, proxy-revalidate, only-if-cached, max-stale"
    )
    assert d.no_cache and d.must_revalidate and d.proxy_revalidate and d.only_if_cached
    assert d.max_stale_any
    assert not parse_cache_control("max-stale=5").max_stale_any


def test_too_long_field_is_truncated_and_flagged() -> None:
    d = parse_cache_control("max-age=1, " + "x" * (MAX_FIELD_LENGTH + 10) + ", no-store")
    assert d.truncated
    assert not d.no_store  # beyond the limit: never read


def test_too_many_directives_flagged() -> None:
    d = parse_cache_control(", ".join(f"x{i}" for i in range(MAX_DIRECTIVES + 5)))
    assert d.truncated
    assert len(d.values) == MAX_DIRECTIVES


def test_pragma_only_without_cache_control() -> None:
    assert request_directives([], ["no-cache"]).no_cache
    assert request_directives([], ["x, No-Cache"]).no_cache
    assert not request_directives(["max-age=5"], ["no-cache"]).no_cache
    assert not request_directives([], ["whatever"]).no_cache


@given(st.text(max_size=300) | st.lists(st.text(max_size=80), max_size=5))
def test_never_raises_and_stays_bounded(field: str | list[str]) -> None:
    d = parse_cache_control(field)
    assert len(d.values) <= MAX_DIRECTIVES
    for name in d.values:
        assert name == name.lower() and name.strip() == name and name
        d.seconds(name)


@given(
    st.dictionaries(
        st.sampled_from(["max-age", "s-maxage", "min-fresh", "max-stale"]),
        st.integers(0, 2**40),
        max_size=4,
    )
)
def test_round_trip_of_numbers(values: dict[str, int]) -> None:
    d = parse_cache_control(", ".join(f"{k}={v}" for k, v in values.items()))
    for k, v in values.items():
        assert d.seconds(k) == min(v, DELTA_MAX)


@given(st.text(st.characters(blacklist_characters='"'), max_size=120))
def test_a_field_without_quotes_splits_as_the_quote_aware_walk_does(text: str) -> None:
    """The fast path (no quote: a plain split) must agree with the walk it skips."""
    assert _split_members(text) == _split_quoted(text) == text.split(",")


@given(st.lists(st.text(st.sampled_from('max-age=0123456789,"; noxtpublic'), max_size=40),
                max_size=3))
def test_a_remembered_parse_is_the_parse_made_afresh(fields: list[str]) -> None:
    fresh = cachecontrol._parse(", ".join(fields))
    assert parse_cache_control(fields) == fresh
    assert parse_cache_control(fields) == fresh  # asked again: from memory, the same


def test_remembered_parses_are_bounded_in_count_and_length() -> None:
    for i in range(cachecontrol._PARSED_KEPT + 10):
        parse_cache_control(f"max-age={i}")
    assert len(cachecontrol._parsed) <= cachecontrol._PARSED_KEPT
    long = "max-age=1, " + "x" * 1000
    assert parse_cache_control(long).seconds("max-age") == 1
    assert long not in cachecontrol._parsed
