"""The upstream client's request head (`request_head`), held to the builder it replaced:
whatever the fields (hop-by-hop ones in any case, those a Connection names, Host or
none, a Content-Length of its own), the body and the method, the same bytes go out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.http import Headers, Request
from node.worker.upstream import _DROP, _NO_BODY_METHODS, request_head

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL = ["Host", "Content-Length", "Connection", "Keep-Alive", "TE", "Trailer",
           "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Expect", "X-Named", "x-a"]


def any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda ups: "".join(c.upper() if u else c.lower() for c, u in zip(name, ups, strict=True)))


NAME = st.one_of(st.text(TCHAR, min_size=1, max_size=10),
                 st.sampled_from(SPECIAL).flatmap(any_case))
# Values as node.protocol lets them through (no CR, LF or NUL), past latin-1 too.
VALUE = st.text(st.characters(max_codepoint=0x17F, exclude_characters="\r\n\x00"), max_size=20)
CONNECTION = st.lists(st.one_of(NAME, st.just("")), max_size=4).flatmap(
    lambda names: st.sampled_from([",", ", ", " ,\t"]).map(lambda sep: sep.join(names)))
FIELD = st.one_of(st.tuples(NAME, VALUE), st.tuples(st.just("Connection"), CONNECTION))


class Stream:
    """A streamed body (never read here)."""

    async def read(self) -> bytes:
        return b""

    def cancel(self) -> None:
        pass


def old_head(request: Request, prefix: str, authority: str) -> bytes:
    """UpstreamClient._head before round 9, verbatim but for `self`."""
    rh = request.headers
    named = rh.get_all("Connection")
    drop = _DROP if not named else _DROP | {
        v.strip().lower() for v in named for v in v.split(",")}
    body = request.body
    lines = [f"{request.method} {prefix}{request.target} HTTP/1.1\r\n"]
    if "host" not in rh or "host" in drop:
        lines.append(f"Host: {authority}\r\n")
    lines += [f"{k}: {v}\r\n" for k, v in rh if k.lower() not in drop]
    if not isinstance(body, bytes):
        sent_length = rh.get("Content-Length")
        lines.append(f"Content-Length: {sent_length}\r\n" if sent_length else
                     "Transfer-Encoding: chunked\r\n")
    elif body or request.method not in _NO_BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def outcome(build: object, request: Request, prefix: str, authority: str) -> object:
    try:
        return build(request, prefix, authority)  # type: ignore[operator]
    except UnicodeEncodeError:
        return "unencodable"  # a value past latin-1: both refuse it alike (a 500)


@given(st.lists(FIELD, max_size=8),
       st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]),
       st.one_of(st.binary(max_size=3), st.just(None)),
       st.sampled_from(["", "/base"]), st.sampled_from(["/", "/a?b=1", "/x%20y"]))
def test_the_head_is_byte_for_byte_the_old_builders(
        fields: list[tuple[str, str]], method: str, body: bytes | None, prefix: str,
        target: str) -> None:
    request = Request(method, target, Headers(fields), Stream() if body is None else body)
    new = outcome(request_head, request, prefix, "origin:8080")
    assert new == outcome(old_head, request, prefix, "origin:8080")
    if isinstance(new, bytes):
        head = new.decode("latin-1")
        assert head.endswith("\r\n\r\n") and head.count("\r\n\r\n") == 1
        names = [line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:-2]]
        assert names.count("host") >= 1 and not {"connection", "keep-alive", "te",
                                                  "upgrade", "expect"} & set(names)


def test_fields_a_connection_names_are_dropped_and_a_host_added_when_it_goes() -> None:
    request = Request("GET", "/p", Headers([("Host", "h"), ("X-A", "1"), ("X-B", "2"),
                                             ("connection", "x-a , HOST"), ("TE", "x")]))
    assert request_head(request, "", "o:1") == b"GET /p HTTP/1.1\r\nHost: o:1\r\nX-B: 2\r\n\r\n"
    post = Request("POST", "/p", Headers([("Content-Length", "99")]), b"abc")
    assert request_head(post, "/b", "o:1") == (b"POST /b/p HTTP/1.1\r\nHost: o:1\r\n"
                                               b"Content-Length: 3\r\n\r\n")
