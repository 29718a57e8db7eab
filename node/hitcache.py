"""Prepared cache hits: a fresh stored response answered from bytes built once.

The cache stage serves a fresh HIT through the whole pipeline (Tornado-shaped
delegate, Request, stages, Response, framing) — about 60 µs of Python. Once it
has done so for a (scheme, host, target), it `offer`s the entry here and we
build, once, the exact bytes the slow path would write: status line and every
field in the same order, with holes for the three values that change per
request (Age, Cache-Status ttl, X-Request-Id). The fast wire then `answer`s a
later plain GET for the same target from those bytes without building any
request or response object (node.fastproto); anything not plain takes the
slow path as before.

Coherence: a prepared answer is used only while the entry is fresh (the same
arithmetic as cache.rules.decide with no request directives) and for at most
`hold` seconds, after which the slow path runs once and offers it again; the
cache stage `forget`s a key on every put, delete, purge and replica it sees,
so a purge is never answered from here. Evictions inside a store, and puts by
another process sharing the file cache, are seen within `hold` (serving a
still-fresh older response meanwhile is what RFC 9111 allows any cache to do).

Which requests are plain is decided by the wire (`SLOW_FIELDS`): any field the
hit path reads (conditionals, Cache-Control, Pragma) or that changes framing
sends a request the slow way. Entries with Vary, 204/304 and HEAD requests are
never prepared. Pure apart from the injected clocks; one event loop only.

Over https the front adds Strict-Transport-Security to every answer; so does the
prepared head, at the same place, from the same per-host policy (`https_fields`),
and a plain-http slot of a host the policy redirects is never prepared (the front
answers 308 there). A slot's scheme is the request's, so http and https never
share an answer. A full `forget` (a reload, a purge of everything) also refuses
the offers of requests that began before it: they were served by the old rules.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.client import responses as _PHRASES
from typing import Final, Protocol

from cache.entry import CacheEntry
from cache.rules import current_age, get_all
from cache.status import CacheStatus, Outcome, status_headers
from node.accesslog import AccessLog
from node.http import Headers, Request, Response
from node.responsehead import field_map, frame
from node.tls import STS, HttpsPolicy

# Request fields whose presence sends a GET the slow way: what the hit decision
# reads (§5.2 request directives, conditionals) and what changes the framing.
SLOW_FIELDS: Final = frozenset({
    b"cache-control", b"pragma", b"if-match", b"if-none-match", b"if-modified-since",
    b"if-unmodified-since", b"if-range", b"connection", b"content-length",
    b"transfer-encoding", b"expect", b"upgrade", b"te", b"range",
})
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")  # node.proxyheaders' rule, as bytes
_TTL0 = "; ttl=0"
_ids: Final = random.Random()  # seeded from os.urandom once


Slot = tuple[str, bytes, bytes]  # (scheme, lower-cased host, target) as the client sent them
Fields = list[tuple[bytes, bytes]]  # a request's fields as the wire read them
Fixed = tuple[tuple[str, str], ...]  # fields added to every answer of a slot


class Answer(Protocol):
    """(head, body) for a plain GET, or None for the slow way (HitCache.answer)."""

    def __call__(self, scheme: str, host: bytes, target: bytes, request_id: bytes | None, *,
                 client: str, codings: int, fields: Fields) -> tuple[bytes, bytes] | None: ...


def new_request_id() -> bytes:
    """32 hex digits, like node.proxyheaders.new_request_id (uuid4().hex), without its
    getrandom syscall per request (an id needs to be unique, not unpredictable)."""
    return b"%032x" % _ids.getrandbits(128)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One target's answer: `head % {b"age", b"ttl", b"rid"}` then `body`."""

    head: bytes  # a bytes %-template; literal % doubled
    body: bytes
    key: str  # the cache key it came from (forget by key)
    status: int
    service: str
    age0: float  # corrected initial age (RFC 9111 §4.2.3)
    response_time: float  # wall clock
    lifetime: float
    hold_until: float  # monotonic


