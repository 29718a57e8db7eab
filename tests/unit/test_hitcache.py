"""node.hitcache: prepared answers agree with cache.rules.decide, stay bounded, and are
forgotten when told (pure: clocks injected)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from cache.cachecontrol import Directives
from cache.entry import CacheEntry
from cache.rules import Action, Policy, decide
from node.hitcache import HitCache, build_head
from node.http import Headers, Request

NAMES = st.sampled_from(["Age", "age", "X-Cache", "Cache-Status", "Content-Length",
                         "Transfer-Encoding", "X-Request-Id", "Set-Cookie", "ETag", "Date"])
VALUES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(headers: tuple[tuple[str, str], ...], body: bytes = b"hi", key: str = "k",
          rt: float = 1000.0) -> CacheEntry:
    return CacheEntry(key, "", 200, headers, body, rt - 0.5, rt)


def plain_get(target: str = "/x") -> Request:
    return Request("GET", target, Headers([("Host", "h")]), host="h")


@given(st.lists(st.tuples(NAMES, VALUES), max_size=8), st.binary(max_size=64))
def test_the_template_has_each_hole_once_and_frames_the_body(
        fields: list[tuple[str, str]], body: bytes) -> None:
    head = build_head(entry(tuple(fields), body), "scale0-n")
    assert head is not None
    filled = head % {b"age": 7, b"ttl": 3, b"rid": b"abc"}
    lines = filled.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and filled.endswith(b"\r\n\r\n")
    assert [ln for ln in lines if ln.lower().startswith(b"age:")] == [b"Age: 7"]
    assert [ln for ln in lines if ln.lower().startswith(b"content-length:")] == \
        [b"Content-Length: %d" % len(body)]
    assert not any(ln.lower().startswith(b"transfer-encoding") for ln in lines)
    assert re.search(rb"\r\nCache-Status: scale0-n; hit; ttl=3\r\n", filled)
    assert filled.count(b"X-Cache: HIT") == 1


def test_vary_and_bodiless_statuses_are_never_prepared() -> None:
    assert build_head(entry((("Vary", "Accept"),)), "c") is None
    assert build_head(CacheEntry("k", "", 204, (), b"", 0.0, 0.0), "c") is None


@given(st.integers(0, 10_000), st.floats(0, 5000), st.integers(0, 600))
def test_answers_exactly_while_decide_says_fresh(max_age: int, later: float,
                                                 age_field: int) -> None:
    wall, mono = Clock(1000.0), Clock(0.0)
    hits = HitCache("c", wall_clock=wall, monotonic=mono, hold=1e9)
    headers = (("Cache-Control", f"max-age={max_age}"), ("Age", str(age_field)))
    e = entry(headers)
    policy = Policy(True, 0.0, 0.0)
    verdict = decide(200, headers, request_time=e.request_time, response_time=e.response_time,
                     request_cc=Directives(), now=wall(), policy=policy)
    if verdict.action is not Action.FRESH:
        return
    hits.offer(plain_get(), e, verdict.lifetime)
    wall.now += later
    now = decide(200, headers, request_time=e.request_time, response_time=e.response_time,
                 request_cc=Directives(), now=wall(), policy=policy)
    got = hits.answer("http", b"h", b"/x", b"rid-1")
    if now.action is Action.FRESH:
        assert got is not None
        assert b"\r\nAge: %d\r\n" % int(now.age) in got[0]
        assert b"; ttl=%d\r\n" % int(now.ttl) in got[0]
        assert b"\r\nX-Request-Id: rid-1\r\n" in got[0]
    else:
        assert got is None and len(hits) == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3000)), max_size=60))
def test_bounded_in_count_and_bytes_and_forget_by_key(offers: list[tuple[int, int]]) -> None:
    hits = HitCache("c", max_entries=10, max_bytes=5000, wall_clock=Clock(1000.0),
                    monotonic=Clock(0.0))
    for n, size in offers:
        e = entry((("Cache-Control", "max-age=60"),), b"x" * size, key=f"k{n % 7}")
        hits.offer(plain_get(f"/{n}"), e, 60.0)
        assert len(hits) <= 10 and hits._bytes <= 5000
        assert hits._bytes == sum(len(p.body) for p in hits._table.values())
    for k in range(7):
        hits.forget(f"k{k}")
        assert all(p.key != f"k{k}" for p in hits._table.values())
    assert len(hits) == 0 and hits._bytes == 0


def test_hold_expires_and_prefix_forget() -> None:
    mono = Clock(0.0)
    hits = HitCache("c", wall_clock=Clock(1000.0), monotonic=mono, hold=1.0)
    hits.offer(plain_get("/a"), entry((), key="http://h/a"), 60.0)
    hits.offer(plain_get("/b"), entry((), key="http://h/b"), 60.0)
    assert hits.answer("http", b"h", b"/a", None) is not None
    hits.forget("http://h/", prefix=True)
    assert len(hits) == 0
    hits.offer(plain_get("/a"), entry((), key="http://h/a"), 60.0)
    mono.now = 1.0
    assert hits.answer("http", b"h", b"/a", None) is None
    assert hits.answer("https", b"h", b"/a", None) is None


def test_ready_only_with_something_to_answer() -> None:
    """The fast wire asks the shortcut only when it is ready: something prepared here, or
    in `more` (asked when it does not say how much it holds)."""
    hits = HitCache("c", wall_clock=Clock(1000.0), monotonic=Clock(0.0), hold=1.0)
    assert not hits.ready()  # no cache entry prepared, nothing behind it
    held: list[int] = [0]
    hits.more = lambda *_a, **_k: None
    assert hits.ready()  # a `more` that does not say: asked
    hits.more_held = lambda: held[0]
    assert not hits.ready()  # no static file prepared either
    held[0] = 1
    assert hits.ready()
    held[0] = 0
    hits.offer(plain_get("/a"), entry((), key="http://h/a"), 60.0)
    assert hits.ready()
    hits.forget()
    assert not hits.ready()
