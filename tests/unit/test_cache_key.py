"""Primary cache keys: normalisation table, dropped parameters, poisoning headers, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache import key
from cache.key import BadURL, cache_key, key_for_url, split_url, unkeyed_conflict
from node.http import Headers


@pytest.mark.parametrize(
    ("scheme", "host", "target", "key"),
    [
        ("http", "Example.COM", "/a", "http://example.com/a"),
        ("http", "example.com:80", "/a", "http://example.com/a"),
        ("https", "example.com:443", "/a", "https://example.com/a"),
        ("http", "example.com:443", "/a", "http://example.com:443/a"),
        ("HTTP", "example.com.", "", "http://example.com/"),
        ("http", "h", "/a/./b/../c", "http://h/a/c"),
        ("http", "h", "/%7euser/%2f%41", "http://h/~user/%2FA"),
        ("http", "h", "/a b", "http://h/a%20b"),
        ("http", "h", "/é", "http://h/%C3%A9"),
        ("http", "h", "/x?", "http://h/x"),
        ("http", "h", "/x?b=1&a=2", "http://h/x?b=1&a=2"),
        ("http", "h", "/x#frag", "http://h/x"),
        ("http", "h", "/100%", "http://h/100%25"),
        ("http", "[::1]:80", "/", "http://[::1]/"),
    ],
)
def test_normalisation(scheme: str, host: str, target: str, key: str) -> None:
    assert cache_key(scheme, host, target) == key


def test_dropped_query_params() -> None:
    drop = ["utm_source", "fbclid"]
    assert cache_key("http", "h", "/p?utm_source=x&id=3&fbclid=9", drop) == "http://h/p?id=3"
    assert cache_key("http", "h", "/p?utm%5Fsource=x", drop) == "http://h/p"
    assert cache_key("http", "h", "/p?utm_source", drop) == "http://h/p"


def test_url_forms() -> None:
    assert key_for_url("HTTP://Example.com:80/a?b") == "http://example.com/a?b"
    assert split_url("https://h?q") == ("https", "h", "?q")
    for bad in ("/relative", "ftp://h/x", "http:///x", "http://user@h/x", "nonsense"):
        with pytest.raises(BadURL):
            key_for_url(bad)


def test_unkeyed_conflicts() -> None:
    assert unkeyed_conflict([("X-Forwarded-Host", "evil.example")], "good.example")
    assert unkeyed_conflict([("X-Original-URL", "/admin")], "h")
    assert unkeyed_conflict([("x-http-method-override", "DELETE")], "h")
    assert unkeyed_conflict([("X-Forwarded-Host", "Good.example")], "good.example") is None
    assert unkeyed_conflict([("X-Forwarded-Host", "evil")], "h", ["x-forwarded-host"]) is None
    assert unkeyed_conflict([("Accept", "*/*"), ("Cookie", "a=1")], "h") is None


@given(
    st.sampled_from(["http", "https", "HTTPS"]),
    st.text(max_size=30),
    st.text(max_size=80),
    st.lists(st.sampled_from(["a", "utm_source", "x y"]), max_size=3),
)
def test_key_is_idempotent(scheme: str, host: str, target: str, drop: list[str]) -> None:
    key = cache_key(scheme, host, target, drop)
    assert key.isascii() and not any(c.isspace() or ord(c) < 32 for c in key)
    if "@" not in key.split("/")[2] and key.split("/")[2]:
        assert key_for_url(key, drop) == key


@given(st.text(max_size=40))
def test_host_case_and_default_port_do_not_matter(path: str) -> None:
    target = "/" + path
    assert cache_key("http", "EXAMPLE.com:80", target) == cache_key("http", "example.com", target)


_names = st.sampled_from(["Accept", "X-Forwarded-Host", "x-host", "X-HTTP-Method", "Cookie",
                          "X-Original-URL", "Vary", "X-Forwarded-Port", "Host"])


@given(st.lists(st.tuples(_names, st.sampled_from(["h", "H", "evil", " h "])), max_size=5),
       st.lists(_names, max_size=2))
def test_unkeyed_conflict_answers_the_same_for_indexed_headers_and_plain_fields(
        fields: list[tuple[str, str]], keyed: list[str]) -> None:
    """node.http.Headers takes a shortcut (no poisoning name at all: one set test)."""
    assert unkeyed_conflict(Headers(fields), "h", keyed) == unkeyed_conflict(fields, "h", keyed)


_URL_CHARS = st.lists(st.sampled_from(
    [*"azAZ09-._~!$&'()*+,;=:@/?[]%# ", "%41", "%2f", "%zz", "\u00e9", "\U0001f600", "\x00",
     "\ud800"]), max_size=30).map("".join)


@given(st.one_of(_URL_CHARS, st.text(max_size=30)))
def test_the_whole_text_check_agrees_with_the_walk(text: str) -> None:
    """Text kept as it is without the character walk is exactly what the walk keeps."""
    assert key._clean(text) == key._clean_each(text, key._SAFE)
    assert (key._clean(text, key._HOST_SAFE, key._HOST_AS_IS)
            == key._clean_each(text, key._HOST_SAFE))
