"""Prepared static files on the fast wire: byte-for-byte the slow path's answer, one per
value of what the client accepts of Accept-Encoding when the answer varies on it, and
never older than `hold` (real uvloop server, raw loopback sockets, real files; the
monotonic clock is driven by the test)."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit.rawhttp import read_answer

from cache.memory import MemoryStore
from node.cachestage import CacheStage
from node.fastwire import FastHTTPServer, new_event_loop
from node.front import Front
from node.hitcache import HitCache
from node.http import Headers, Request, Response
from node.pipeline import Pipeline
from node.services import ServiceMap
from node.static import StaticConfig, StaticFiles
from node.statichits import StaticHits

pytestmark = pytest.mark.timeout(60)

STAMP = (("X-Scale0-Node", "n1; dc=x"),)
BIG = bytes(range(256)) * 800  # 200 KiB: above inline_max, streamed by the slow path


class Origin:
    """A Dispatcher for what no static mount owns: cacheable answers from memory."""

    async def dispatch(self, service: str, request: Request) -> Response:
        return Response(200, Headers([("Content-Type", "text/plain"),
                                      ("Cache-Control", "max-age=100")]), b"origin")


@dataclass
class Site:
    port: int
    root: Path
    stage: StaticFiles
    statics: StaticHits
    hits: HitCache
    clock: list[float]  # [monotonic now]
    front: Front
    server: FastHTTPServer


def files(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "logo.png").write_bytes(b"\x89PNG" + b"%x" * 500)
    (root / "big.png").write_bytes(BIG)
    (root / "small.txt").write_bytes(b"tiny")  # compressible, below gzip_min: no gzip ever
    (root / "page.txt").write_bytes(b"x" * 1024)  # gzipped on the fly for who accepts it
    (root / "pre.js").write_bytes(b"var x = 1;" * 10)  # below gzip_min, but has a sibling
    (root / "pre.js.gz").write_bytes(gzip.compress(b"var x = 1;" * 10))
    (root / "app.css").write_bytes(b"body{color:red}" * 40)  # both siblings, and gzip range
    (root / "app.css.br").write_bytes(b"(br bytes, trusted as they are)")
    (root / "app.css.gz").write_bytes(gzip.compress(b"body{color:red}" * 40))
    (root / "font.3f9a1c2b.woff2").write_bytes(b"wOF2" * 1000)  # fingerprinted: immutable
    (tmp_path / "secret.png").write_bytes(b"secret")
    return root


async def start(root: Path, *, with_cache: bool = False) -> Site:
    clock = [1_000.0]
    stage = StaticFiles([("/s", str(root))], StaticConfig(inline_max=64 * 1024))
    statics = StaticHits(monotonic=lambda: clock[0])
    statics.stamp = STAMP
    stage.prepared = statics
    stages = []
    if with_cache:
        cache = CacheStage(MemoryStore(), node_id="n1", monotonic=lambda: clock[0])
        stages.append(cache)
        hits = cache.hits
    else:
        hits = HitCache("")  # what node.server gives the wire without a cache
    hits.stamp = STAMP
    hits.more = statics.answer
    pipeline = Pipeline([stage], ServiceMap.from_specs([]), stages, Origin(), "n1")

    async def handle(request: Request) -> Response:
        response = await pipeline.handle(request)
        response.headers.set("X-Scale0-Node", "n1; dc=x")  # what node.server adds
        return response

    front = Front(handle)
    front.shortcut = hits
    server = FastHTTPServer(front)
    port = await server.listen("127.0.0.1", 0)
    return Site(port, root, stage, statics, hits, clock, front, server)


async def stop(site: Site) -> None:
    site.server.stop()
    await site.server.close_all_connections(1.0)


def serve(tmp_path: Path, scenario: Callable[[Site], Awaitable[None]], *,
          with_cache: bool = False) -> None:
    async def main() -> None:
        site = await start(files(tmp_path), with_cache=with_cache)
        try:
            await asyncio.wait_for(scenario(site), 30)
        finally:
            await stop(site)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


async def exchange(port: int, raw: bytes) -> tuple[bytes, bytes]:
    """Send `raw` on a new connection; read one response as (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answer = await read_answer(reader, bodyless=raw.startswith(b"HEAD "))
    writer.close()
    return answer


def get(path: str, extra: str = "", method: str = "GET") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: Example.com\r\nX-Request-Id: r-1\r\n"
            f"{extra}\r\n").encode()


