"""The upstream client's response-head parsing (`ResponseParse` over llhttp), by property:
however the bytes are split into reads, the outcome is the same; whatever the bytes,
the only failure is `Invalid` (a 502), and the head kept is bounded."""

from __future__ import annotations

import itertools

import httptools
from hypothesis import given
from hypothesis import strategies as st

from node.worker.upstreamconn import MAX_HEAD, Invalid, ResponseParse

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
