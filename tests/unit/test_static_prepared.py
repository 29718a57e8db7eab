"""Which static answers may be prepared and under which key (node.static.codings_accepted,
varies_by_coding) and the store that holds them (node.statichits): property tests on the
pure decisions and on the stage over real files, and the store's bounds with an injected
clock."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.http import Headers, Request, Response
from node.static import (
    BR,
    GZIP,
    StaticConfig,
    StaticFiles,
    acceptable,
    accepted_encodings,
    codings_accepted,
    content_type,
    gzip_on_the_fly,
    varies_by_coding,
)
from node.statichits import ANY, StaticHits

NAMES = ["a.png", "a.woff2", "a.txt", "a.css", "a.js", "a.svg", "a.json", "a.bin", "a.pdf",
         "a.wasm", "a.html", "a", "a.unknownext"]
CODINGS = st.sampled_from(["gzip", "x-gzip", "br", "deflate", "identity", "*", "zstd", "GZIP"])
QS = st.sampled_from([0.0, 0.001, 0.5, 1.0])
PARAMS = st.sampled_from(["", ";q=0", ";q=0.0", "; q=1", ";q=0.5", ";q=abc", ";q=nan", ";Q=0",
                          ";q=-1", ";level=1", ";q=1e-3"])
ACCEPT = st.one_of(
    st.lists(st.tuples(CODINGS, PARAMS), max_size=4).map(
        lambda items: " , ".join(c + p for c, p in items)),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))


@given(name=st.sampled_from(NAMES), size=st.integers(0, 3 << 20),
       gzip_min=st.integers(0, 4096), gzip_max=st.integers(0, 2 << 20),
       a=ACCEPT, b=ACCEPT, ranged=st.booleans())
def test_codings_accepted_is_all_the_stage_reads_of_accept_encoding(
        *, name: str, size: int, gzip_min: int, gzip_max: int, a: str, b: str,
        ranged: bool) -> None:
    config = StaticConfig(gzip_min=gzip_min, gzip_max=gzip_max)
    ctype = content_type(name)
    x, y = accepted_encodings(a), accepted_encodings(b)
    bits = codings_accepted(a)
    assert bits == (BR if acceptable(x, "br") else 0) | (GZIP if acceptable(x, "gzip") else 0)
    if bits == codings_accepted(b):  # the same choice of sibling and of gzip on the fly
        assert acceptable(x, "br") == acceptable(y, "br")
        assert acceptable(x, "gzip") == acceptable(y, "gzip")
        assert gzip_on_the_fly(x, ctype, size, ranged, config) == gzip_on_the_fly(
            y, ctype, size, ranged, config)
    if not varies_by_coding(ctype, size, False, config):  # one answer for every client
        assert not gzip_on_the_fly(x, ctype, size, ranged, config)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> StaticFiles:
    site = tmp_path_factory.mktemp("site")
    for name, body in (("a.png", b"p" * 900), ("a.txt", b"t" * 900), ("b.txt", b"tiny"),
                       ("c.js", b"c" * 100), ("a.woff2", b"w" * 5000)):
        (site / name).write_bytes(body)
    (site / "c.js.gz").write_bytes(gzip.compress(b"c" * 100))
    return StaticFiles([("/", str(site))], StaticConfig(offload=False))


async def _passthrough(request: Request) -> Response:
    return Response(599)


def _ask(stage: StaticFiles, target: str, fields: list[tuple[str, str]],
         hits: StaticHits | None) -> Response:
    stage.prepared = hits
    request = Request("GET", target, Headers([("Host", "a.test"), *fields]), host="a.test")
    return asyncio.run(stage(request, _passthrough))


@given(target=st.sampled_from(["/a.png", "/a.txt", "/b.txt", "/c.js", "/a.woff2",
                               "/a.png?v=1", "/missing"]), a=ACCEPT, b=ACCEPT)
def test_what_the_stage_offers_is_what_every_request_of_its_key_gets(
        stage: StaticFiles, target: str, a: str, b: str) -> None:
    hits = StaticHits()
    offered = _ask(stage, target, [("Accept-Encoding", a)], hits)
    other = _ask(stage, target, [("Accept-Encoding", b)], None)
    assert len(hits) == (target != "/missing")
    for key in hits._table:
        assert key[3] == (ANY if target in ("/a.png", "/b.txt", "/a.woff2", "/a.png?v=1")
                          else codings_accepted(a))
        if key[3] in (ANY, codings_accepted(b)):  # b would be answered from it
            assert (other.status, list(other.headers), other.body) == (
                offered.status, list(offered.headers), offered.body)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _request(target: str, method: str = "GET", scheme: str = "http") -> Request:
    return Request(method, target, Headers(), scheme=scheme, host="a.test")


def _file(size: int) -> Response:
    return Response(200, Headers([("Content-Type", "image/png"), ("Content-Length", str(size))]),
                    b"x" * size)


def test_the_store_is_bounded_in_count_and_bytes() -> None:
    hits = StaticHits(max_entries=3, max_bytes=10_000, max_body=4_000, new_id=lambda: b"id")
    for i in range(5):
        hits.offer(_request(f"/{i}"), _file(100))
    assert len(hits) == 3  # oldest dropped first
    assert hits.answer("http", b"a.test", b"/0", None) is None
    assert hits.answer("http", b"a.test", b"/4", None) is not None
    hits.offer(_request("/too-big"), _file(4_001))
    assert hits.answer("http", b"a.test", b"/too-big", None) is None
    for i in range(5, 8):
        hits.offer(_request(f"/{i}"), _file(3_900))
    assert len(hits) == 2 and hits._bytes <= 10_000
    hits.forget()
    assert len(hits) == 0 and hits._bytes == 0


def test_only_gets_are_wanted_and_answers_live_hold_seconds() -> None:
    clock = Clock()
    hits = StaticHits(hold=2.0, monotonic=clock, new_id=lambda: b"fresh")
    assert hits.wants(_request("/a", scheme="https"))  # with the front's HSTS, if any
    assert not hits.wants(_request("/a", method="HEAD"))
    assert not hits.wants(_request("http://a.test/a"))
    assert hits.wants(_request("/a"))
    hits.offer(_request("/a", scheme="https"), _file(10))
    hits.offer(_request("/a"), _file(10))
    assert len(hits) == 2 and not hits.wants(_request("/a"))
    hits.forget()
    hits.offer(_request("/a"), _file(10))
    found = hits.answer("http", b"a.test", b"/a", b" bad id ")
    assert found is not None and b"\r\nX-Request-Id: fresh\r\n" in found[0]
    found = hits.answer("http", b"a.test", b"/a", b"r-1")
    assert found is not None and b"\r\nX-Request-Id: r-1\r\n" in found[0]
    assert hits.served == 2
    clock.now = 2.0
    assert hits.wants(_request("/a"))  # expired: the slow path offers it anew
    assert hits.answer("http", b"a.test", b"/a", None) is None and len(hits) == 0


def test_a_request_begun_before_a_forget_offers_nothing() -> None:
    """A reload forgets every answer; one the old rules were still serving must not come
    back by an offer that lands after it."""
    hits = StaticHits()
    early, late = _request("/a"), _request("/b")
    early.received = late.received - 1.0  # received a moment before the reload
    hits.forget()
    hits.offer(early, _file(10))
    assert len(hits) == 0
    late.received = hits._epoch
    hits.offer(late, _file(10))
    assert len(hits) == 1
