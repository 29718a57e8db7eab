"""Prepared answers over https (the fast wire on TLS): byte-for-byte the slow path's, with
the https front's Strict-Transport-Security field in the slow path's place; an http and
an https request never share one, whatever scheme an absolute-form target names; plain
http to a host the policy redirects is never prepared. Real uvloop servers on loopback,
real TLS with a CA made here, real files; the clocks are driven by the test."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration.test_fasthit import Clock
from integration.test_tls import client_ctx
from testkit.pki import make_ca, make_leaf
from testkit.rawhttp import read_answer

from cache.memory import MemoryStore
from node.cachestage import CacheStage
from node.fastwire import FastHTTPServer, new_event_loop
from node.front import Front
from node.http import Headers, Request, Response
from node.pipeline import Pipeline
from node.services import ServiceMap
from node.static import StaticConfig, StaticFiles
from node.statichits import StaticHits
from node.tls import CertStore, HostPolicy, HttpsPolicy, TLSConfig

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

HSTS = b"max-age=600; includeSubDomains"
POLICY = HttpsPolicy({"example.com": HostPolicy(hsts_max_age=600, include_subdomains=True),
                      "moved.test": HostPolicy(redirect=True, hsts_max_age=60)})
BIG = b"y" * (64 * 1024)  # over TLS as one writelines()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    make_leaf(d, "example.com", "v1")
    return d


class Origin:
    """A Dispatcher answering cacheable bodies from memory."""

    async def dispatch(self, service: str, request: Request) -> Response:
        body = BIG if request.path == "/big" else b"hello " + request.target.encode()
        return Response(200, Headers([("Content-Type", "text/plain"),
                                      ("Cache-Control", "max-age=100")]), body)


@dataclass
class Site:
    http: int
    https: int
    ctx: ssl.SSLContext
    cache: CacheStage
    statics: StaticHits
    clock: Clock
    fronts: tuple[Front, Front]

    async def ask(self, raw: bytes, *, tls: bool) -> tuple[bytes, bytes]:
        """One request on a new connection: (head, body)."""
        port = self.https if tls else self.http
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=self.ctx if tls else None,
            server_hostname="example.com" if tls else None)
        writer.write(raw)
        answer = await read_answer(reader)
        writer.close()
        return answer

    def slow_only(self, on: bool) -> None:
        for front in self.fronts:
            front.shortcut = None if on else self.cache.hits


def get(target: str, host: str = "example.com", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: r-1\r\n{extra}\r\n".encode()


def serve(pki: Path, tmp_path: Path, scenario: Callable[[Site], Awaitable[None]]) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "logo.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 4)
    (www / "page.txt").write_bytes(b"text " * 300)  # gzipped on the fly for who accepts it

    async def main() -> None:
        clock = Clock(1_000_000.0)
        cache = CacheStage(MemoryStore(), node_id="n1", wall_clock=clock, monotonic=clock)
        statics = StaticHits(monotonic=clock)
        stage = StaticFiles([("/s", str(www))], StaticConfig())
        stage.prepared = statics
        hits = cache.hits
        hits.more = statics.answer
        hits.stamp = statics.stamp = (("X-Scale0-Node", "n1; dc=x"),)
        hits.https_policy = statics.https_policy = lambda: POLICY
        pipeline = Pipeline([stage], ServiceMap.from_specs([]), [cache], Origin(), "n1")

        async def handle(request: Request) -> Response:
            response = await pipeline.handle(request)
            response.headers.set("X-Scale0-Node", "n1; dc=x")  # what node.server adds
            return response

        plain, secure = Front(handle), Front(handle, scheme="https")
        store = CertStore(TLSConfig(((str(pki / "example.com-v1.pem"),
                                      str(pki / "example.com-v1.key")),)))
        servers = [FastHTTPServer(plain), FastHTTPServer(secure, ssl_context=store.context)]
        for front in (plain, secure):
            front.https_policy = lambda: POLICY
            front.shortcut = hits
        ctx = client_ctx(pki / "ca.pem")
        ctx.check_hostname = False  # moved.test is named by Host only
        site = Site(await servers[0].listen("127.0.0.1", 0),
                    await servers[1].listen("127.0.0.1", 0), ctx, cache, statics, clock,
                    (plain, secure))
        try:
            await asyncio.wait_for(scenario(site), 60)
        finally:
            for server in servers:
                server.stop()
                await server.close_all_connections(1.0)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def test_prepared_https_answers_are_the_slow_ones_with_hsts(pki: Path, tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        for target, extra in (("/a", ""), ("/big", ""), ("/s/logo.png", ""),
                              ("/s/page.txt", "Accept-Encoding: gzip, br\r\n"),
                              ("/s/page.txt", "")):
            raw = get(target, extra=extra)
            site.clock.now += 2.0  # nothing prepared: the slow path, then offered
            await site.ask(raw, tls=True)  # a miss for /a and /big, stored
            site.clock.now += 2.0
            slow = await site.ask(raw, tls=True)  # a slow hit or file, offered
            answered = site.cache.counts["hit"] + site.statics.served
            fast = await site.ask(raw, tls=True)
            assert site.cache.counts["hit"] + site.statics.served == answered + 1, target
            assert fast == slow, target  # head and body, byte for byte
            # where the https front puts it: after the answer's fields, before the length
            assert b"\r\nStrict-Transport-Security: " + HSTS + b"\r\nContent-Length: " in fast[0]
            assert fast[0].count(b"Strict-Transport-Security") == 1
        assert all(slot[0] == "https" for slot in site.cache.hits._table)

    serve(pki, tmp_path, scenario)


def test_http_and_https_never_share_an_answer(pki: Path, tmp_path: Path) -> None:
    async def scenario(site: Site) -> None:
        for target, misses in (("/a", 1), ("/s/logo.png", 0)):  # the cache keys by scheme
            for _ in range(misses):
                await site.ask(get(target), tls=False)
            plain = await site.ask(get(target), tls=False)  # offered for http
            assert await site.ask(get(target), tls=False) == plain
            assert b"Strict-Transport" not in plain[0]  # never over plain http (RFC 6797)
            for _ in range(misses):
                await site.ask(get(target), tls=True)
            held, served = len(site.cache.hits) + len(site.statics), site.statics.served
            secure = await site.ask(get(target), tls=True)  # slow, and offered for https
            assert len(site.cache.hits) + len(site.statics) == held + 1
            assert site.statics.served == served
            assert secure[0].replace(b"Strict-Transport-Security: " + HSTS + b"\r\n",
                                     b"") == plain[0]
            assert await site.ask(get(target), tls=True) == secure  # prepared for https
            assert await site.ask(get(target), tls=False) == plain
        assert sorted(slot[0] for slot in site.cache.hits._table) == ["http", "https"]
        assert sorted(key[0] for key in site.statics._table) == ["http", "https"]

    serve(pki, tmp_path, scenario)


def test_absolute_form_names_the_slot_it_would_serve(pki: Path, tmp_path: Path) -> None:
    """An absolute-form target's scheme, not the connection's, is the request's: its answer
    is prepared for that scheme's origin-form requests, with that scheme's fields."""
    async def scenario(site: Site) -> None:
        # plain http naming https: prepared for https clients, with HSTS
        site.slow_only(True)
        reference = await site.ask(get("/s/logo.png"), tls=True)
        site.slow_only(False)
        site.clock.now += 2.0
        await site.ask(get("https://example.com/s/logo.png"), tls=False)
        served = site.statics.served
        assert await site.ask(get("/s/logo.png"), tls=True) == reference
        assert site.statics.served == served + 1
        # https naming http for a host the policy redirects: served (the https front does
        # not redirect), but never prepared for plain http, which gets the 308
        head, _ = await site.ask(get("http://moved.test/s/logo.png", "moved.test"), tls=True)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert all(key[1] != b"moved.test" for key in site.statics._table)
        head, _ = await site.ask(get("/s/logo.png", "moved.test"), tls=False)
        assert head.startswith(b"HTTP/1.1 308 ")
        # over https that host's own answers are prepared, with its HSTS
        await site.ask(get("/s/logo.png", "moved.test"), tls=True)
        head, _ = await site.ask(get("/s/logo.png", "moved.test"), tls=True)
        assert b"\r\nStrict-Transport-Security: max-age=60\r\n" in head
        assert site.statics.served == served + 2

    serve(pki, tmp_path, scenario)
