"""Prepared static files: a plain GET of a file answered from bytes built once.

The static stage (node.static) serves a file through the whole pipeline — about
200 µs of Python, a stat and an open in a thread. When its answer to a GET is a
whole 200 of at most `max_body` bytes, the stage `offer`s it here and we build,
once, the exact bytes the slow path writes, with one hole for X-Request-Id
(node.hitcache.frame_head, the steps the cache's prepared hits use). The fast wire
then answers a later plain GET for the same (scheme, host, target) from them,
through the cache's HitCache (`HitCache.more`), so it has one shortcut with or
without a cache.

Accept-Encoding: the only other field the stage reads of such a GET (Range and every
conditional, If-Match and If-Unmodified-Since too, send a request the slow way:
node.hitcache.SLOW_FIELDS; only a 200 is ever offered). An answer that may depend on it (a
precompressed sibling, or a type gzipped on the fly: `node.static.varies_by_coding`)
is held per value of `node.static.codings_accepted` — which of br and gzip the
client accepts, as the stage decides it — and the wire, which reads the field with
that same function, asks for its request's value; one that does not is held once
for every client. So each variant is the bytes the stage sends for that request.

Over https the answer carries the front's HSTS field; plain http to a host the
policy redirects is never prepared (node.hitcache.https_fields).

Coherence: a prepared answer lives at most `hold` seconds; after that the next
request takes the slow path, which stats the file again and offers it anew. So a
file changed, replaced or deleted on disk is seen within `hold` (1 s by default);
a reload drops every prepared answer at once (`forget`), and an answer to a request
that began before it is not taken. Memory is bounded by `max_entries` answers and
`max_bytes` bytes of heads and bodies, oldest dropped first; larger files are never
held (the slow path streams them). Pure apart from the injected clock; one event
loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from node.hitcache import (
    AccessLogged,
    Fields,
    frame_head,
    has_mark,
    https_fields,
    new_request_id,
    pick_request_id,
    slot_of,
)
from node.http import Headers, Request, Response
from node.static import codings_accepted
from node.tls import HttpsPolicy

ANY = -1  # the codings part of the key of an answer every client gets
Key = tuple[str, bytes, bytes, int]  # (scheme, host, target, codings or ANY)
_CODINGS: dict[bytes, int] = {}  # Accept-Encoding value → codings_accepted; few distinct


def codings_of(value: bytes | None) -> int:
    """node.static.codings_accepted of a request's joined Accept-Encoding value as the fast
    wire has it (bytes; the Request the slow path builds decodes it as latin-1),
    remembered per value: browsers send a handful."""
    if value is None:
        return 0
    found = _CODINGS.get(value)
    if found is None:
        found = codings_accepted(value.decode("latin1"))
        if len(_CODINGS) >= 512:  # bounded: a client sending a new value each time
            _CODINGS.clear()
        _CODINGS[value] = found
    return found


@dataclass(frozen=True, slots=True)
class StaticAnswer:
    """One target's answer: `head % {b"rid": ...}` then `body`."""

    head: bytes  # a bytes %-template; literal % doubled
    body: bytes
    status: int
    service: str
    hold_until: float  # monotonic

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body)


class StaticHits(AccessLogged):
    """Prepared static answers by (scheme, host, target, codings); bounded in count and
    bytes."""

    def __init__(
        self,
        *,
        hold: float = 1.0,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_body: int = 1024 * 1024,
        monotonic: Callable[[], float] = time.monotonic,
        new_id: Callable[[], bytes] = new_request_id,
    ) -> None:
        super().__init__()
        self.hold = hold
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_body = max_body  # larger files are never held in memory
        self.served = 0  # answers given from here
        self.on_hit: Callable[[str, int], None] | None = None  # (service, status): metrics
        # Fields the node's handler sets on every answer after the pipeline (X-Scale0-Node).
        self.stamp: tuple[tuple[str, str], ...] = ()
        # The fronts' https policy (redirects, HSTS), read per offer: SIGHUP swaps it.
        self.https_policy: Callable[[], HttpsPolicy | None] = lambda: None
        self._mono = monotonic
        self._new_id = new_id
        self._epoch = time.monotonic()  # requests received before it offer nothing
        self._table: dict[Key, StaticAnswer] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._table)

    def wants(self, request: Request) -> bool:
        """Whether an answer to `request` would be taken: a GET that nothing live is
        prepared for. Cheap; asked before the stage reads a whole file."""
        if self.hold <= 0 or request.method != "GET":
            return False
        slot = slot_of(request)
        if slot is None:
            return False
        now = self._mono()
        codings = codings_accepted(request.headers.get_joined("Accept-Encoding"))
        return all(held is None or now >= held.hold_until
                   for held in (self._table.get((*slot, ANY)), self._table.get((*slot, codings))))

    def offer(self, request: Request, response: Response, *, varies: bool = False) -> None:
        """The static stage just answered the GET `request` with `response`, a whole 200
        with a bytes body that no field of the request but the target changes — and
        Accept-Encoding if `varies`; prepare it (quietly not, when it cannot be)."""
        body = response.body
        slot = slot_of(request)
        if (slot is None or not self.wants(request) or not isinstance(body, bytes)
                or len(body) > self.max_body or has_mark(response.headers)
                or request.received < self._epoch):
            return
        always = https_fields(self.https_policy(), request)
        if always is None:
            return
        head = frame_head(Headers(response.headers), response.status, len(body), self.stamp,
                          always=always)
        if head is None:
            return
        codings = ANY
        if varies:
            codings = codings_accepted(request.headers.get_joined("Accept-Encoding"))
        key = (*slot, codings)
        self._drop(key)  # an expired one
        answer = StaticAnswer(head, body, response.status, request.service,
                              self._mono() + self.hold)
        if answer.size > self.max_bytes:
            return
        while self._table and (len(self._table) >= self.max_entries
                               or self._bytes + answer.size > self.max_bytes):
            self._drop(next(iter(self._table)))  # oldest first
        self._table[key] = answer
        self._bytes += answer.size

    def answer(self, scheme: str, host: bytes, target: bytes, request_id: bytes | None, *,
               client: str = "", codings: int = 0,
               fields: Fields | None = None) -> tuple[bytes, bytes] | None:
        """(head, body) for a plain GET, or None: take the slow path. `host` lower-cased;
        `request_id` the client's X-Request-Id; `codings` what the client accepts
        (node.static.codings_accepted); `client` and `fields` are for the access log."""
        key = (scheme, host, target, ANY)
        p = self._table.get(key)
        if p is None:
            key = (scheme, host, target, codings)
            p = self._table.get(key)
            if p is None:
                return None
        if self._mono() >= p.hold_until:
            self._drop(key)  # the slow path looks at the file again and offers it anew
            return None
        rid = pick_request_id(request_id, self._new_id)
        self.served += 1
        if self.on_hit is not None:
            self.on_hit(p.service, p.status)
        self.log.line((scheme, host, target), rid, fields or [], client=client,
                      service=p.service, status=p.status, outcome="static", sent=len(p.body))
        return p.head % {b"rid": rid}, p.body

    def forget(self) -> None:
        """Drop every prepared answer (a reload: mounts and policies may have changed)."""
        self._table.clear()
        self._bytes = 0
        self._epoch = time.monotonic()  # what is being served now follows the old rules

    def _drop(self, key: Key) -> None:
        p = self._table.pop(key, None)
        if p is not None:
            self._bytes -= p.size
