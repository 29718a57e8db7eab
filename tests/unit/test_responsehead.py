"""node.responsehead writes the same head as the Tornado-typed path it replaced, and
refuses before writing whatever that path would have choked on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tornado import httputil

from node.responsehead import BadField, bodied_head, field_map, frame, normal_name

NAMES = st.one_of(
    st.sampled_from(["Content-Type", "content-length", "CONTENT-LENGTH", "Transfer-Encoding",
                     "Set-Cookie", "set-cookie", "Connection", "x-request-id", "Via", "ETag",
                     "strict-transport-security", "X-a-B"]),
    st.text(st.characters(codec="latin-1"), min_size=1, max_size=8),
)
VALUES = st.one_of(st.sampled_from(["3", "0", "chunked", "a=b", "close", " x ", "", "\t"]),
                   st.text(st.characters(codec="latin-1"), max_size=12),
                   st.text(max_size=4))
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
STATUSES = st.sampled_from([200, 204, 206, 301, 304, 404, 502])


@dataclass(frozen=True)
class Case:
    """One answer to one request, as Front._write meets it."""

    fields: list[tuple[str, str]]
    status: int
    method: str
    version: str
    connection: str | None  # the request's Connection field
    close: bool
    hsts: bool

    @property
    def no_body(self) -> bool:
        return self.method == "HEAD" or self.status in (204, 304)

    @property
    def extra(self) -> dict[str, str]:
        """What Front._write sets over the answer's fields, in its order."""
        sts = {"Strict-Transport-Security": "max-age=1"} if self.hsts else {}
        return sts | ({} if self.no_body else {"Content-Length": "3"})


CASES = st.builds(Case, FIELDS, STATUSES, st.sampled_from(["GET", "HEAD"]),
                  st.sampled_from(["HTTP/1.0", "HTTP/1.1"]),
                  st.sampled_from([None, "keep-alive", "close"]), st.booleans(), st.booleans())


def tornado_head(case: Case) -> bytes:
    """The path Front._write took before: HTTPHeaders.add per kept field (its checks
    included), the extra fields set over them, then Tornado's write_headers rules."""
    headers = httputil.HTTPHeaders()
    for name, value in case.fields:
        lname = name.lower()
        if lname == "transfer-encoding" or (lname == "content-length"
                                            and (case.status == 204 or not case.no_body)):
            continue
        headers.add(name, value)
    for name, value in case.extra.items():
        headers[name] = value
    version = case.version
    chunking = version == "HTTP/1.1" and not case.no_body and "Content-Length" not in headers
    if version == "HTTP/1.1" and case.close:
        headers["Connection"] = "close"
    if version == "HTTP/1.0" and (case.no_body or "Content-Length" in headers) and (
            (case.connection or "").lower() == "keep-alive" and not case.close):
        headers["Connection"] = "Keep-Alive"
    if chunking:
        headers["Transfer-Encoding"] = "chunked"
    lines = [b"HTTP/1.1 %d R" % case.status]
    lines.extend(f"{n}: {v}".encode("latin1") for n, v in headers.get_all())
    return b"\r\n".join(lines) + b"\r\n\r\n"


@given(CASES)
def test_same_bytes_as_the_tornado_path(case: Case) -> None:
    try:
        expected = tornado_head(case)
    except (httputil.HTTPInputError, UnicodeEncodeError):
        tornado_refused = True
    else:
        tornado_refused = False
    try:
        mine = field_map(case.fields, case.status, case.no_body)
        for name, value in case.extra.items():
            mine[name] = [value]
        framing = frame(case.method, case.version, case.status, "R", mine,
                        request_connection=case.connection, close=case.close)
    except ValueError:  # BadField included
        # refused here: Tornado refused too, or it was a Content-Length it would choke on
        assert tornado_refused or any(n.lower() == "content-length" for n, _ in case.fields)
        return
    if tornado_refused:
        # accepted here only because spaces around a value are trimmed, not refused
        assert any(v != v.strip(" \t") for _, v in case.fields)
        return
    assert framing.head == expected


@given(FIELDS)
def test_no_value_can_split_the_head(fields: list[tuple[str, str]]) -> None:
    try:
        framing = frame("GET", "HTTP/1.1", 200, "OK", field_map(fields, 200, False))
    except ValueError:
        return
    head = framing.head
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1
    assert head.count(b"\n") == head.count(b"\r\n")
    assert all(b":" in line for line in head.split(b"\r\n")[1:-2])


@pytest.mark.parametrize("name, value", [("X-A", "a\r\nInjected: 1"), ("X-A", "a\nb"),
                                         ("X A", "v"), ("X-A", "nul\x00"), ("X-A", "é\u0101")])
def test_a_field_that_could_corrupt_the_head_is_refused(name: str, value: str) -> None:
    with pytest.raises(BadField):
        field_map([(name, value)], 200, False)


def test_names_are_written_as_tornado_writes_them() -> None:
    assert normal_name("x-REQUEST-id") == "X-Request-Id" == httputil._normalize_header(
        "x-REQUEST-id")
    fields = field_map([("set-cookie", "a=1"), ("Via", "1.1 n"), ("Set-Cookie", "b=2")],
                       200, False)
    assert list(fields.items()) == [("Set-Cookie", ["a=1", "b=2"]), ("Via", ["1.1 n"])]


def test_an_empty_head_has_no_stray_line() -> None:
    assert frame("GET", "HTTP/1.1", 204, "No Content", {}).head == (
        b"HTTP/1.1 204 No Content\r\n\r\n")


def _repeats_apart(fields: list[tuple[str, str]]) -> bool:
    """Whether a name (as written) comes back after another one, framing fields left out,
    before any name that is not a token."""
    kept: list[str] = []
    for name, _ in fields:
        try:
            norm = normal_name(name)
        except BadField:
            break
        if norm not in ("Content-Length", "Transfer-Encoding"):
            kept.append(norm)
    runs = [n for i, n in enumerate(kept) if i == 0 or kept[i - 1] != n]
    return len(runs) != len(set(runs))


@given(FIELDS, st.sampled_from([200, 206, 301, 404, 502]), st.integers(0, 1 << 40))
def test_the_bodied_head_is_the_usual_head(fields: list[tuple[str, str]], status: int,
                                           length: int) -> None:
    """Front._write's shortcut writes what field_map and frame write for a kept-alive
    HTTP/1.1 answer with a body, refuses what they refuse, and steps aside only for a
    name that comes back after another (FieldMap moves it up)."""
    try:
        usual = field_map(fields, status, False)
        usual["Content-Length"] = [str(length)]
        expected: bytes | None = frame("GET", "HTTP/1.1", status, "R", usual).head
    except BadField:
        expected = None
    try:
        mine = bodied_head(status, "R", fields, length)
    except BadField:
        assert expected is None
        return
    if mine is None:
        assert _repeats_apart(fields)
        return
    assert expected is not None and mine == expected


def test_the_bodied_head_steps_aside_for_a_name_that_comes_back() -> None:
    fields = [("Set-Cookie", "a=1"), ("Via", "1.1 n"), ("set-cookie", "b=2")]
    assert bodied_head(200, "OK", fields, 3) is None
    assert bodied_head(200, "OK", fields[:1] + fields[2:] + fields[1:2], 3) == (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nVia: 1.1 n\r\n"
        b"Content-Length: 3\r\n\r\n")