def test_a_prepared_file_is_byte_identical_to_the_slow_answer(tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        for path in ("/s/logo.png", "/s/big.png", "/s/small.txt", "/s/font.3f9a1c2b.woff2",
                     "/s/logo.png?v=2"):
            site.stage.prepared = None
            streamed = await exchange(site.port, get(path))  # the slow path as it was
            site.stage.prepared = site.statics
            slow = await exchange(site.port, get(path))  # slow again, and offered
            served = site.statics.served
            fast = await exchange(site.port, get(path))
            assert site.statics.served == served + 1, path
            assert fast == slow == streamed, path  # head and body, byte for byte
            assert fast[0].startswith(b"HTTP/1.1 200 OK\r\n")
            for field in (b"etag", b"last-modified", b"cache-control", b"content-type",
                          b"accept-ranges", b"x-content-type-options"):
                assert b"\r\n" + field + b": " in fast[0].lower(), (path, field)
            assert b"\r\nX-Request-Id: r-1\r\n" in fast[0]
            assert b"\r\nX-Scale0-Node: n1; dc=x\r\n" in fast[0]
        assert len(site.statics) == 5
        # no client id, or a bad one: a fresh id, never the bad one echoed
        head, _ = await exchange(site.port, get("/s/logo.png").replace(b"r-1", b"bad id!"))
        assert b"bad id" not in head and b"\r\nX-Request-Id: " in head
        assert site.statics.served == 6

    serve(tmp_path, scenario)


def test_a_changed_file_is_served_new_after_hold(tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        await exchange(site.port, get("/s/logo.png"))
        (_, body) = await exchange(site.port, get("/s/logo.png"))
        assert site.statics.served == 1
        (site.root / "logo.png").write_bytes(b"new logo, another size")
        os.utime(site.root / "logo.png", ns=(2_000_000_000 * 10**9, 2_000_000_000 * 10**9))
        (_, still) = await exchange(site.port, get("/s/logo.png"))
        assert still == body  # within `hold`: the prepared answer
        site.clock[0] += site.statics.hold
        (head, fresh) = await exchange(site.port, get("/s/logo.png"))
        assert fresh == b"new logo, another size" and site.statics.served == 2
        assert b"\r\netag: \"16-" in head.lower()
        again = await exchange(site.port, get("/s/logo.png"))
        assert again == (head, fresh) and site.statics.served == 3  # prepared anew
        # deleted: gone from the wire within `hold` too
        (site.root / "logo.png").unlink()
        site.clock[0] += site.statics.hold
        (head, _) = await exchange(site.port, get("/s/logo.png"))
        assert head.startswith(b"HTTP/1.1 404 ")

    serve(tmp_path, scenario)


VARIANTS = ["", "Accept-Encoding: gzip\r\n", "Accept-Encoding: gzip, deflate, br\r\n",
            "Accept-Encoding: br;q=1, gzip;q=0\r\n", "Accept-Encoding: x-gzip;q=0.5\r\n",
            "Accept-Encoding: *;q=0\r\n", "Accept-Encoding: br\r\nAccept-Encoding: gzip\r\n"]


def test_answers_that_vary_on_accept_encoding_are_prepared_per_coding(tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        for path in ("/s/pre.js", "/s/page.txt", "/s/app.css"):
            site.front.shortcut = None  # the slow path's answers, for reference
            slow = {v: await exchange(site.port, get(path, v)) for v in VARIANTS}
            site.front.shortcut = site.hits
            site.clock[0] += site.statics.hold  # what the reference requests offered is gone
            for v in VARIANTS:
                await exchange(site.port, get(path, v))  # slow and offered, or prepared
                served = site.statics.served
                assert await exchange(site.port, get(path, v)) == slow[v], (path, v)
                assert site.statics.served == served + 1, (path, v)
            codings = {slow[v][0].split(b"Content-Encoding: ")[1].split(b"\r")[0]
                       if b"Content-Encoding" in slow[v][0] else b"" for v in VARIANTS}
            assert codings == ({b"", b"gzip", b"br"} if path == "/s/app.css" else {b"", b"gzip"})
        # one answer per value of codings_accepted that came: none, gzip, br, br and gzip
        assert len(site.statics) == 3 * 4  # keyed by what is accepted, not by what was sent

    serve(tmp_path, scenario)


# Pieces of Accept-Encoding values, well-formed or not, joined at random.
ACCEPT = st.lists(st.sampled_from([*"gzipbrx*;q=0.15,- \t", "GZIP", "br", "gzip", "x-gzip",
                                   ";q=0", ";q=1", "identity", "deflate", ", "]),
                  max_size=12).map(lambda pieces: "".join(pieces).strip(" \t"))


def test_for_any_accept_encoding_the_prepared_answer_is_the_slow_one(tmp_path: Path) -> None:
    """Property: whatever Accept-Encoding fields two clients send, in either order, each
    gets what the slow path sends it — the first one's answer prepared or not."""
    root = files(tmp_path)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        site = runner.run(start(root))

        @settings(max_examples=40)
        @given(path=st.sampled_from(["/s/page.txt", "/s/app.css", "/s/pre.js", "/s/logo.png"]),
               first=st.lists(ACCEPT, max_size=2), then=st.lists(ACCEPT, max_size=2))
        def check(path: str, first: list[str], then: list[str]) -> None:
            a, b = ("".join(f"Accept-Encoding: {v}\r\n" for v in vs) for vs in (first, then))

            async def one() -> None:
                site.clock[0] += site.statics.hold  # nothing prepared
                site.front.shortcut = None
                ref_a, ref_b = (await exchange(site.port, get(path, a)),
                                await exchange(site.port, get(path, b)))
                site.clock[0] += site.statics.hold
                site.front.shortcut = site.hits
                await exchange(site.port, get(path, a))  # offered
                assert await exchange(site.port, get(path, a)) == ref_a
                assert await exchange(site.port, get(path, b)) == ref_b
                assert await exchange(site.port, get(path, a)) == ref_a

            runner.run(asyncio.wait_for(one(), 10))

        try:
            check()
            assert site.statics.served > 0
        finally:
            runner.run(stop(site))


def test_range_conditional_and_head_go_the_slow_way(tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        head, _ = await exchange(site.port, get("/s/logo.png"))
        etag = next(line for line in head.split(b"\r\n") if line.startswith(b"Etag: "))[6:]
        assert len(site.statics) == 1
        (h, body) = await exchange(site.port, get("/s/logo.png", "Range: bytes=0-3\r\n"))
        assert h.startswith(b"HTTP/1.1 206 ") and body == b"\x89PNG"
        (h, _) = await exchange(site.port,
                                get("/s/logo.png", f"If-None-Match: {etag.decode()}\r\n"))
        assert h.startswith(b"HTTP/1.1 304 ")
        (h, body) = await exchange(site.port, get("/s/logo.png", method="HEAD"))
        assert h.startswith(b"HTTP/1.1 200 ") and body == b""
        assert site.statics.served == 0  # every one of them answered by the stage
        # a conditional or ranged request never offers its (partial, empty) answer either
        site.clock[0] += site.statics.hold
        await exchange(site.port, get("/s/big.png", "Range: bytes=0-9\r\n"))
        await exchange(site.port, get("/s/big.png", method="HEAD"))
        assert all(slot[2] != b"/s/big.png" for slot in site.statics._table)

    serve(tmp_path, scenario)


@pytest.mark.parametrize("path", ["/s/../secret.png", "/s/%2e%2e/secret.png", "/s/nope.png",
                                  "/s/.hidden.png", "/s"])
def test_traversal_missing_and_redirects_are_never_prepared(tmp_path: Path, path: str) -> None:
    async def scenario(site: Site) -> None:
        for _ in range(3):
            (head, body) = await exchange(site.port, get(path))
            assert head.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 301 ")), head
            assert b"secret" not in body
        assert len(site.statics) == 0 and site.statics.served == 0

    serve(tmp_path, scenario)


def test_with_a_cache_both_kinds_of_prepared_answer_are_served(tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        for _ in range(3):
            await exchange(site.port, get("/elsewhere"))  # miss, slow hit (offered), fast hit
            await exchange(site.port, get("/s/logo.png"))
        assert site.hits.counts["hit"] >= 2 and site.statics.served == 2

    serve(tmp_path, scenario, with_cache=True)


def test_if_match_and_if_unmodified_since_give_412_on_both_paths(tmp_path: Path) -> None:
    """RFC 9110 §13.1.1/§13.1.4, as nginx: a failed If-Match or If-Unmodified-Since is a 412,
    before any prepared answer is made (the full path) and while one is held."""
    old = "Mon, 01 Jan 2001 00:00:00 GMT"

    async def ask(site: Site, path: str, extra: str) -> bytes:
        head, _ = await exchange(site.port, get(path, extra))
        return head.split(b"\r\n", 1)[0]

    async def scenario(site: Site) -> None:
        for path in ("/s/logo.png", "/s/big.png"):  # big.png: streamed by the full path
            # the full path: nothing prepared for it yet
            failed = b"HTTP/1.1 412 Precondition Failed"
            assert await ask(site, path, 'If-Match: "zz"\r\n') == failed
            assert await ask(site, path, f"If-Unmodified-Since: {old}\r\n") == failed
            assert all(key[2] != path.encode() for key in site.statics._table)
            assert site.statics.served == 0
            head, _ = await exchange(site.port, get(path))  # offered
            etag = next(line for line in head.split(b"\r\n")
                        if line.startswith(b"Etag: "))[6:].decode()
            lm = next(line for line in head.split(b"\r\n")
                      if line.startswith(b"Last-Modified: "))[15:].decode()
            prepared = len(site.statics)
            # with an answer held for the target, the conditional ones still decide
            for extra, status in (('If-Match: "zz"\r\n', b"412"),
                                  (f"If-Match: W/{etag}\r\n", b"412"),  # strong comparison
                                  (f"If-Unmodified-Since: {old}\r\n", b"412"),
                                  (f'If-Match: "zz"\r\nIf-None-Match: {etag}\r\n', b"412"),
                                  (f'If-Match: "a", {etag}\r\n', b"200"),
                                  ("If-Match: *\r\n", b"200"),
                                  (f"If-Unmodified-Since: {lm}\r\n", b"200"),
                                  ("If-Unmodified-Since: garbage\r\n", b"200"),
                                  (f"If-Match: {etag}\r\nIf-Unmodified-Since: {old}\r\n", b"200"),
                                  (f"If-Match: {etag}\r\nIf-None-Match: {etag}\r\n", b"304"),
                                  (f"If-Unmodified-Since: {old}\r\nRange: bytes=0-3\r\n", b"412"),
                                  (f"If-Match: {etag}\r\nRange: bytes=0-3\r\n", b"206")):
                assert (await ask(site, path, extra)).split(b" ")[1] == status, (path, extra)
            full, _ = await exchange(site.port, get(path, f"If-Match: {etag}\r\n"))
            assert full.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"
            assert site.statics.served == 0 and len(site.statics) == prepared
        assert len(site.statics) == 2  # a plain GET now is the prepared answer
        await exchange(site.port, get("/s/logo.png"))
        assert site.statics.served == 1

    serve(tmp_path, scenario)