_MARK: Final = os.urandom(8).hex()  # holes, before encoding: valid field text no entry contains
_AGE, _TTL, _RID = f"{_MARK}age", f"{_MARK}ttl", f"{_MARK}rid"


def build_head(entry: CacheEntry, cache_name: str, stamp: Fixed = (),
               always: Fixed = ()) -> bytes | None:
    """The slow path's response head for a fresh HIT of `entry` to a plain HTTP/1.1 GET,
    as a bytes template with %(age)d, %(ttl)d and %(rid)s holes; None if it cannot be
    prepared. Built by the slow path's own steps, in its order: CacheStage._serve
    (Age, Content-Length, X-Cache, Cache-Status), then `frame_head`'s (`always`: the
    front's fields, `https_fields`)."""
    status = entry.status
    if not 200 <= status <= 999 or status in (204, 304) or get_all(entry.headers, "vary"):
        return None
    if has_mark(entry.headers):
        return None
    headers = Headers(entry.headers)
    headers.set("Age", _AGE)
    headers.set("Content-Length", str(len(entry.body)))
    for name, value in status_headers(Outcome.HIT, CacheStatus(cache_name, hit=True, ttl=0)):
        if name == "Cache-Status":
            if not value.endswith(_TTL0):
                return None
            headers.set(name, value[: -len(_TTL0)] + "; ttl=" + _TTL)
        else:
            headers.set(name, value)
    return frame_head(headers, status, len(entry.body), stamp,
                      holes=((_AGE, b"%(age)d"), (_TTL, b"%(ttl)d")), always=always)


def frame_head(headers: Headers, status: int, length: int, stamp: Fixed = (), *,
               holes: tuple[tuple[str, bytes], ...] = (), always: Fixed = ()) -> bytes | None:
    """What the slow path writes for `headers` (a stage's answer, `length` body bytes) to
    a plain HTTP/1.1 GET, as a bytes %-template with a %(rid)s hole (and each of `holes`
    as its format); None if it cannot be prepared. `headers` is changed. The steps after
    the stage, in its order: Pipeline.handle (X-Request-Id unless present), `stamp`
    (fields the node's handler sets after the pipeline, e.g. X-Scale0-Node),
    Front._write (`field_map`, then `always` unless the answer has them — HSTS —,
    Content-Length last) and the wire's `frame` (node.responsehead) — so both paths write the
    same bytes."""
    if "x-request-id" not in headers:
        headers.add("X-Request-Id", _RID)
    for name, value in stamp:
        headers.set(name, value)
    try:
        fields = field_map(headers, status, False)
        for name, value in always:
            if name not in fields:  # an upstream's own value stands, as in Front._write
                fields[name] = [value]
        fields["Content-Length"] = [str(length)]
        framing = frame("GET", "HTTP/1.1", status, _PHRASES.get(status, "Unknown"), fields)
    except Exception:  # whatever the slow path would choke on: not prepared
        return None
    if framing.chunking or framing.close or framing.expected != length:
        return None
    head = framing.head.replace(b"%", b"%%")
    for hole, fmt in (*holes, (_RID, b"%(rid)s")):
        raw = hole.encode("latin1")
        if head.count(raw) > 1:
            return None
        head = head.replace(raw, fmt)
    return head


