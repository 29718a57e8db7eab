"""The cache stage: answers from the shared cache, coalesces misses, stores what it may.

Decide, then act: cache.rules says what a stored entry is good for, cache.key
and cache.vary find it, cache.coalesce makes identical misses one backend call;
this module only does the I/O those verdicts ask for. GET/HEAD look up; a
fresh entry is served (HIT), a stale one within stale-while-revalidate is
served (STALE) while one background refresh per key runs, otherwise the
origin is asked — conditionally when validators exist (a 304 gives
REVALIDATED). Misses of one key share a flight: waiters get the leader's entry
(COALESCED) as soon as its body is complete, or go on their own at once when it
was not shareable. A streamed body is teed to the client while at most
`max_object_size` bytes are collected for the store. Origin failures are
answered stale when stale-if-error allows. Unsafe methods invalidate (§4.4);
`PURGE <url>` works from allowed networks. Every shared-cache poisoning guard
lives in cache.rules / cache.key; this shell never stores what they refuse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypedDict, TypeVar, Unpack

from cache.cachecontrol import NO_DIRECTIVES, Directives, request_directives
from cache.coalesce import Coalescer, Flight, Role
from cache.entry import CacheEntry
from cache.key import BadURL, cache_key, key_for_url, unkeyed_conflict
from cache.rules import (
    Action,
    Decision,
    Policy,
    decide,
    get_all,
    invalidated_keys,
    refusal,
    replica_refusal,
)
from cache.status import CacheStatus, Outcome, cache_name, status_headers
from cache.store import CacheStore
from cache.tombstones import Tombstones
from cache.validation import (
    CLIENT_CONDITIONALS,
    conditional_headers,
    merge_not_modified,
    not_modified,
    not_modified_headers,
    stored_header_items,
    validators_match,
)
from cache.vary import request_variant
from node.body import read_body
from node.cacheconfig import CacheConfig
from node.errors import ClientError
from node.hitcache import HitCache
from node.http import Headers, Request, Response
from node.purgecount import PurgeCount, purge_answer
from node.ratelog import RateLimitedLog
from node.stage import Next
from node.teebody import TeeBody

log = logging.getLogger("scale0.cache")
_KEYS_REMEMBERED: Final = 8192  # URL → cache key answers kept by key_of
# Purges the store could not carry out: how many marks are kept, and for how long.
_UNPURGED_KEYS, _UNPURGED_PREFIXES, _UNPURGED_AGE = 10_000, 1_000, 86_400.0
_RECENT_AGE: Final = 600.0  # longer than any fill runs (a request's deadline)
T = TypeVar("T")

ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})


_RENDERED_KEPT: Final = 256  # Cache-Status members remembered rendered
_STATUS_FIELDS: Final = frozenset({"x-cache", "cache-status"})  # the fields _mark sets
_CONDITIONALS: Final = frozenset({"if-none-match", "if-modified-since"})  # a 304 asks for one

class _StatusArgs(TypedDict, total=False):
    """What a response's Cache-Status member says besides the cache name and ttl."""

    hit: bool
    fwd: str
    fwd_status: int
    stored: bool
    collapsed: bool
    detail: str


# _Ctx, made for every GET, writes its __init__ out (init=False): mypyc leaves the one
# dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True, init=False)
class _Ctx:
    """One GET's lookup: what a fill needs to know about the request and the stale entry."""

    request: Request
    call_next: Next
    key: str
    req_cc: Directives
    policy: Policy
    stale: CacheEntry | None
    decision: Decision | None
    held: int  # how many entries the store held for the key (-1: not looked up)

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, request: Request, call_next: Next, key: str, req_cc: Directives, policy: Policy,
        stale: CacheEntry | None = None, decision: Decision | None = None, held: int = -1,
    ) -> None:
        self.request = request
        self.call_next = call_next
        self.key = key
        self.req_cc = req_cc
        self.policy = policy
        self.stale = stale
        self.decision = decision
        self.held = held

    @property
    def stale_if_error(self) -> bool:
        return self.decision is not None and self.decision.stale_if_error


