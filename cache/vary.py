"""The secondary cache key: which stored variant of a URL fits a request (RFC 9111 §4.1).

A response's Vary names request headers; the variant string records their
values in the request that produced it, normalised so that trivially different
spellings share one variant: names lower-cased and sorted, whitespace around
list members and runs of spaces collapsed, and case folded for fields whose
values are case-insensitive. An absent field differs from an empty one. The
result is a short printable string ("" when the response has no Vary), or a
digest when the readable form would be long, so stores can use it freely.
`Vary: *` means no request ever matches: such a response is never served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import quote

MAX_VARY_FIELDS = 16
MAX_VARIANT_LENGTH = 200

# Fields whose values compare case-insensitively (RFC 9110 §12.5, §8.4).
_CASELESS = frozenset({"accept", "accept-encoding", "accept-language", "accept-charset"})


class VaryStar:
    """Marker: the response varies on everything (`Vary: *`)."""

    def __repr__(self) -> str:
        return "VARY_STAR"


VARY_STAR = VaryStar()


def vary_fields(values: Iterable[str]) -> tuple[str, ...] | VaryStar:
    """The lower-cased, sorted, de-duplicated field names of the Vary field values.

    Junk members are ignored; more than MAX_VARY_FIELDS names is treated as
    `Vary: *` (a response nobody could practically match)."""
    names: set[str] = set()
    for value in values:
        for member in value.split(","):
            name = member.strip().lower()
            if name == "*":
                return VARY_STAR
            if name and name.isascii() and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
                names.add(name)
    if len(names) > MAX_VARY_FIELDS:
        return VARY_STAR
    return tuple(sorted(names))


def normalise_value(name: str, values: list[str]) -> str:
    members = [" ".join(m.split()) for v in values for m in v.split(",")]
    text = ",".join(m for m in members if m)
    return text.lower() if name in _CASELESS else text


def variant_key(fields: tuple[str, ...], request_headers: Iterable[tuple[str, str]]) -> str:
    """The variant string of a request for a response that varies on `fields`."""
    if not fields:
        return ""
    found: dict[str, list[str]] = {}
    wanted = set(fields)
    for name, value in request_headers:
        lname = name.lower()
        if lname in wanted:
            found.setdefault(lname, []).append(value)
    parts = []
    for name in fields:
        if name in found:
            parts.append(f"{name}={quote(normalise_value(name, found[name]), safe='')}")
        else:
            parts.append(name)  # absent, which differs from present-but-empty
    text = "&".join(parts)
    if len(text) > MAX_VARIANT_LENGTH:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def request_variant(
    vary_values: Iterable[str], request_headers: Iterable[tuple[str, str]]
) -> str | None:
    """The variant a request selects under a response's Vary values; None for `Vary: *`."""
    fields = vary_fields(vary_values)
    if isinstance(fields, VaryStar):
        return None
    return variant_key(fields, request_headers)