def has_mark(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether any field holds the text our holes are made of: it would collide with them,
    so such an answer is not prepared."""
    return any(_MARK in name or _MARK in value for name, value in headers)


def slot_of(request: Request) -> Slot | None:
    """The (scheme, host, target) the fast wire looks `request` up by; None if it never
    could (not origin-form, not latin-1)."""
    if not request.target.startswith("/"):
        return None
    try:
        return (request.scheme, request.host.encode("latin1"), request.target.encode("latin1"))
    except UnicodeEncodeError:
        return None


def https_fields(policy: HttpsPolicy | None, request: Request) -> Fixed | None:
    """What the front adds to every answer for `request`'s (scheme, host) and what the
    prepared answer must therefore carry: HSTS over https (Front._Exchange asks the policy
    the same way); None if nothing may be prepared for it: plain http to a host the
    policy redirects (the front answers 308 before any stage; this request came over
    https in absolute-form, or before a reload)."""
    if policy is None:
        return ()
    if request.scheme == "https":
        value = policy.hsts(request.host)
        return ((STS, value),) if value else ()
    return None if policy.redirect(request.host, request.target) is not None else ()


def pick_request_id(given: bytes | None, new_id: Callable[[], bytes]) -> bytes:
    """The client's X-Request-Id if it is a plain token of sane length, else a new one
    (node.proxyheaders.request_id_of, on bytes)."""
    rid = given.strip() if given is not None else b""
    return rid if _REQUEST_ID.fullmatch(rid) else new_id()


class PreparedLog:
    """The access log as prepared answers write to it: the slow path's line for the same
    request (but its duration), with the request fields the log was asked for."""

    def __init__(self, access: AccessLog | None) -> None:
        self.access = access
        # The fields AccessLog records (its extra_headers; it keeps the names to itself),
        # lower-cased bytes as the wire has them. Credentials are redacted by AccessLog.
        names = getattr(access, "_extra", ())
        self.names = frozenset(str(n).lower().encode("latin1", "replace") for n in names)

    def line(self, slot: Slot, rid: bytes, fields: Fields, *, client: str, service: str,
             status: int, outcome: str, sent: int) -> None:
        access = self.access
        if access is None or not access.enabled:
            return
        scheme, host, target = slot
        headers = Headers()
        if self.names:  # as the front reads them: latin-1, OWS stripped, Host normalised
            for name, value in fields:
                lname = name.lower()
                if lname in self.names:
                    text = host if lname == b"host" else value.strip(b" \t")
                    headers.add(name.decode("latin1"), text.decode("latin1"))
        request = Request("GET", target.decode("latin1"), headers, scheme=scheme,
                          host=host.decode("latin1"), client=client,
                          request_id=rid.decode("latin1"), service=service)
        access.log(request, Response(status, outcome=outcome), sent_bytes=sent, duration=0.0)


class AccessLogged:
    """A store of prepared answers, as the node hands it the access log (node.server)."""

    def __init__(self) -> None:
        # Per instance, set in __init__: a compiled class (`make compiled`) takes no object
        # as a class-level default.
        self.log = PreparedLog(None)

    @property
    def access(self) -> AccessLog | None:
        """The node's access log, if it keeps one (swapped on SIGHUP)."""
        return self.log.access

    @access.setter
    def access(self, access: AccessLog | None) -> None:
        self.log = PreparedLog(access)


class HitCache(AccessLogged):
    """Prepared answers by (scheme, host, target); bounded in count and body bytes."""

    def __init__(
        self,
        cache_name: str,
        *,
        counts: Counter[str] | None = None,
        hold: float = 1.0,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        new_id: Callable[[], bytes] = new_request_id,
    ) -> None:
        super().__init__()
        self.cache_name = cache_name
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.hold = hold
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_head = 8 * 1024  # request heads larger than this go the slow way
        self.on_hit: Callable[[str, int], None] | None = None  # (service, status): metrics
        # Fields the node's handler sets on every answer after the pipeline (X-Scale0-Node).
        self.stamp: Fixed = ()
        # The fronts' https policy (redirects, HSTS), read per offer: SIGHUP swaps it.
        self.https_policy: Callable[[], HttpsPolicy | None] = lambda: None
        # Asked for a target with no prepared hit: the static files' (node.statichits), so
        # the fast wire has one shortcut, with or without a cache.
        self.more: Answer | None = None
        # How many answers `more` holds (the static files' `__len__`): with none here or
        # there, the fast wire does not ask at all (`ready`).
        self.more_held: Callable[[], int] | None = None
        self._epoch = time.monotonic()  # requests received before it offer nothing
        self._wall = wall_clock
        self._mono = monotonic
        self._new_id = new_id
        self._table: dict[Slot, Prepared] = {}
        self._by_key: dict[str, set[Slot]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._table)

    def ready(self) -> bool:
        """Whether some plain GET could be answered now: anything prepared, here or in `more`
        (a `more` that does not say how much it holds is taken to hold some). A node with
        no cache and no static files, or whose misses nothing yet answers, is not: the fast
        wire then skips reading the request's fields for the shortcut (~4% of a request)."""
        if self._table:
            return True
        held = self.more_held
        return self.more is not None and (held is None or held() > 0)

    def offer(self, request: Request, entry: CacheEntry, lifetime: float) -> None:
        """The slow path just served `entry`, the only one stored under its key, as a fresh
        HIT to the GET `request`, `lifetime` being its freshness lifetime (cache.rules);
        prepare it (quietly not, when it cannot be)."""
        slot = slot_of(request)
        if (self.hold <= 0 or slot is None or request.method != "GET" or slot in self._table
                or request.received < self._epoch):
            return
        always = https_fields(self.https_policy(), request)
        head = None if always is None else build_head(entry, self.cache_name, self.stamp, always)
        if head is None or len(entry.body) > self.max_bytes:
            return
        age0 = current_age(entry.headers, entry.request_time, entry.response_time,
                           entry.response_time)
        prepared = Prepared(head, entry.body, entry.key, entry.status, request.service, age0,
                            entry.response_time, lifetime, self._mono() + self.hold)
        while self._table and (len(self._table) >= self.max_entries
                               or self._bytes + len(entry.body) > self.max_bytes):
            self._drop(next(iter(self._table)))  # oldest first
        self._table[slot] = prepared
        self._by_key.setdefault(entry.key, set()).add(slot)
        self._bytes += len(entry.body)

    def answer(self, scheme: str, host: bytes, target: bytes, request_id: bytes | None, *,
               client: str = "", codings: int = 0,
               fields: Fields | None = None) -> tuple[bytes, bytes] | None:
        """(head, body) for a plain GET, or None: take the slow path. `host` lower-cased;
        `request_id` the client's X-Request-Id; `client` (the peer's address) and `fields`
        (all of the request's) are for the access log; `codings` (what the client accepts,
        node.static.codings_accepted) for static files. A target with nothing prepared
        here is asked of `more`."""
        slot = (scheme, host, target)
        p = self._table.get(slot)
        if p is None:
            more = self.more
            if more is None:
                return None
            return more(scheme, host, target, request_id, client=client, codings=codings,
                        fields=fields or [])
        now = self._wall()
        age = p.age0 + max(0.0, now - p.response_time)
        if age >= p.lifetime or self._mono() >= p.hold_until:
            self._drop(slot)
            return None
        rid = pick_request_id(request_id, self._new_id)
        head = p.head % {b"age": int(age), b"ttl": int(p.lifetime - age), b"rid": rid}
        self.counts["hit"] += 1
        if self.on_hit is not None:
            self.on_hit(p.service, p.status)
        self.log.line(slot, rid, fields or [], client=client, service=p.service,
                      status=p.status, outcome="hit", sent=len(p.body))
        return head, p.body

    def forget(self, key: str | None = None, *, prefix: bool = False) -> None:
        """Drop every prepared answer of cache key `key` (every key under it with `prefix`;
        None: all of them)."""
        if prefix and key:
            for name in [k for k in self._by_key if k.startswith(key)]:
                self.forget(name)
            return
        if key is None or prefix:
            self._table.clear()
            self._by_key.clear()
            self._bytes = 0
            self._epoch = time.monotonic()  # what is being served now follows older rules
            return
        for slot in list(self._by_key.get(key, ())):
            self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        p = self._table.pop(slot, None)
        if p is not None:
            self._bytes -= len(p.body)
            slots = self._by_key.get(p.key)
            if slots is not None:
                slots.discard(slot)
                if not slots:
                    del self._by_key[p.key]
