"""The upstream client's response-head parsing (`ResponseParse` over llhttp), by property:
however the bytes are split into reads, the outcome is the same; whatever the bytes,
the only failure is `Invalid` (a 502), and the head kept is bounded."""

from __future__ import annotations

import itertools

import httptools
from hypothesis import given
from hypothesis import strategies as st

from node.worker import upstreamconn
from node.worker.upstreamconn import HOP_BY_HOP, MAX_HEAD, Invalid, ResponseParse

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
VALUE = st.text("abc xyz;=/0123456789", max_size=40).map(str.strip)


def parse(pieces: list[bytes]) -> tuple[str, object]:
    p = ResponseParse()
    p.parser = httptools.HttpResponseParser(p)
    try:
        for piece in pieces:
            p.feed(piece)
    except Invalid as exc:
        return "invalid", str(exc)
    return "ok", (p.parser.get_status_code() if p.headers_done else None, p.headers,
                  b"".join(p.body), p.done, p.extra)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    interim = draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2))
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500]))
    fields = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=5))
    body = draw(st.binary(max_size=300))
    chunked = draw(st.booleans())
    out = b"".join(b"HTTP/1.1 %d X\r\n\r\n" % s for s in interim)
    head = [f"HTTP/1.1 {status} Reason"] + [f"x-{k}: {v}" for k, v in fields]
    if status in (204, 304):
        body = b""
    if chunked and status not in (204, 304):
        head.append("Transfer-Encoding: chunked")
        payload = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    trailing = draw(st.sampled_from([b"", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"]))
    return out + ("\r\n".join(head) + "\r\n\r\n").encode() + payload + trailing


@given(responses(), st.lists(st.integers(0, 2000), max_size=6))
def test_any_split_of_a_response_parses_the_same(data: bytes, cuts: list[int]) -> None:
    whole = parse([data])
    assert whole[0] == "ok" and isinstance(whole[1], tuple)
    status, headers, _body, done, _extra = whole[1]
    assert status is not None and status >= 200 and done  # 1xx heads never surface
    assert all(not k.lower().startswith("link") for k, _ in headers)
    assert parse(split(data, cuts)) == whole


@given(st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=4))
def test_any_bytes_are_parsed_or_refused_never_raised(data: bytes, cuts: list[int]) -> None:
    outcome = parse(split(b"HTTP/1.1 " + data, cuts))
    assert outcome[0] in ("ok", "invalid")


@given(st.integers(1, 8), st.sampled_from([1024, 65536]))
def test_a_head_larger_than_the_limit_is_refused_whatever_the_reads(n: int, read: int) -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %b\r\n" % (i, b"v" * 9000) for i in range(n))
    data = big + b"Content-Length: 0\r\n\r\n"
    outcome = parse([data[i:i + read] for i in range(0, len(data), read)])
    assert outcome[0] == ("invalid" if len(big) > MAX_HEAD else "ok")


def test_bad_values_are_refused() -> None:
    for value in (b"a\rb", b"a\nb", b"a\x00b"):
        assert parse([b"HTTP/1.1 200 OK\r\nX: " + value + b"\r\nContent-Length: 0\r\n\r\n"])[0] \
            == "invalid"


ANY_NAME = st.one_of(
    st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            min_size=1, max_size=8),
    st.sampled_from(sorted(HOP_BY_HOP | {"content-length", "date", "set-cookie"})).flatmap(
        lambda n: st.lists(st.booleans(), min_size=len(n), max_size=len(n)).map(
            lambda ups: "".join(c.upper() if u else c for c, u in zip(n, ups, strict=True)))))
RAW_VALUE = st.binary(max_size=12).map(
    lambda b: b.translate(None, b"\r\n\x00").strip(b" \t"))


def sorted_by_the_old_rules(fields: list[tuple[bytes, bytes]]) -> tuple[object, ...]:
    """ResponseParse.on_header before round 9, as an oracle: (kept, te, cl)."""
    kept, te, cl = [], [], None
    for name, value in fields:
        lname = name.lower()
        if lname in {n.encode() for n in HOP_BY_HOP}:
            if lname == b"transfer-encoding":
                te.append(value.decode("latin-1"))
            continue
        if lname == b"content-length" and cl is None:
            cl = value.decode("latin-1")
        kept.append((name.decode("latin-1"), value.decode("latin-1")))
    return kept, te, cl


@given(st.lists(st.tuples(ANY_NAME.map(str.encode), RAW_VALUE), max_size=10),
       st.integers(1, 4))
def test_fields_are_sorted_as_the_old_rules_sorted_them_whatever_the_name_cache(
        fields: list[tuple[bytes, bytes]], kept_names: int) -> None:
    """Names are remembered (`_NAMES`), a few at a time here so the cache also clears."""
    saved = upstreamconn._NAMES_KEPT
    upstreamconn._NAMES_KEPT = kept_names
    upstreamconn._NAMES.clear()
    try:
        for _ in range(2):  # the second time from the cache
            p = ResponseParse()
            p.parser = httptools.HttpResponseParser(p)
            for name, value in fields:
                p.on_header(name, value)
            p.on_headers_complete()
            assert (p.headers, p.te, p.cl) == sorted_by_the_old_rules(fields)
            assert len(upstreamconn._NAMES) <= kept_names
    finally:
        upstreamconn._NAMES_KEPT = saved
