"""Validation: conditional requests from stored entries, and 304s merged back (RFC 9111 §4.3).

A stale entry is revalidated by asking the origin "has it changed?" with the
entry's validators (If-None-Match from ETag, If-Modified-Since from
Last-Modified). A 304 answer updates the stored header fields (§3.2) of the
entry it applies to (§4.3.4) and restarts its age. The same comparisons answer
a client's own conditional request from the cache (RFC 9110 §13.1.1, §13.1.3).
What a store keeps never includes hop-by-hop fields (§3.1) or the cache's own
status fields of an earlier hop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from cache.entry import CacheEntry, HeaderItems
from cache.httpdate import http_date
from cache.rules import get_all, get_first

Fields = Iterable[tuple[str, str]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# §3.2: never taken from a 304; the stored body depends on them.
NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "content-type"})
# Client preconditions the cache answers itself; the fill it sends upstream drops them.
CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-range", "range"})


def _connection_named(headers: list[tuple[str, str]]) -> set[str]:
    return {
        m.strip().lower() for v in get_all(headers, "connection") for m in v.split(",") if m.strip()
    }


def stored_header_items(headers: Fields, *, keep_age: bool = True) -> HeaderItems:
    """The fields a store keeps of a response: no hop-by-hop, no earlier X-Cache/Cache-Status.

    `Age` from the origin is kept (the age calculation needs it) unless told otherwise."""
    items = list(headers)
    drop = HOP_BY_HOP | _connection_named(items) | {"x-cache", "cache-status"}
    if not keep_age:
        drop = drop | {"age"}
    return tuple((k, v) for k, v in items if k.lower() not in drop)


def conditional_headers(entry_headers: Fields) -> list[tuple[str, str]]:
    """If-None-Match / If-Modified-Since to revalidate a stored entry (empty: no validators)."""
    items = list(entry_headers)
    out: list[tuple[str, str]] = []
    etag = get_first(items, "etag")
    if etag and etag.strip():
        out.append(("If-None-Match", etag.strip()))
    last_modified = get_first(items, "last-modified")
    if last_modified and http_date(last_modified) is not None:
        out.append(("If-Modified-Since", last_modified.strip()))
    return out


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def _etags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def validators_match(entry_headers: Fields, response_headers: Fields) -> bool:
    """Whether a 304 applies to this stored entry (§4.3.4).

    A strong ETag in the 304 must equal the entry's; else a Last-Modified must
    equal the entry's; a 304 naming no validator applies to an entry without an ETag.
    That last one is the answer to the If-Modified-Since made from this very entry (its
    only validator): RFC 9110 §15.4.5 does not ask a 304 to repeat Last-Modified, and
    Flask (Werkzeug) strips it from every 304. Requiring it cost each revalidation of
    such an entry a second, unconditional request. An entry with an ETag was asked with
    If-None-Match, and a 304 without the ETag a 200 would carry is not trusted."""
    stored = list(entry_headers)
    fresh = list(response_headers)
    new_etag = get_first(fresh, "etag")
    old_etag = get_first(stored, "etag")
    if new_etag is not None:
        return old_etag is not None and _opaque(new_etag) == _opaque(old_etag)
    new_lm = get_first(fresh, "last-modified")
    if new_lm is not None:
        return get_first(stored, "last-modified") == new_lm
    return old_etag is None


def merge_not_modified(
    entry: CacheEntry, response_headers: Fields, request_time: float, response_time: float
) -> CacheEntry:
    """The entry refreshed by a 304: its fields replaced by the 304's (§3.2), its age restarted."""
    fresh = list(stored_header_items(response_headers))
    skip = NOT_UPDATED | _connection_named(fresh)
    updates = [(k, v) for k, v in fresh if k.lower() not in skip]
    replaced = {k.lower() for k, _ in updates}
    kept = [(k, v) for k, v in entry.headers if k.lower() not in replaced]
    if "age" not in replaced:  # the old Age described the old response
        kept = [(k, v) for k, v in kept if k.lower() != "age"]
    return dataclasses.replace(
        entry,
        headers=stored_header_items(kept + updates),
        request_time=request_time,
        response_time=response_time,
    )


def not_modified(request_headers: Fields, entry_headers: Fields) -> bool:
    """Whether a client's GET/HEAD conditional is answered by 304 from this entry.

    If-None-Match uses the weak comparison; If-Modified-Since counts only
    without If-None-Match (RFC 9110 §13.2.2)."""
    req = list(request_headers)
    stored = list(entry_headers)
    inm = get_all(req, "if-none-match")
    if inm:
        etag = get_first(stored, "etag")
        if etag is None:
            return False
        tags = [t for v in inm for t in _etags(v)]
        return "*" in tags or any(_opaque(t) == _opaque(etag) for t in tags)
    since = http_date(get_first(req, "if-modified-since"))
    modified = http_date(get_first(stored, "last-modified"))
    return since is not None and modified is not None and modified <= since


NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


def not_modified_headers(entry_headers: Fields) -> list[tuple[str, str]]:
    """The fields a 304 sent to a client carries (RFC 9110 §15.4.5)."""
    return [(k, v) for k, v in entry_headers if k.lower() in NOT_MODIFIED_FIELDS]
