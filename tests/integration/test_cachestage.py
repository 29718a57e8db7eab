"""CacheStage over a real MemoryStore: hits, coalescing, revalidation, swr/sie, purge, poisoning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.memory import MemoryStore
from cache.status import CacheStatus, Outcome, status_headers
from node.body import BodyChannel, read_body
from node.cacheconfig import CacheConfig
from node.cachestage import CacheStage
from node.errors import ClientError, ConfigError, UpstreamError
from node.http import Headers, Request, Response

T0 = 1_700_000_000.0
Handler = Callable[[Request, int], Awaitable[Response]]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Origin:
    """call_next: counts calls, remembers requests, answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls = 0
        self.seen: list[Request] = []
        self.reached = asyncio.Event()  # set by the first call

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        self.reached.set()
        self.seen.append(request)
        return await self.handler(request, self.calls)


def fixed(
    status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b"hello"
) -> Handler:
    async def handler(request: Request, n: int) -> Response:
        return Response(
            status,
            Headers(headers or [("Cache-Control", "max-age=60")]),
            body + str(n).encode() if body else b"",
        )

    return handler


def get(
    target: str = "/x",
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    client: str = "127.0.0.1",
    service: str = "www",
) -> Request:
    return Request(
        method, target, Headers(headers or []), host="example.com", client=client, service=service
    )


def make(config: CacheConfig | None = None) -> tuple[CacheStage, Clock, MemoryStore]:
    clock = Clock()
    store = MemoryStore()
    return CacheStage(store, config or CacheConfig(), node_id="n1", wall_clock=clock), clock, store


async def body_of(response: Response) -> bytes:
    return await read_body(response.body, 1 << 30)


def test_miss_then_hit_with_age_and_head() -> None:
    async def main() -> None:
        stage, clock, _ = make()
        origin = Origin(fixed())
        first = await stage(get(), origin)
        assert first.headers.get("X-Cache") == "MISS" and first.outcome == "miss"
        assert "stored" in (first.headers.get("Cache-Status") or "")
        clock.now += 7
        hit = await stage(get(), origin)
        assert (hit.status, hit.body, hit.outcome, hit.served_by) == (200, b"hello1", "hit", "n1")
        assert hit.headers.get("X-Cache") == "HIT" and hit.headers.get("Age") == "7"
        assert hit.headers.get("Cache-Status") == "scale0-n1; hit; ttl=53"
        head = await stage(get(method="HEAD"), origin)
        assert head.body == b"" and head.headers.get("Content-Length") == "6"
        assert origin.calls == 1

    run(main())


def test_a_stale_answer_says_a_negative_ttl() -> None:
    async def main() -> None:
        stage, clock, _ = make()
        origin = Origin(fixed(headers=[("Cache-Control", "max-age=60, stale-while-revalidate=30")]))
        await stage(get(), origin)
        clock.now += 60.4  # 0.4 s past its freshness: served stale while it is refreshed
        stale = await stage(get(), origin)
        assert stale.headers.get("X-Cache") == "STALE"
        assert stale.headers.get("Cache-Status") == "scale0-n1; hit; ttl=-1; detail=swr"
        await stage.drain()

    run(main())


def test_200_concurrent_identical_gets_reach_the_origin_once() -> None:
    async def main() -> None:
        stage, _, _ = make()
        gate = asyncio.Event()

        async def slow(request: Request, n: int) -> Response:
            await gate.wait()
            return Response(200, Headers([("Cache-Control", "max-age=60")]), b"once")

        origin = Origin(slow)
        tasks = [asyncio.create_task(stage(get(), origin)) for _ in range(200)]
        await origin.reached.wait()
        gate.set()
        responses = await asyncio.gather(*tasks)
        assert origin.calls == 1
        outcomes = [r.headers.get("X-Cache") for r in responses]
        assert outcomes.count("MISS") == 1 and outcomes.count("COALESCED") == 199
        assert all(r.body == b"once" for r in responses)

    run(main())


