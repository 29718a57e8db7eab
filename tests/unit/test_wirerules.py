"""Property tests: the fast wire's head checks never accept what Tornado refuses,
and its response framing matches Tornado's HTTP1Connection.write_headers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tornado import httputil
from tornado.http1connection import is_transfer_encoding_chunked, parse_int

from node.errors import ClientError
from node.wirerules import (
    check_request_head,
    frame_response_head,
    plain_fields,
    request_headers,
)

VALUES = st.sampled_from(["5", "05", "5, 5", "-1", "", " 5", "chunked", "gzip, chunked",
                          "Chunked", "xchunked", "a.test", "a.test,b.test", "a b", "[::1]:80"])
NAMES = st.sampled_from(["Content-Length", "Transfer-Encoding", "Host", "Connection", "X-A"])


def tornado_accepts(version: str, headers: httputil.HTTPHeaders) -> bool:
    try:
        is_transfer_encoding_chunked(headers)
        if "Content-Length" in headers:
            pieces = [p.strip() for p in headers["Content-Length"].split(",")]
            if any(p != pieces[0] for p in pieces):
                return False
            parse_int(pieces[0])
        host = headers.get("Host")
        if host is None and version == "HTTP/1.1":
            return False
        if host is not None and ("," in host or not httputil._ABNF.host.fullmatch(host)):
            return False
    except (httputil.HTTPInputError, ValueError):
        return False
    return True


@given(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]), st.lists(st.tuples(NAMES, VALUES), max_size=5))
def test_never_accepts_what_tornado_refuses(version: str, fields: list[tuple[str, str]]) -> None:
    headers = httputil.HTTPHeaders()
    for name, value in fields:
        headers.add(name, value.strip(), _chars_are_bytes=False)
    try:
        facts = check_request_head("POST", "/", version, headers)
    except ClientError:
        return
    assert tornado_accepts(version, headers)
    assert facts.chunked == ("Transfer-Encoding" in headers)


@given(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]), st.sampled_from(["GET", "HEAD", "POST"]),
       st.sampled_from([200, 204, 304, 404]), st.booleans(), st.booleans())
def test_framing_matches_tornado(version: str, method: str, code: int, with_length: bool,
                                 close: bool) -> None:
    headers = httputil.HTTPHeaders({"X-A": "1"})
    if with_length:
        headers["Content-Length"] = "0" if method == "HEAD" or code in (204, 304) else "3"
    framing = frame_response_head(httputil.RequestStartLine(method, "/", version), None, close,
                                  httputil.ResponseStartLine("HTTP/1.1", code, "R"), headers)
    chunking = (version == "HTTP/1.1" and method != "HEAD" and code not in (204, 304)
                and not with_length)
    assert framing.chunking == chunking
    assert (b"Transfer-Encoding: chunked" in framing.head) == chunking
    assert (b"Connection: close" in framing.head) == (close and version == "HTTP/1.1")
    assert framing.head.startswith(b"HTTP/1.1 %d R\r\n" % code)


def test_cr_in_a_response_header_is_refused() -> None:
    with pytest.raises(ValueError):
        frame_response_head(httputil.RequestStartLine("GET", "/", "HTTP/1.1"), None, False,
                            httputil.ResponseStartLine("HTTP/1.1", 200, "OK"),
                            httputil.HTTPHeaders({"X-A": "a\rb"}))


RAW_NAMES = st.one_of(st.sampled_from([b"Host", b"host", b"Accept", b"x-a", b"X-A", b"Cookie"]),
                      st.binary(min_size=1, max_size=6))
RAW_VALUES = st.one_of(st.sampled_from([b"", b" a ", b"a, b", b"\tx"]), st.binary(max_size=8))


@given(st.lists(st.tuples(RAW_NAMES, RAW_VALUES), max_size=8))
def test_request_headers_are_what_httpheaders_add_makes(
        fields: list[tuple[bytes, bytes]]) -> None:
    slow = httputil.HTTPHeaders()
    try:
        for name, value in fields:
            slow.add(name.decode("latin1"), value.decode("latin1").strip(" \t"),
                     _chars_are_bytes=False)
    except httputil.HTTPInputError:
        with pytest.raises(httputil.HTTPInputError):
            request_headers(fields)
        return
    fast = request_headers(fields)
    assert list(fast.get_all()) == list(slow.get_all())
    for name, _ in fields:
        text = name.decode("latin1")
        assert fast.get_list(text) == slow.get_list(text)
        assert fast.get(text) == slow.get(text)


# plain_fields against the rules written as regexes (what it was before bytes.translate):
# names are tokens; values hold no control character but the tab, and no DEL; a head with
# no field at all is not plain (the usual path answers it).
_ORACLE_NAMES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ORACLE_FORBIDDEN = re.compile(rb"[\x00-\x08\x0A-\x1F\x7F]")
_field_bytes = st.lists(st.sampled_from(
    [b"a", b" ", b"\t", b"~", b"\x7f", b"\x80", b"\xff", b"\x00", b"\x08", b"\x1f", b"\r"]),
    max_size=4).map(b"".join) | st.binary(max_size=8)
_name_bytes = st.sampled_from([b"Host", b"X-A", b"ok~", b"Accept"]) | st.sampled_from(
    [b"a b", b"", b"\xff", b"a:b"]) | st.binary(max_size=4)


@given(st.lists(st.tuples(_name_bytes, _field_bytes), max_size=4))
def test_plain_fields_is_the_token_and_control_character_rules(
        fields: list[tuple[bytes, bytes]]) -> None:
    expected = (bool(fields) and all(_ORACLE_NAMES.fullmatch(n) for n, _ in fields)
                and not any(_ORACLE_FORBIDDEN.search(v) for _, v in fields))
    assert plain_fields(fields) == expected


@given(st.text(max_size=20), st.text(max_size=40), st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
def test_the_fast_wires_start_line_is_tornados(method: str, target: str, version: str) -> None:
    """Built without the namedtuple's interpreted __new__, it is the same value and type
    (the in-node Tornado apps and the redirect policy read its fields by name)."""
    from node.fastproto import start_line

    built = start_line(method, target, version)
    assert type(built) is httputil.RequestStartLine
    assert built == httputil.RequestStartLine(method, target, version)
    assert (built.method, built.path, built.version) == (method, target, version)
