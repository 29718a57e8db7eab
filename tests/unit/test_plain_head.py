"""Property tests: the lane's head check (node.wirerules.plain_head) takes a request only
when the usual way — request_headers, check_request_head, normalise_target — would take
it too, and makes the same request of it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tornado import httputil

from node import wirerules
from node.errors import ClientError
from node.proxyheaders import normalise_target
from node.wirerules import check_request_head, plain_head, request_headers

NAMES = st.sampled_from([b"Host", b"host", b"HOST", b"Connection", b"Content-Length",
                         b"Transfer-Encoding", b"Expect", b"Upgrade", b"X-A", b"x-a",
                         b"Accept", b"Bad Name", b"", b"X\x7f"])
VALUES = st.sampled_from([b"a.test", b"A.Test:8080", b" a.test ", b"a.test,b.test", b"a b",
                          b"[::1]:80", b"[zz]", b"a.test:123456", b"close", b"keep-alive",
                          b"Keep-Alive, close", b"5", b"chunked", b"100-continue", b"",
                          b"\tx\t", b"\x01", b"caf\xe9", b"%41.test"])
TARGETS = st.sampled_from([b"/", b"/x?y=1", b"/%20", b"/", b"/a b", b"*", b"http://a.test/x",
                           b"x", b"/\x00"])
METHODS = st.sampled_from([b"GET", b"GET", b"HEAD", b"POST", b"OPTIONS", b"CONNECT"])
VERSIONS = st.sampled_from(["1.1", "1.1", "1.0", "0.9", "2.0"])
HOSTS = st.sampled_from([b"a.test", b"A.Test:8080", b" a.test ", b"[::1]:80", b"a.test,b.test",
                         b"[zz]", b"a.test:123456", b"a b", b"caf\xe9", b"%41.test"])
# Mostly one Host first (else nearly every head is refused), then anything.
FIELDS = st.builds(lambda host, rest: [*host, *rest],
                   st.lists(st.tuples(st.just(b"Host"), HOSTS), min_size=0, max_size=2),
                   st.lists(st.tuples(NAMES, VALUES), max_size=4))


def usual_way(method: bytes, version: str, url: bytes,
              fields: list[tuple[bytes, bytes]]) -> tuple[str, str, str, bool,
                                                          httputil.HTTPHeaders] | None:
    """What the Tornado-shaped path makes of a head: (method, target, host, keep-alive,
    fields); None when it answers 400."""
    text_method, full = method.decode("latin1"), "HTTP/" + version
    target = url.decode("latin1")
    try:
        headers = request_headers(fields)
        facts = check_request_head(text_method, target, full, headers)
        where = normalise_target(text_method, target, headers.get_list("Host"), full, "http")
    except (ClientError, httputil.HTTPInputError):
        return None
    if facts.has_body:
        return None
    return text_method, where.target, where.host, facts.keep_alive, headers


@settings(max_examples=1000)  # a pure function: a thousand heads take a second
@given(METHODS, VERSIONS, TARGETS, FIELDS)
def test_the_lane_takes_only_what_the_usual_way_takes_and_makes_the_same_request(
        method: bytes, version: str, url: bytes, fields: list[tuple[bytes, bytes]]) -> None:
    head = plain_head(method, version, url, fields)
    if head is None:
        return
    usual = usual_way(method, version, url, fields)
    assert usual is not None, "the lane took a head the usual way refuses"
    text_method, target, host, keep, headers = usual
    assert (head.method, head.target, head.host, head.keep_alive) == (
        text_method, target, host, keep)
    assert head.version == "HTTP/" + version
    ours = sorted((n.lower(), v) for n, v in head.fields if n.lower() != "host")
    theirs = sorted((n.lower(), v) for n, v in headers.get_all() if n.lower() != "host")
    assert ours == theirs
    assert [v for n, v in head.fields if n == "Host"] == [host]


@given(st.sampled_from([b"GET", b"HEAD"]), st.sampled_from(["1.1", "1.0"]),
       st.sampled_from([b"/", b"/x?y=1"]),
       st.lists(st.tuples(st.sampled_from([b"Accept", b"X-A", b"user-agent"]),
                          st.sampled_from([b"*/*", b" v ", b"a, b"])), max_size=4),
       st.sampled_from([b"a.test", b"A.TEST:80", b"[::1]"]))
def test_every_plain_get_takes_the_lane(method: bytes, version: str, url: bytes,
                                        fields: list[tuple[bytes, bytes]], host: bytes) -> None:
    """The lane is not a rare path: a bodyless GET or HEAD with valid fields takes it,
    names in the client's case and order."""
    head = plain_head(method, version, url, [(b"Host", host), *fields])
    assert head is not None
    assert [n for n, _ in head.fields] == ["Host", *(n.decode() for n, _ in fields)]
    assert head.host == host.decode().lower()


def test_the_memo_of_accepted_hosts_stays_bounded_and_never_holds_a_refused_one() -> None:
    """Host values that passed are remembered so their regexes run once, not per request;
    a client naming ever new hosts must not grow that memo without bound."""
    for i in range(3 * wirerules._ACCEPTED_HOSTS_KEPT):
        assert plain_head(b"GET", "1.1", b"/", [(b"Host", b"h%d.test" % i)]) is not None
        assert len(wirerules._ACCEPTED_HOSTS) <= wirerules._ACCEPTED_HOSTS_KEPT
    for bad in (b"a b", b"a.test,b.test", b"a\\b"):
        for _ in range(2):  # refused the second time too: nothing refused is remembered
            assert plain_head(b"GET", "1.1", b"/", [(b"Host", bad)]) is None
        assert bad.decode("latin1") not in wirerules._ACCEPTED_HOSTS
