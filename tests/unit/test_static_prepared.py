"""Which static answers may be prepared (node.static.preparable) and the store that holds
them (node.statichits): property tests on the pure decision and on the stage over real
files, and the store's bounds with an injected clock."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.http import Headers, Request, Response
from node.static import (
    StaticConfig,
    StaticFiles,
    content_type,
    gzip_on_the_fly,
    preparable,
)
from node.statichits import StaticHits

NAMES = ["a.png", "a.woff2", "a.txt", "a.css", "a.js", "a.svg", "a.json", "a.bin", "a.pdf",
         "a.wasm", "a.html", "a", "a.unknownext"]
CODINGS = st.sampled_from(["gzip", "x-gzip", "br", "deflate", "identity", "*", "zstd", "GZIP"])
QS = st.sampled_from([0.0, 0.001, 0.5, 1.0])


@given(name=st.sampled_from(NAMES), size=st.integers(0, 3 << 20), siblings=st.booleans(),
       gzip_min=st.integers(0, 4096), gzip_max=st.integers(0, 2 << 20),
       max_body=st.integers(0, 2 << 20), status=st.sampled_from([200, 206, 304, 404]),
       accepts=st.dictionaries(CODINGS.map(str.lower), QS, max_size=4))
def test_a_preparable_answer_is_never_gzipped_for_anyone(
        *, name: str, size: int, siblings: bool, gzip_min: int, gzip_max: int, max_body: int,
        status: int, accepts: dict[str, float]) -> None:
    config = StaticConfig(gzip_min=gzip_min, gzip_max=gzip_max)
    ctype = content_type(name)
    if preparable(status, ctype, size, siblings, config=config, max_body=max_body):
        assert status == 200 and not siblings and size <= max_body
        assert not gzip_on_the_fly(accepts, ctype, size, False, config)


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
                               "/a.png?v=1", "/missing"]),
       accept=st.lists(st.tuples(CODINGS, QS), max_size=3))
def test_what_the_stage_offers_is_what_any_accept_encoding_gets(
        stage: StaticFiles, target: str, accept: list[tuple[str, float]]) -> None:
    hits = StaticHits()
    bare = _ask(stage, target, [], hits)
    value = ", ".join(f"{c};q={q}" for c, q in accept)
    other = _ask(stage, target, [("Accept-Encoding", value)], None)
    if len(hits):  # offered: every client must get these very bytes
        assert (other.status, list(other.headers), other.body) == (
            bare.status, list(bare.headers), bare.body)
    assert bool(len(hits)) == (target in ("/a.png", "/b.txt", "/a.woff2", "/a.png?v=1"))


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


def test_only_plain_http_gets_are_wanted_and_answers_live_hold_seconds() -> None:
    clock = Clock()
    hits = StaticHits(hold=2.0, monotonic=clock, new_id=lambda: b"fresh")
    assert not hits.wants(_request("/a", scheme="https"))
    assert not hits.wants(_request("/a", method="HEAD"))
    assert not hits.wants(_request("http://a.test/a"))
    assert hits.wants(_request("/a"))
    hits.offer(_request("/a", scheme="https"), _file(10))
    hits.offer(_request("/a"), _file(10))
    assert len(hits) == 1 and not hits.wants(_request("/a"))
    found = hits.answer("http", b"a.test", b"/a", b" bad id ")
    assert found is not None and b"\r\nX-Request-Id: fresh\r\n" in found[0]
    found = hits.answer("http", b"a.test", b"/a", b"r-1")
    assert found is not None and b"\r\nX-Request-Id: r-1\r\n" in found[0]
    assert hits.served == 2
    clock.now = 2.0
    assert hits.wants(_request("/a"))  # expired: the slow path offers it anew
    assert hits.answer("http", b"a.test", b"/a", None) is None and len(hits) == 0
