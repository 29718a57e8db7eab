"""Prepared static files: a plain GET of a file answered from bytes built once.

The static stage (node.static) serves a file through the whole pipeline — about
200 µs of Python, a stat and an open in a thread. When its answer to a GET is a
whole 200 whose bytes no other request field changes (`node.static.preparable`:
no precompressed sibling, not gzipped on the fly, at most `max_body` bytes), the
stage `offer`s it here and we build, once, the exact bytes the slow path writes,
with one hole for X-Request-Id (node.hitcache.frame_head, the steps the cache's
prepared hits use). The fast wire then answers a later plain GET for the same
(scheme, host, target) from them, through the cache's HitCache (`HitCache.more`),
so it has one shortcut with or without a cache.

Coherence: a prepared answer lives at most `hold` seconds; after that the next
request takes the slow path, which stats the file again and offers it anew. So a
file changed, replaced or deleted on disk is seen within `hold` (1 s by default);
a reload drops every prepared answer at once (`forget`). Memory is bounded by
`max_entries` answers and `max_bytes` bytes of heads and bodies, oldest dropped
first; larger files are never held (the slow path streams them).

Only the fast wire's plain http answers are prepared (https answers carry HSTS and
never take the shortcut). Pure apart from the injected clock; one event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from node.accesslog import AccessLog
from node.hitcache import (
    Slot,
    frame_head,
    has_mark,
    log_prepared,
    new_request_id,
    pick_request_id,
    slot_of,
)
from node.http import Headers, Request, Response


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


class StaticHits:
    """Prepared static answers by (scheme, host, target); bounded in count and bytes."""

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
        self.hold = hold
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_body = max_body  # larger files are never held in memory
        self.served = 0  # answers given from here
        self.on_hit: Callable[[str, int], None] | None = None  # (service, status): metrics
        self.access: AccessLog | None = None  # the node's access log, if it keeps one
        # Fields the node's handler sets on every answer after the pipeline (X-Scale0-Node).
        self.stamp: tuple[tuple[str, str], ...] = ()
        self._mono = monotonic
        self._new_id = new_id
        self._table: dict[Slot, StaticAnswer] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._table)

    def wants(self, request: Request) -> bool:
        """Whether an answer to `request` would be taken: a GET over plain http that
        nothing live is prepared for. Cheap; asked before the stage reads a whole file."""
        if self.hold <= 0 or request.method != "GET" or request.scheme != "http":
            return False
        slot = slot_of(request)
        if slot is None:
            return False
        held = self._table.get(slot)
        return held is None or self._mono() >= held.hold_until

    def offer(self, request: Request, response: Response) -> None:
        """The static stage just answered the GET `request` with `response`, a whole 200
        with a bytes body that no other field of the request would change; prepare it
        (quietly not, when it cannot be)."""
        body = response.body
        slot = slot_of(request)
        if (slot is None or not self.wants(request) or not isinstance(body, bytes)
                or len(body) > self.max_body or has_mark(response.headers)):
            return
        head = frame_head(Headers(response.headers), response.status, len(body), self.stamp)
        if head is None:
            return
        self._drop(slot)  # an expired one
        answer = StaticAnswer(head, body, response.status, request.service,
                              self._mono() + self.hold)
        if answer.size > self.max_bytes:
            return
        while self._table and (len(self._table) >= self.max_entries
                               or self._bytes + answer.size > self.max_bytes):
            self._drop(next(iter(self._table)))  # oldest first
        self._table[slot] = answer
        self._bytes += answer.size

    def answer(self, scheme: str, host: bytes, target: bytes, request_id: bytes | None,
               client: str = "") -> tuple[bytes, bytes] | None:
        """(head, body) for a plain GET, or None: take the slow path. `host` lower-cased;
        `request_id` the client's X-Request-Id; `client` is for the access log."""
        slot = (scheme, host, target)
        p = self._table.get(slot)
        if p is None:
            return None
        if self._mono() >= p.hold_until:
            self._drop(slot)  # the slow path looks at the file again and offers it anew
            return None
        rid = pick_request_id(request_id, self._new_id)
        self.served += 1
        if self.on_hit is not None:
            self.on_hit(p.service, p.status)
        log_prepared(self.access, slot, rid, client=client, service=p.service, status=p.status,
                     outcome="static", sent=len(p.body))
        return p.head % {b"rid": rid}, p.body

    def forget(self) -> None:
        """Drop every prepared answer (a reload: mounts and policies may have changed)."""
        self._table.clear()
        self._bytes = 0

    def _drop(self, slot: Slot) -> None:
        p = self._table.pop(slot, None)
        if p is not None:
            self._bytes -= p.size