def test_private_answers_release_waiters_in_parallel() -> None:
    async def main() -> None:
        stage, _, store = make()
        n = 50
        all_in = asyncio.Event()
        first_gate = asyncio.Event()

        async def private(request: Request, count: int) -> Response:
            if count == 1:
                await first_gate.wait()
            elif count == n:
                all_in.set()
            else:
                await all_in.wait()  # only completes if the others are in flight too
            return Response(200, Headers([("Cache-Control", "private, max-age=60")]), b"mine")

        origin = Origin(private)
        tasks = [asyncio.create_task(stage(get(), origin)) for _ in range(n)]
        await origin.reached.wait()
        first_gate.set()
        responses = await asyncio.gather(*tasks)
        assert origin.calls == n
        assert all(r.headers.get("X-Cache") == "MISS" for r in responses)
        assert await store.get("http://example.com/x") == []

    run(main())


@pytest.mark.parametrize("cache_control", ["no-store", "private, max-age=60"])
def test_after_an_uncacheable_answer_requests_do_not_queue_behind_each_other(
        cache_control: str) -> None:
    """Hit-for-miss: once a URL answered uncacheably, identical misses go to the origin side
    by side (a leader they wait for would double their latency, every time)."""
    async def main() -> None:
        stage, _, _ = make()
        both_in = asyncio.Event()

        async def answer(request: Request, count: int) -> Response:
            if count == 2:
                await both_in.wait()  # completes only if the third is in flight too
            elif count == 3:
                both_in.set()
            return Response(200, Headers([("Cache-Control", cache_control)]), b"live")

        origin = Origin(answer)
        await stage(get(), origin)
        second, third = await asyncio.wait_for(
            asyncio.gather(stage(get(), origin), stage(get(), origin)), 5)
        assert (second.body, third.body) == (b"live", b"live") and origin.calls == 3

    run(main())