class CacheStage:
    """The pipeline stage in front of routing; see the module docstring."""

    def __init__(
        self,
        store: CacheStore,
        config: CacheConfig | None = None,
        node_id: str = "",
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.config = config or CacheConfig()
        self.node_id = node_id
        self.wall_clock = wall_clock
        self.coalescer: Coalescer[CacheEntry] = Coalescer(
            self.config.lock_timeout, self.config.hit_for_miss, monotonic
        )
        self.on_store: Callable[[CacheEntry], None] | None = None
        self.on_purge: Callable[[str, bool], None] | None = None
        # Stored entries not newer than this are not served: a restarted node's files may
        # hold what was purged while it was down, until peers said what (node.replication).
        self.trusted_after = 0.0
        # Purges whose delete failed (read-only disk, no permission, database down):
        # "nothing stored for this key / under this prefix before time T is served",
        # honoured by _lookup. Bounded; the files store also hides the very files it
        # could not remove for as long as it runs (cache.files).
        self.unpurged = Tombstones(monotonic, max_count=_UNPURGED_KEYS,
                                   max_prefixes=_UNPURGED_PREFIXES, max_age=_UNPURGED_AGE)
        # Purges and invalidations seen lately: a fill whose request went out before one of
        # them may carry what it removed (the origin answered from the old content), so it
        # is not stored, nor replicated (_put). Bounded as `unpurged` is.
        self.recent_purges = Tombstones(monotonic, max_count=_UNPURGED_KEYS,
                                        max_prefixes=_UNPURGED_PREFIXES, max_age=_RECENT_AGE)
        self.counts: Counter[str] = Counter()
        self._store_log = RateLimitedLog(log, interval=60.0)  # a full disk fails every put
        self._name = cache_name(node_id)
        self._rendered: dict[tuple[object, ...], list[tuple[str, str]]] = {}  # see _mark
        # Prepared answers for the fast wire (node.hitcache): offered on fresh HITs,
        # forgotten on every put, delete and purge that passes through here.
        self.hits = HitCache(self._name, counts=self.counts, wall_clock=wall_clock,
                             monotonic=monotonic)
        self._refreshing: set[str] = set()
        self._keys: dict[tuple[str, str, str], str] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._policies: dict[bool, Policy] = {
            share: Policy(
                share,
                self.config.default_swr,
                self.config.default_sie,
                heuristic_cap=self.config.heuristic_cap,
            )
            for share in (False, True)
        }

    # -- the stage ------------------------------------------------------------------
    async def __call__(self, request: Request, call_next: Next) -> Response:
        method = request.method.upper()
        if method == "PURGE":
            return await self._purge_request(request)
        cfg = self.config
        if not cfg.enabled or request.service in cfg.bypass_services:
            return self._mark(await call_next(request), Outcome.BYPASS, fwd="bypass")
        if method not in ("GET", "HEAD"):
            response = await call_next(request)
            await self._invalidate(request, response)
            return self._mark(response, Outcome.BYPASS, fwd="method")
        key = self.key_of(request)
        req_cc = request_directives(
            request.headers.get_all("cache-control"), request.headers.get_all("pragma")
        )
        ctx = _Ctx(request, call_next, key, req_cc, self._policy(request.service))
        if method == "GET" and self.coalescer.nothing_stored(key) and not req_cc.only_if_cached:
            # Varnish's hit-for-miss object: the last answer could not be stored and the
            # store held nothing for the key, so for the mark's few seconds its misses go
            # to the origin without a lookup (a stat(2) on the files store) or a flight.
            # Their answers are still admitted: one that may be stored is (_put unmarks).
            return await self._fill(ctx, None)
        entry, found = await self._lookup(key, request)
        ctx.held = found
        if entry is not None:
            decision = self._decide(entry, req_cc, ctx.policy)
            if decision.action is Action.FRESH:
                if found == 1 and method == "GET":
                    self.hits.offer(request, entry, decision.lifetime)
                return self._serve(request, entry, Outcome.HIT, hit=True)
            if decision.action is Action.STALE_SERVE_AND_REVALIDATE:
                self._refresh_later(dataclasses.replace(ctx), entry)
                return self._serve(request, entry, Outcome.STALE, hit=True, detail="swr")
            if decision.action is not Action.MISS:
                ctx.stale, ctx.decision = entry, decision
        if req_cc.only_if_cached:
            response = Response.error(504, "only-if-cached: no usable stored response")
            return self._mark(response, Outcome.MISS, fwd="uri-miss")
        if method == "HEAD":  # HEAD answers are not stored; HEAD hits come from GET entries
            return self._mark(await call_next(request), Outcome.MISS, fwd="method")
        return await self._fetch(ctx)

    def key_of(self, request: Request) -> str:
        # Normalising a URL is a few % of a miss's CPU and the replicator asks again for
        # the same request: remember recent answers (bounded; emptied on reconfigure).
        found = (request.scheme, request.host, request.target)
        key = self._keys.get(found)
        if key is None:
            key = cache_key(*found, self.config.dropped_query_params)
            if len(self._keys) >= _KEYS_REMEMBERED:
                self._keys.clear()
            self._keys[found] = key
        return key

    def _policy(self, service: str) -> Policy:
        share = service in self.config.share_set_cookie
        stale = self.config.service_defaults.get(service)
        if stale is None:
            return self._policies[share]
        return Policy(share, stale[0], stale[1], heuristic_cap=self.config.heuristic_cap)

    def reconfigure(self, config: CacheConfig) -> None:
        """Swap in new settings (SIGHUP); a request in flight keeps the policy it took.
        The coalescer keeps its lock_timeout and hit_for_miss until a restart."""
        self.config = config
        self._keys = {}  # dropped query parameters may have changed
        self._policies = {
            share: Policy(share, config.default_swr, config.default_sie,
                          heuristic_cap=config.heuristic_cap)
            for share in (False, True)
        }
        hits = getattr(self, "hits", None)  # prepared fast-wire answers follow the old rules
        if hits is not None:
            hits.forget()

    def _decide(self, entry: CacheEntry, req_cc: Directives, policy: Policy) -> Decision:
        return decide(
            entry.status,
            entry.headers,
            request_time=entry.request_time,
            response_time=entry.response_time,
            request_cc=req_cc,
            now=self.wall_clock(),
            policy=policy,
        )

    async def _lookup(self, key: str, request: Request) -> tuple[CacheEntry | None, int]:
        """The stored entry that fits `request` best, and how many the key holds."""
        try:  # `_safely`, inline: one coroutine frame fewer on every request's lookup
            entries = await self.store.get(key)
        except Exception as exc:
            entries = self._failed(exc, [], key, "get")
        best: CacheEntry | None = None
        marked = len(self.unpurged) > 0
        for e in entries:
            fits = e.key == key and e.response_time > self.trusted_after
            if fits and marked and self.unpurged.blocks_key(key, e.response_time):
                fits = False  # purged, but the store could not delete it
            fits = fits and self._variant_fits(e, request)
            if fits and (best is None or e.response_time > best.response_time):
                best = e
        return best, len(entries)

    @staticmethod
    def _variant_fits(entry: CacheEntry, request: Request) -> bool:
        wanted = request_variant(get_all(entry.headers, "vary"), request.headers)
        return wanted is not None and wanted == entry.variant

    # -- misses and revalidation --------------------------------------------------------
    def _fetch(self, ctx: _Ctx) -> Awaitable[Response]:
        # A plain def handing on `_fill` (node.stage): one coroutine frame fewer a miss.
        # Requests that could never fill the shared entry neither lead nor join a flight.
        if ctx.req_cc.no_store or unkeyed_conflict(ctx.request.headers, ctx.request.host):
            return self._fill(ctx, None)
        flight = self.coalescer.begin(ctx.key)
        if flight.role is not Role.WAITER:
            return self._fill(ctx, flight)
        return self._wait_for_leader(ctx, flight)

    async def _wait_for_leader(self, ctx: _Ctx, flight: Flight[CacheEntry]) -> Response:
        try:
            got = await flight.wait()
        except Exception:
            if ctx.stale_if_error and ctx.stale is not None:
                return self._serve(
                    ctx.request, ctx.stale, Outcome.STALE, fwd="stale", detail="error"
                )
            raise
        if got is not None and self._variant_fits(got.value, ctx.request):
            return self._serve(
                ctx.request, got.value, Outcome.COALESCED, fwd="uri-miss", collapsed=True
            )
        return await self._fill(ctx, None)  # released or timed out: on our own, at once

    async def _fill(self, ctx: _Ctx, flight: Flight[CacheEntry] | None) -> Response:
        handed_off = False
        request = ctx.request
        try:
            for _attempt in range(2):
                stale = ctx.stale
                request_time = self.wall_clock()
                upstream = self._upstream(request, stale)
                if stale is not None and ctx.stale_if_error:
                    upstream.fail_fast = True  # no worker anywhere: the stale answer, at once
                try:
                    response = await ctx.call_next(upstream)
                except Exception as exc:
                    if flight is not None:
                        flight.fail(exc)
                    if ctx.stale_if_error and stale is not None:
                        return self._serve(
                            request, stale, Outcome.STALE, fwd="stale", detail="error"
                        )
                    raise
                response_time = self.wall_clock()
                if stale is not None and response.status == 304:
                    _discard(response)
                    if validators_match(stale.headers, response.headers):
                        merged = merge_not_modified(
                            stale, response.headers, request_time, response_time
                        )
                        await self._keep(ctx, merged, flight)
                        return self._serve(
                            request, merged, Outcome.REVALIDATED, fwd="stale", fwd_status=304
                        )
                    ctx.stale = None  # a 304 for another representation: ask plainly, once
                    continue
                if response.status in ERROR_STATUSES and ctx.stale_if_error and stale:
                    _discard(response)
                    why = _StatusArgs(fwd="stale", fwd_status=response.status, detail="error")
                    return self._serve(request, stale, Outcome.STALE, **why)
                handed_off = await self._admit(ctx, response, (request_time, response_time), flight)
                return response
            raise AssertionError("unreachable: the second attempt always returns")
        finally:
            if flight is not None and not handed_off:
                flight.abandon()  # no-op when it already ended

    async def _admit(
        self, ctx: _Ctx, response: Response, times: tuple[float, float], flight: Flight[Any] | None
    ) -> bool:
        """Store the response if the rules allow; True when a tee now owns the flight."""
        reason = self._refusal(ctx, response.status, response.headers)
        body = response.body
        if reason is None and isinstance(body, bytes) and len(body) > self.config.max_object_size:
            reason = "too large"
        if reason is not None:
            self.counts["not_stored"] += 1
            self._mark(
                response, Outcome.MISS, fwd="uri-miss", fwd_status=response.status, detail=reason
            )
            if flight is not None:
                # A refusal caused by this request alone (its Authorization) must not mark the
                # URL hit-for-miss; any other is the answer's own (no-store, private, ...), and
                # marks it, so later requests do not queue behind an uncacheable answer. (A
                # request's own no-store never leads a flight: see _fetch.)
                if reason == "authorization":
                    flight.abandon()
                else:
                    flight.release(nothing_stored=ctx.held == 0)
            return False
        variant = request_variant(get_all(response.headers, "vary"), ctx.request.headers) or ""
        headers = stored_header_items(response.headers)

        def entry_of(body: bytes) -> CacheEntry:
            status, node = response.status, self.node_id
            return CacheEntry(ctx.key, variant, status, headers, body, *times, node)

        if isinstance(response.body, bytes):
            entry = entry_of(response.body)
            unstored = await self._put(entry)
            if flight is not None:
                flight.share(entry)
            fetched = response.status
            if fetched == 200 and _conditional(ctx.request.headers) and not_modified(
                    ctx.request.headers, headers):
                _to_not_modified(response)
            if unstored is None:
                self._mark(response, Outcome.MISS, fwd="uri-miss", fwd_status=fetched,
                           stored=True)
            else:  # "stored" would send whoever debugs the next MISS the wrong way
                self._mark(response, Outcome.MISS, fwd="uri-miss", fwd_status=fetched,
                           detail=unstored)
            return False

        def complete(body: bytes) -> None:
            entry = entry_of(body)
            if flight is not None:
                flight.share(entry)
            self._spawn(self._put(entry))

        def abort() -> None:
            self.counts["not_stored"] += 1
            if flight is not None:
                flight.release()

        response.body = TeeBody(response.body, self.config.max_object_size, complete, abort)
        self._mark(response, Outcome.MISS, fwd="uri-miss", fwd_status=response.status)
        return True

    def _refusal(self, ctx: _Ctx, status: int, headers: Iterable[tuple[str, str]]) -> str | None:
        return refusal(
            ctx.request.headers,
            ctx.request.host,
            status,
            headers,
            request_cc=ctx.req_cc,
            policy=ctx.policy,
            max_size=self.config.max_object_size,
        )

    async def _keep(self, ctx: _Ctx, merged: CacheEntry, flight: Flight[CacheEntry] | None) -> None:
        """Store an entry refreshed by a 304, unless its new headers forbid storing it."""
        if self._refusal(ctx, merged.status, merged.headers) is None:
            await self._put(merged)
            if flight is not None:
                flight.share(merged)
            return
        await self._delete(merged.key, merged.variant)
        if flight is not None:
            flight.release()

    def _upstream(self, request: Request, stale: CacheEntry | None) -> Request:
        """The request a fill sends: the client's preconditions dropped, ours added."""
        if stale is None and not request.headers.has_any(CLIENT_CONDITIONALS):
            # The usual miss: nothing to drop or add. No stage after us changes a request's
            # fields in place (the pipeline's end sends a copy), so it goes as it is.
            return request
        headers = request.headers.copy()
        headers.remove_many(CLIENT_CONDITIONALS)
        if stale is not None:
            for name, value in conditional_headers(stale.headers):
                headers.add(name, value)
        return request.with_headers(headers)

    def _refresh_later(self, ctx: _Ctx, stale: CacheEntry) -> None:
        if ctx.key in self._refreshing:
            return
        self._refreshing.add(ctx.key)
        ctx.request = dataclasses.replace(ctx.request, body=b"")
        self._spawn(self._refresh(ctx, stale))

    async def _refresh(self, ctx: _Ctx, stale: CacheEntry) -> None:
        """One background refresh (stale-while-revalidate): a fill nobody waits for."""
        self.counts["background_refresh"] += 1
        ctx.stale, ctx.decision = stale, None  # no stale-if-error: failures just end it
        try:
            response = await self._fill(ctx, None)
            await read_body(response.body, self.config.max_object_size)  # drives the tee
        except Exception as exc:  # the origin failed, or the body broke or grew too large
            self.counts["refresh_errors"] += 1
            log.info("background refresh of %s failed: %r", ctx.key[:200], exc)
        finally:
            self._refreshing.discard(ctx.key)

    # -- answering from an entry --------------------------------------------------------
    def _serve(
        self, request: Request, entry: CacheEntry, outcome: Outcome, **cs: Unpack[_StatusArgs]
    ) -> Response:
        self.counts[outcome._value_] += 1
        decision = self._decide(entry, NO_DIRECTIVES, self._policy(request.service))
        headers = Headers(entry.headers)
        headers.set("Age", str(int(decision.age)))
        status, body = entry.status, entry.body
        if (status == 200 and request.headers.has_any(_CONDITIONALS)
                and not_modified(request.headers, entry.headers)):
            status, body = 304, b""
            headers = Headers(not_modified_headers(entry.headers))
            headers.set("Age", str(int(decision.age)))
        else:
            headers.set("Content-Length", str(len(entry.body)))
        if request.method.upper() == "HEAD":
            body = b""
        # RFC 9211 ttl: whole seconds, negative once stale (0.4 s past is -1, not 0).
        for name, value in self._status_fields(outcome, math.floor(decision.ttl), cs):
            headers.set(name, value)
        return Response(status, headers, body, served_by=self.node_id,
                        outcome=outcome._value_)

    def _mark(self, response: Response, outcome: Outcome, **cs: Unpack[_StatusArgs]) -> Response:
        # `_value_`, the member's own attribute: `.value` is a property that Enum runs in
        # interpreted Python (two calls), even from compiled code.
        kind: str = outcome._value_
        self.counts[kind] += 1
        ours = self._status_fields(outcome, None, cs)
        headers = response.headers
        if not headers.has_any(_STATUS_FIELDS):  # the usual answer: neither field yet
            headers.add_all(ours)
        else:
            upstream = headers.get_joined("cache-status")
            for name, value in ours:
                kept = f"{upstream}, {value}" if upstream and name == "Cache-Status" else value
                headers.set(name, kept)
        if not response.outcome:
            response.outcome = kind
        return response

    def _status_fields(self, outcome: Outcome, ttl: int | None,
                       cs: _StatusArgs) -> list[tuple[str, str]]:
        """X-Cache and Cache-Status for `outcome`: the same few members every time (outcome,
        fwd, status, refusal reason; a ttl that moves once a second), each rendered once
        (bounded: cleared when full)."""
        # Every member by name, in one order: `*cs.items()` built a list and then a tuple of
        # pairs (3k instructions a miss). `_value_`, a str: Enum.__hash__ is interpreted.
        memo = (outcome._value_, ttl, cs.get("hit", False), cs.get("fwd"), cs.get("fwd_status"),
                cs.get("stored", False), cs.get("collapsed", False), cs.get("detail"))
        ours = self._rendered.get(memo)
        if ours is None:
            if len(self._rendered) >= _RENDERED_KEPT:
                self._rendered.clear()
            ours = self._rendered[memo] = status_headers(
                outcome, CacheStatus(self._name, ttl=ttl, **cs))
        return ours

    # -- store operations, purge, replication --------------------------------------------
    async def _safely(self, op: Awaitable[T], default: T, key: str, what: str) -> T:
        """A store operation whose failure is counted and logged, never the request's.
        The log is rate-limited per operation and error, so one kind of failure (a full
        disk failing every put) never hides another (a delete that failed)."""
        try:
            return await op
        except Exception as exc:
            return self._failed(exc, default, key, what)

    def _failed(self, exc: Exception, default: T, key: str, what: str) -> T:
        self.counts["store_errors"] += 1
        self._store_log.warn(f"{what}:{type(exc).__name__}{getattr(exc, 'errno', '')}",
                             "cache store failed (%s) on %s: %r", what, key[:200], exc)
        return default

    async def _put(self, entry: CacheEntry) -> str | None:
        """Store `entry`; why it is not stored (a Cache-Status detail: purged meanwhile, the
        store failed), or None (stored, or the store kept a newer one or refused its size)."""
        if self.recent_purges.blocks_key(entry.key, entry.request_time):
            self.counts["not_stored"] += 1  # asked before a purge of it: maybe the old content
            return "purged meanwhile"
        self.hits.forget(entry.key)
        self.coalescer.unmark(entry.key)  # looked up again from now on (hit-for-miss)
        put: Awaitable[bool | None] = self.store.put(entry)
        stored = await self._safely(put, None, entry.key, "put")  # None: it raised
        self.hits.forget(entry.key)  # a hit may have offered the old entry meanwhile
        if stored is None:
            return "store failed"
        if not stored:
            return None
        self.counts["stored"] += 1
        if self.on_store is not None:
            _call_hook(self.on_store, entry)
        return None

    async def _delete(self, key: str, variant: str | None = None) -> int:
        if variant is None:
            return await self._remove(key, False)
        self.hits.forget(key)  # one variant (cache.files hides a file it cannot remove)
        return await self._safely(self.store.delete(key, variant), 0, key, "delete")

    async def _remove(self, key: str, is_prefix: bool) -> PurgeCount:
        """Delete a key (or every key under a prefix) from the store. If the store fails,
        mark it purged as of now (so _lookup serves none of it), count and log that under
        its own key, and say so in the result: never a silent success."""
        at = self.wall_clock()
        self.recent_purges.add(key, is_prefix, math.nextafter(at, -math.inf))  # asked before
        self.hits.forget(key, prefix=is_prefix)
        try:
            if is_prefix:
                return PurgeCount(await self.store.purge_prefix(key))
            return PurgeCount(await self.store.delete(key))
        except Exception as exc:
            self.unpurged.add(key, is_prefix, at)
            self.hits.forget(key, prefix=is_prefix)
            self.counts["store_errors"] += 1
            self.counts["purge_failed"] += 1
            removed, failed = getattr(exc, "removed", 0), getattr(exc, "failed", None)
            self._store_log.warn(
                f"purge:{type(exc).__name__}{getattr(exc, 'errno', '')}",
                "cache purge of %s%s: the store failed to delete %s: %r; marked purged, "
                "so this node does not serve it", key[:200], "*" if is_prefix else "",
                "some entries" if failed is None else f"{failed} entries", exc)
            return PurgeCount(removed, failed, str(exc) or type(exc).__name__)

    async def _invalidate(self, request: Request, response: Response) -> None:
        keys = invalidated_keys(
            request.method.upper(),
            response.status,
            response.headers,
            scheme=request.scheme,
            host=request.host,
            target=request.target,
            drop_params=self.config.dropped_query_params,
        )
        for key in keys:
            self.counts["invalidated"] += await self._delete(key)
            if self.on_purge is not None:
                _call_hook(self.on_purge, key, False)

    def purge_allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in net for net in self.config.networks)

    async def _purge_request(self, request: Request) -> Response:
        if not self.purge_allowed(request.client):
            self.counts["purge_refused"] += 1
            return Response.error(403, "PURGE is not allowed from this address")
        try:
            count = await self.purge(f"{request.scheme}://{request.host}{request.target}")
        except ClientError as exc:
            return Response.error(400, exc.reason)
        status, doc = purge_answer(count)
        body = json.dumps({"purged": int(count), **doc}).encode() + b"\n"
        headers = Headers([("Content-Type", "application/json")])
        return Response(status, headers, body, served_by=self.node_id, outcome="purge")

    async def purge(self, url_or_prefix: str) -> PurgeCount:
        """Remove one URL's entries, or every key under a prefix ending in `*`; the count."""
        is_prefix = url_or_prefix.endswith("*")
        try:
            key = key_for_url(
                url_or_prefix[:-1] if is_prefix else url_or_prefix, self.config.dropped_query_params
            )
        except BadURL:  # named as given: a prefix's `*` included (`'*'`, not `''`)
            raise ClientError("not an absolute http(s) URL (or a prefix of one ending in "
                              f"*): {url_or_prefix[:200]!r}") from None
        count = await self.apply_purge(key, is_prefix)
        if self.on_purge is not None:
            _call_hook(self.on_purge, key, is_prefix)
        return count

    async def apply_purge(self, key_or_prefix: str, is_prefix: bool) -> PurgeCount:
        """A purge from a peer (or from `purge`): local store only, no hook."""
        self.counts["purged"] += 1
        return await self._remove(key_or_prefix, is_prefix)

    async def accept_replica(self, entry: CacheEntry, service: str = "") -> bool:
        """Store an entry a peer sent, after the checks a local fill would pass."""
        reason = self.replica_refusal(entry, service)
        if reason is None and self.recent_purges.blocks_key(entry.key, entry.request_time):
            reason = "its request was sent before a purge of it here"  # see _put
        if reason is not None:
            self.counts["replica_refused"] += 1
            log.info("replica of %s refused: %s", entry.key[:200], reason)
            return False
        self.hits.forget(entry.key)
        self.coalescer.unmark(entry.key)  # a mark saying "nothing stored" no longer holds
        return await self._safely(self.store.put(entry), False, entry.key, "put")

    def replica_refusal(self, entry: CacheEntry, service: str = "") -> str | None:
        return replica_refusal(
            entry,
            policy=self._policy(service),
            max_size=self.config.max_object_size,
            now=self.wall_clock(),
            drop_params=self.config.dropped_query_params,
        )

    # -- background tasks ---------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background refreshes and stores started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drain()


def _conditional(headers: Headers) -> bool:
    """Whether a request carries a precondition a 304 could answer (cheap: asked on
    every stored miss)."""
    return "if-none-match" in headers or "if-modified-since" in headers


def _to_not_modified(response: Response) -> None:
    """Turn a fetched 200 the client already holds into a 304, as nginx and Varnish do
    for a cacheable answer fetched on a miss: the fill asked the origin without the
    client's preconditions (so the entry gets a body), and the client gets what a hit
    would have given it."""
    response.status, response.body, response.reason = 304, b"", ""
    response.headers = Headers(not_modified_headers(response.headers))


def _discard(response: Response) -> None:
    if not isinstance(response.body, bytes):
        response.body.cancel()


def _call_hook(hook: Callable[..., None], *args: object) -> None:
    try:
        hook(*args)
    except Exception:  # a replication hook must not fail the request it follows
        log.exception("cache hook %r failed", hook)
