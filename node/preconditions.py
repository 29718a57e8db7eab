"""Conditional GET/HEAD of a file (RFC 9110 §13): which status the preconditions give.

Pure: the fields' joined values, the representation's (strong) ETag and mtime in,
412, 304 or None (go on: Range and If-Range come after) out. §13.2.2's order:

1. If-Match — false (no listed tag strongly equal to the ETag, and no `*`) → 412;
2. else If-Unmodified-Since — a valid date before the file's mtime → 412
   (an invalid date is ignored);
3. If-None-Match — a listed tag weakly equal to the ETag, or `*` → 304;
4. else If-Modified-Since — a valid date at or after the mtime → 304.

The file exists whenever this is asked, so `*` matches it. Dates compare at whole
seconds, as Last-Modified says them.
"""

from __future__ import annotations

import re

from cache.httpdate import http_date  # bounded: a field of junk or 10 MB is just invalid

# An entity-tag (§8.8.3): optional W/, then a quoted opaque tag of etagc characters.
_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')

PRECONDITION_FAILED = 412
NOT_MODIFIED = 304


def entity_tags(value: str) -> tuple[bool, list[tuple[bool, str]]]:
    """A field's list of entity-tags: (is `*`, [(weak, quoted opaque tag)]). Elements that
    are not entity-tags are skipped (they match nothing)."""
    if value.strip() == "*":
        return True, []
    tags: list[tuple[bool, str]] = []
    for element in _elements(value):
        m = _TAG.fullmatch(element + ",")
        if m is not None:
            tags.append((m.group(1) is not None, m.group(2)))
    return False, tags


def _elements(value: str) -> list[str]:
    """Split a list on the commas outside quoted tags (an opaque tag may hold a comma)."""
    out: list[str] = []
    start, quoted = 0, False
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return [e for e in out if e.strip()]


def if_match_holds(value: str, etag: str) -> bool:
    """§13.1.1: `*`, or a listed tag strongly equal to `etag` (a weak one never is)."""
    star, tags = entity_tags(value)
    strong = not etag.startswith("W/")
    return star or (strong and any(not weak and tag == etag for weak, tag in tags))


def if_none_match_holds(value: str, etag: str) -> bool:
    """§13.1.2, weak comparison: True when the field's condition is *false* (a match)."""
    star, tags = entity_tags(value)
    opaque = etag[2:] if etag.startswith("W/") else etag
    return star or any(tag == opaque for _, tag in tags)


def evaluate(
    etag: str,
    mtime: float,
    *,
    if_match: str | None = None,
    if_unmodified_since: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
) -> int | None:
    """412, 304 or None for a GET/HEAD of an existing file with `etag` and `mtime`."""
    modified = int(mtime)
    if if_match is not None:
        if not if_match_holds(if_match, etag):
            return PRECONDITION_FAILED
    else:
        since = http_date(if_unmodified_since)
        if since is not None and modified > since:
            return PRECONDITION_FAILED
    if if_none_match is not None:
        return NOT_MODIFIED if if_none_match_holds(if_none_match, etag) else None
    since = http_date(if_modified_since)
    if since is not None and modified <= since:
        return NOT_MODIFIED
    return None