class CountingStore(MemoryStore):
    """A real MemoryStore that counts lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, key: str) -> list[CacheEntry]:
        self.gets += 1
        return await super().get(key)


def counting(config: CacheConfig | None = None) -> tuple[CacheStage, Clock, Clock, CountingStore]:
    """A stage over a CountingStore, with its wall clock and its monotonic clock."""
    wall, mono, store = Clock(), Clock(), CountingStore()
    stage = CacheStage(store, config or CacheConfig(), node_id="n1", wall_clock=wall,
                       monotonic=mono)
    return stage, wall, mono, store


def test_an_uncacheable_url_with_nothing_stored_goes_without_a_lookup_while_marked() -> None:
    """Varnish's hit-for-miss object: for hit_for_miss seconds after an answer that could
    not be stored, with nothing stored for the key, misses skip the store's lookup (a
    stat(2) with the files store); after the mark one lookup looks again, and marks again."""
    async def main() -> None:
        stage, _, mono, store = counting(CacheConfig(hit_for_miss=10))
        origin = Origin(fixed(headers=[("Cache-Control", "no-store")]))
        first = await stage(get(), origin)
        assert store.gets == 1 and "detail=no-store" in (first.headers.get("Cache-Status") or "")
        for _ in range(3):
            passed = await stage(get(), origin)
            assert passed.headers.get("Cache-Status") == first.headers.get("Cache-Status")
        assert (store.gets, origin.calls) == (1, 4)
        head = await stage(get(method="HEAD"), origin)  # HEAD still looks (answered by GETs)
        assert head.headers.get("X-Cache") == "MISS" and store.gets == 2
        mono.now += 10.5
        await stage(get(), origin)
        await stage(get(), origin)
        assert (store.gets, origin.calls) == (3, 7)

    run(main())


def test_a_passed_url_whose_answer_turns_storable_is_stored_and_then_hit() -> None:
    async def main() -> None:
        stage, _, _, store = counting()

        async def turns(request: Request, n: int) -> Response:
            cc = "no-store" if n == 1 else "max-age=60"
            return Response(200, Headers([("Cache-Control", cc)]), f"v{n}".encode())

        origin = Origin(turns)
        await stage(get(), origin)
        stored = await stage(get(), origin)  # no lookup, but admitted: stored
        assert store.gets == 1 and "stored" in (stored.headers.get("Cache-Status") or "")
        hit = await stage(get(), origin)
        assert (hit.headers.get("X-Cache"), hit.body, origin.calls) == ("HIT", b"v2", 2)

    run(main())


def test_a_replica_stored_while_a_url_is_marked_is_served() -> None:
    async def main() -> None:
        stage, wall, _, _ = counting()
        origin = Origin(fixed(headers=[("Cache-Control", "no-store")]))
        await stage(get(), origin)
        key = stage.key_of(get())
        replica = CacheEntry(key, "", 200, (("Cache-Control", "max-age=60"),), b"peer",
                             wall.now - 1, wall.now - 1, "n2")
        assert await stage.accept_replica(replica)
        hit = await stage(get(), origin)
        assert (hit.headers.get("X-Cache"), hit.body, origin.calls) == ("HIT", b"peer", 1)

    run(main())


def test_a_url_holding_another_variant_is_still_looked_up_after_an_uncacheable_one() -> None:
    """A mark made while the key held an entry (another Vary variant) says nothing about
    the store: the stored variant stays a hit."""
    async def main() -> None:
        stage, _, _, store = counting()

        async def by_language(request: Request, n: int) -> Response:
            cc = "max-age=60" if request.headers.get("Accept-Language") == "en" else "no-store"
            fields = [("Cache-Control", cc), ("Vary", "Accept-Language")]
            return Response(200, Headers(fields), f"v{n}".encode())

        origin = Origin(by_language)
        english, german = [("Accept-Language", "en")], [("Accept-Language", "de")]
        await stage(get(headers=english), origin)
        await stage(get(headers=german), origin)  # not storable: marks the key
        again = await stage(get(headers=english), origin)
        assert (again.headers.get("X-Cache"), again.body, store.gets) == ("HIT", b"v1", 3)

    run(main())


def test_stale_while_revalidate_refreshes_once_in_background() -> None:
    async def main() -> None:
        stage, clock, _ = make()
        origin = Origin(fixed(headers=[("Cache-Control", "max-age=1, stale-while-revalidate=100")]))
        await stage(get(), origin)
        clock.now += 10
        responses = await asyncio.gather(*(stage(get(), origin) for _ in range(20)))
        assert all(r.headers.get("X-Cache") == "STALE" and r.body == b"hello1" for r in responses)
        await stage.drain()
        assert origin.calls == 2
        fresh = await stage(get(), origin)
        assert fresh.headers.get("X-Cache") == "HIT" and fresh.body == b"hello2"

    run(main())


def test_conditional_revalidation_with_304() -> None:
    async def main() -> None:
        stage, clock, _ = make()

        async def etagged(request: Request, n: int) -> Response:
            if request.headers.get("If-None-Match") == '"v1"':
                return Response(304, Headers([("ETag", '"v1"'), ("Cache-Control", "max-age=100")]))
            return Response(
                200, Headers([("ETag", '"v1"'), ("Cache-Control", "max-age=1")]), b"body"
            )

        origin = Origin(etagged)
        await stage(get(headers=[("If-None-Match", '"client"')]), origin)
        assert origin.seen[0].headers.get("If-None-Match") is None  # client's precondition dropped
        clock.now += 5
        revalidated = await stage(get(), origin)
        assert revalidated.headers.get("X-Cache") == "REVALIDATED" and revalidated.body == b"body"
        assert "fwd-status=304" in (revalidated.headers.get("Cache-Status") or "")
        clock.now += 50
        hit = await stage(get(), origin)
        assert hit.headers.get("X-Cache") == "HIT" and hit.headers.get("Age") == "50"
        not_modified = await stage(get(headers=[("If-None-Match", '"v1"')]), origin)
        assert not_modified.status == 304 and not_modified.body == b""
        forced = await stage(get(headers=[("Cache-Control", "no-cache")]), origin)
        assert forced.headers.get("X-Cache") == "REVALIDATED"
        assert origin.calls == 3

    run(main())


def test_stale_if_error_on_exception_and_5xx() -> None:
    async def main() -> None:
        stage, clock, _ = make()
        mode = {"fail": ""}

        async def flaky(request: Request, n: int) -> Response:
            if mode["fail"] == "raise":
                raise UpstreamError("worker died")
            if mode["fail"] == "503":
                return Response(503, Headers(), b"down")
            return Response(
                200, Headers([("Cache-Control", "max-age=1, stale-if-error=100")]), b"good"
            )

        origin = Origin(flaky)
        await stage(get(), origin)
        clock.now += 10
        for fail in ("raise", "503"):
            mode["fail"] = fail
            stale = await stage(get(), origin)
            assert (stale.status, stale.body, stale.headers.get("X-Cache")) == (
                200,
                b"good",
                "STALE",
            )
        clock.now += 1000  # beyond the stale-if-error window: the failure shows
        mode["fail"] = "raise"
        with pytest.raises(UpstreamError):
            await stage(get(), origin)
        mode["fail"] = "503"
        assert (await stage(get(), origin)).status == 503

    run(main())


def test_operator_default_stale_if_error() -> None:
    async def main() -> None:
        stage, clock, _ = make(CacheConfig(default_sie=30))
        origin = Origin(fixed(headers=[("Cache-Control", "max-age=1")]))
        await stage(get(), origin)
        clock.now += 20
        origin.handler = fixed(status=502, headers=[])
        assert (await stage(get(), origin)).headers.get("X-Cache") == "STALE"

    run(main())


def test_purge_exact_prefix_and_forbidden() -> None:
    async def main() -> None:
        stage, _, _ = make()
        purged: list[tuple[str, bool]] = []
        stage.on_purge = lambda key, prefix: purged.append((key, prefix))
        origin = Origin(fixed())
        for target in ("/a/1", "/a/2", "/b"):
            await stage(get(target), origin)
        refused = await stage(get("/a/1", method="PURGE", client="203.0.113.5"), origin)
        assert refused.status == 403
        done = await stage(get("/a/1", method="PURGE"), origin)
        assert done.status == 200 and json.loads(done.body) == {"purged": 1}
        assert await stage.purge("http://example.com/a/*") == 1
        with pytest.raises(ClientError) as bad:  # said as given: `scale0 purge '*'` showed ''
            await stage.purge("*")
        assert bad.value.reason.endswith(": '*'"), bad.value.reason
        assert purged == [("http://example.com/a/1", False), ("http://example.com/a/", True)]
        assert (await stage(get("/b"), origin)).headers.get("X-Cache") == "HIT"
        assert (await stage(get("/a/2"), origin)).headers.get("X-Cache") == "MISS"
        assert origin.calls == 4
        ipv6 = await stage(get("/b", method="PURGE", client="::1"), origin)
        assert ipv6.status == 200

    run(main())


@pytest.mark.parametrize(
    ("request_headers", "response_headers"),
    [
        ([("Authorization", "Bearer alice")], [("Cache-Control", "max-age=60")]),
        ([], [("Cache-Control", "max-age=60"), ("Set-Cookie", "session=alice")]),
        ([], [("Cache-Control", "max-age=60"), ("Vary", "*")]),
        ([], [("Cache-Control", "private, max-age=60")]),
        ([], [("Cache-Control", "no-store, max-age=60")]),
        ([("Cache-Control", "no-store")], [("Cache-Control", "max-age=60")]),
    ],
)
def test_poisoning_cases_are_never_stored_or_shared(
    request_headers: list[tuple[str, str]], response_headers: list[tuple[str, str]]
) -> None:
    async def main() -> None:
        stage, _, store = make()
        origin = Origin(fixed(headers=response_headers, body=b"secret"))
        first = await stage(get(headers=request_headers), origin)
        assert first.body == b"secret1"
        assert await store.get("http://example.com/x") == []
        other = await stage(get(), origin)
        assert other.body == b"secret2" and origin.calls == 2

    run(main())


def test_authorization_with_public_is_shared() -> None:
    async def main() -> None:
        stage, _, _ = make()
        origin = Origin(fixed(headers=[("Cache-Control", "public, max-age=60")]))
        await stage(get(headers=[("Authorization", "Bearer a")]), origin)
        assert (await stage(get(), origin)).headers.get("X-Cache") == "HIT"

    run(main())


def test_set_cookie_shared_only_for_opted_in_service() -> None:
    async def main() -> None:
        stage, _, _ = make(CacheConfig(share_set_cookie=frozenset({"shop"})))
        origin = Origin(fixed(headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")]))
        await stage(get(service="shop"), origin)
        assert (await stage(get(service="shop"), origin)).headers.get("X-Cache") == "HIT"

    run(main())


def test_unkeyed_headers_do_not_change_what_others_get() -> None:
    async def main() -> None:
        stage, _, _ = make()

        async def reflecting(request: Request, n: int) -> Response:
            host = request.headers.get("X-Forwarded-Host") or request.host
            return Response(
                200,
                Headers([("Cache-Control", "max-age=60")]),
                f"<script src=//{host}/app.js>".encode(),
            )

        origin = Origin(reflecting)
        evil = await stage(get(headers=[("X-Forwarded-Host", "evil.example")]), origin)
        assert b"evil.example" in evil.body  # the attacker sees their own reflection...
        victim = await stage(get(), origin)
        assert b"evil" not in victim.body  # ...nobody else does
        assert (
            await stage(get(headers=[("X-Original-URL", "/admin")]), origin)
        ).body == victim.body  # a hit ignores unkeyed headers
        assert origin.calls == 2

    run(main())


def test_vary_variants_and_coalesced_waiter_of_another_variant() -> None:
    async def main() -> None:
        stage, _, _ = make()
        gate = asyncio.Event()

        async def by_encoding(request: Request, n: int) -> Response:
            await gate.wait()
            enc = request.headers.get("Accept-Encoding") or "identity"
            return Response(
                200,
                Headers([("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")]),
                enc.encode(),
            )

        origin = Origin(by_encoding)
        gz = asyncio.create_task(stage(get(headers=[("Accept-Encoding", "gzip")]), origin))
        br = asyncio.create_task(stage(get(headers=[("Accept-Encoding", "br")]), origin))
        await origin.reached.wait()
        gate.set()
        assert ((await gz).body, (await br).body) == (b"gzip", b"br")
        assert origin.calls == 2
        again = await stage(get(headers=[("accept-encoding", "GZIP")]), origin)
        assert again.headers.get("X-Cache") == "HIT" and again.body == b"gzip"

    run(main())


def test_unsafe_method_invalidates_uri_and_location() -> None:
    async def main() -> None:
        stage, _, _ = make()
        origin = Origin(fixed())
        await stage(get("/items"), origin)
        await stage(get("/items/7"), origin)
        origin.handler = fixed(status=201, headers=[("Location", "/items/7")], body=b"")
        post = await stage(get("/items", method="POST"), origin)
        assert post.headers.get("X-Cache") == "BYPASS"
        origin.handler = fixed()
        assert (await stage(get("/items"), origin)).headers.get("X-Cache") == "MISS"
        assert (await stage(get("/items/7"), origin)).headers.get("X-Cache") == "MISS"

    run(main())


def streamed(chunks: list[bytes], headers: list[tuple[str, str]]) -> Handler:
    async def handler(request: Request, n: int) -> Response:
        channel = BodyChannel(capacity=2)

        async def produce() -> None:
            for chunk in chunks:
                await channel.put(chunk)
            channel.finish()

        task = asyncio.create_task(produce())
        task.add_done_callback(lambda t: None)
        handler.tasks.append(task)  # type: ignore[attr-defined]
        return Response(200, Headers(headers), channel)

    handler.tasks = []  # type: ignore[attr-defined]
    return handler


def test_streamed_body_is_teed_and_stored_or_not_when_too_large() -> None:
    async def main() -> None:
        stage, _, _ = make(CacheConfig(max_object_size=100))
        small = Origin(streamed([b"a" * 40, b"b" * 40], [("Cache-Control", "max-age=60")]))
        first = await stage(get("/s"), small)
        assert await body_of(first) == b"a" * 40 + b"b" * 40
        await stage.drain()
        hit = await stage(get("/s"), small)
        assert hit.headers.get("X-Cache") == "HIT" and hit.body == b"a" * 40 + b"b" * 40
        big = Origin(streamed([b"x" * 60] * 5, [("Cache-Control", "max-age=60")]))
        first = await stage(get("/big"), big)
        assert await body_of(first) == b"x" * 300  # the client gets it all
        await stage.drain()
        assert (await stage(get("/big"), big)).headers.get("X-Cache") == "MISS"
        assert big.calls == 2

    run(main())


def test_only_if_cached_bypass_and_config_errors() -> None:
    async def main() -> None:
        stage, _, _ = make(CacheConfig(bypass_services=frozenset({"api"})))
        origin = Origin(fixed())
        miss = await stage(get(headers=[("Cache-Control", "only-if-cached")]), origin)
        assert miss.status == 504 and origin.calls == 0
        await stage(get(service="api"), origin)
        bypass = await stage(get(service="api"), origin)
        assert bypass.headers.get("X-Cache") == "BYPASS" and origin.calls == 2

    run(main())
    with pytest.raises(ConfigError):
        CacheConfig(purge_allowed=("not a net",))
    with pytest.raises(ConfigError):
        CacheConfig(max_object_size=0)


def test_replicas_and_hooks() -> None:
    async def main() -> None:
        stage, _, _ = make()
        stored: list[CacheEntry] = []
        stage.on_store = stored.append
        await stage(get(), Origin(fixed()))
        assert [e.key for e in stored] == ["http://example.com/x"]

        def entry(key: str, headers: list[tuple[str, str]], t: float = T0) -> CacheEntry:
            return CacheEntry(key, "", 200, tuple(headers), b"r", t, t, "n2")

        good = entry("http://example.com/r", [("Cache-Control", "max-age=60")])
        assert await stage.accept_replica(good)
        assert (await stage(get("/r"), Origin(fixed()))).body == b"r"
        for bad in (
            entry("http://example.com/p", [("Cache-Control", "private, max-age=60")]),
            entry("http://example.com/c", [("Cache-Control", "max-age=60"), ("Set-Cookie", "a")]),
            entry("http://EXAMPLE.com:80/n", [("Cache-Control", "max-age=60")]),
            entry("not a url", [("Cache-Control", "max-age=60")]),
            entry("http://example.com/f", [("Cache-Control", "max-age=60")], t=T0 + 10**6),
        ):
            assert not await stage.accept_replica(bad), bad.key
        assert stage.counts["replica_refused"] == 5
        assert await stage.apply_purge("http://example.com/", True) == 2
        assert len(stored) == 1  # replicas and peer purges do not echo back

    run(main())


def test_remembered_keys_follow_a_reconfigure_that_changes_dropped_parameters() -> None:
    stage, _, _ = make(CacheConfig(dropped_query_params=frozenset({"utm_source"})))
    request = get("/page?utm_source=mail&id=7")
    assert stage.key_of(request) == "http://example.com/page?id=7"
    assert stage.key_of(request) == "http://example.com/page?id=7"  # remembered, same answer
    stage.reconfigure(CacheConfig())
    assert stage.key_of(request) == "http://example.com/page?utm_source=mail&id=7"


def test_a_stored_miss_answers_the_clients_precondition_with_304() -> None:
    """nginx and Varnish answer a conditional GET with 304 when the answer they just
    fetched (without the client's preconditions) is cacheable and matches them."""

    async def main() -> None:
        stage, _, _ = make()
        fields = [("ETag", '"v1"'), ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
                  ("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")]
        origin = Origin(fixed(headers=fields))
        answer = await stage(get(headers=[("If-None-Match", 'W/"v0", "v1"')]), origin)
        assert answer.status == 304 and answer.body == b""
        assert answer.headers.get("ETag") == '"v1"' and answer.headers.get("X-Cache") == "MISS"
        assert answer.headers.get("Content-Type") is None  # RFC 9110 §15.4.5's fields only
        assert "fwd-status=200" in (answer.headers.get("Cache-Status") or "")
        assert origin.seen[0].headers.get("If-None-Match") is None  # the fill asked plainly
        hit = await stage(get(), origin)  # the entry was stored with its body
        assert hit.status == 200 and hit.body == b"hello1" and hit.headers.get("X-Cache") == "HIT"
        assert origin.calls == 1

        since = await stage(get("/y", [("If-Modified-Since", "Wed, 15 Nov 2023 00:00:00 GMT")]),
                            origin)
        assert since.status == 304 and since.body == b""
        other = await stage(get("/z", [("If-None-Match", '"v2"')]), origin)
        assert other.status == 200 and other.body == b"hello3"

    run(main())


def test_an_uncacheable_miss_passes_the_origins_200_through() -> None:
    async def main() -> None:
        stage, _, _ = make()
        origin = Origin(fixed(headers=[("ETag", '"v1"'), ("Cache-Control", "no-store")]))
        answer = await stage(get(headers=[("If-None-Match", '"v1"')]), origin)
        assert answer.status == 200 and answer.body == b"hello1"

    run(main())


def test_a_fill_or_replica_asked_before_a_purge_is_not_stored_after_it() -> None:
    """The origin answered a request sent before the purge from the old content: storing
    it after the purge would undo the purge (tests/e2e/test_qa9_purge_inflight_e2e.py)."""

    async def main() -> None:
        stage, clock, store = make()
        started = asyncio.Event()
        go = asyncio.Event()

        async def slow(request: Request, n: int) -> Response:
            started.set()
            await go.wait()
            return Response(200, Headers([("Cache-Control", "max-age=60")]), b"old")

        fill = asyncio.create_task(stage(get("/news"), Origin(slow)))
        await started.wait()
        clock.now += 1
        await stage.purge("http://example.com/news")
        go.set()
        assert (await fill).body == b"old"  # that client gets what it asked for
        assert await store.get("http://example.com/news") == []
        assert stage.counts["not_stored"] == 1

        def replica(t: float) -> CacheEntry:
            return CacheEntry("http://example.com/news", "", 200,
                              (("Cache-Control", "max-age=60"),), b"r", t, t + 0.1, "n2")

        assert not await stage.accept_replica(replica(clock.now - 0.5))
        clock.now += 1
        assert await stage.accept_replica(replica(clock.now))  # asked after the purge
        after = await stage(get("/news"), Origin(fixed()))
        assert after.body == b"r" and after.headers.get("X-Cache") == "HIT"

    run(main())


def test_an_upstream_cache_status_is_kept_in_front_of_ours_in_one_field() -> None:
    """RFC 9211 §2: each cache adds its member to the list, the origin side first. An
    upstream's own X-Cache is replaced (one value: what this cache did)."""

    async def main() -> None:
        stage, _, _ = make()
        upstream = [("Cache-Status", "cdn; hit"), ("X-Cache", "HIT"),
                    ("Cache-Control", "no-store")]
        answer = await stage(get(), Origin(fixed(headers=upstream)))
        statuses = answer.headers.get_all("Cache-Status")
        assert len(statuses) == 1 and statuses[0].startswith("cdn; hit, ")
        assert "fwd=uri-miss" in statuses[0].removeprefix("cdn; hit, ")
        assert answer.headers.get_all("X-Cache") == ["MISS"]
        plain = await stage(get("/other"), Origin(fixed(headers=[("Cache-Control", "no-store")])))
        assert plain.headers.get_all("X-Cache") == ["MISS"]
        assert len(plain.headers.get_all("Cache-Status")) == 1

    run(main())


_STATUS_ARGS = st.fixed_dictionaries(
    {},
    optional={
        "hit": st.booleans(),
        "fwd": st.sampled_from(["bypass", "method", "uri-miss", "miss", "stale"]),
        "fwd_status": st.sampled_from([200, 304, 503]),
        "stored": st.booleans(),
        "collapsed": st.booleans(),
        "detail": st.sampled_from(["no-store", "private", "swr", "error"]),
    },
)


@given(st.lists(st.tuples(st.sampled_from(list(Outcome)), st.sampled_from([None, -1, 0, 60]),
                          _STATUS_ARGS), max_size=12))
def test_remembered_status_fields_are_the_ones_rendered(
        calls: list[tuple[Outcome, int | None, dict[str, Any]]]) -> None:
    """X-Cache and Cache-Status are rendered once per combination and remembered: whatever
    came before, a response gets the fields its own outcome, ttl and members render to."""
    stage, _, _ = make()
    for outcome, ttl, members in calls:
        expected = status_headers(outcome, CacheStatus(stage._name, ttl=ttl, **members))
        assert stage._status_fields(outcome, ttl, members) == expected  # type: ignore[arg-type]
