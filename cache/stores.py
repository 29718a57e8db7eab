"""Choosing a cache store from one config string, and byte sizes written for humans.

    memory                      LRU in this process, 256 MiB
    memory:512MiB               ... with that cap (also memory?max=512MiB)
    files                       the embedded default, ./scale0-cache, 1 GiB
    files:DIR?max=10GiB         a directory and its cap (options: max, max_entry, fsync)
    mongo:mongodb://host/db     a MongoDB (options after '#', since the URL has its own
                                '?': mongo:mongodb://h/?w=1#mode=ttl&ttl=3600&max=2GiB)

A spec is SCHEME[:LOCATION][?OPTIONS] — or #OPTIONS, which always works and is
the only form for locations that are URLs (contain "://") or contain "?". The
scheme names an entry point in the group `scale0.cache_stores`; a third-party
package adds a store by declaring one there. The entry point names an object with

    from_spec(location: str, options: Mapping[str, str]) -> CacheStore

and raises ValueError for a spec it cannot use. Sizes: a number with an optional
unit, case-insensitive — B; K KiB M MiB G GiB T TiB (powers of 1024, as nginx
reads "k"/"m"); KB MB GB TB (powers of 1000); fractions allowed ("1.5GiB").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from importlib import import_module, metadata
from typing import cast

from cache.store import CacheStore

GROUP = "scale0.cache_stores"
# Used when the package metadata is missing (running from a bare source tree).
BUILTIN = {
    "memory": "cache.memory:MemoryStore",
    "files": "cache.files:FileStore",
    "mongo": "cache.mongo:MongoStore",
}
_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _UNITS[_p] = _UNITS[_p + "ib"] = 1024**_i
    _UNITS[_p + "b"] = 1000**_i
_SIZE = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([A-Za-z]{0,3})\s*")
MAX_SIZE = 1 << 62
_SCHEME = re.compile(r"[a-z][a-z0-9_+.-]{0,31}")


def parse_size(text: str) -> int:
    """Bytes in `text` ("512MiB", "10GB", "1.5g", "4096"); ValueError if unreadable."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"cannot read {text!r} as a size: use a number and an optional unit "
            "(B, KiB/K, MiB/M, GiB/G, TiB/T, KB, MB, GB, TB)"
        )
    try:
        value = int(Decimal(match.group(1)) * _UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"cannot read {text!r} as a size") from None
    if value > MAX_SIZE:
        raise ValueError(f"size {text!r} is larger than {MAX_SIZE} bytes")
    return value


_PASSWORD = re.compile(r"(://[^:/@]*):.*@")


def redact(spec: str) -> str:
    """`spec` with a URL's password shown as *** (mongo:mongodb://user:***@host/db), for
    logs and error messages: a node's stderr goes to the journal."""
    return _PASSWORD.sub(r"\1:***@", spec)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, location, options) of a store spec; ValueError when malformed."""
    head, sep, query = spec.partition("#")
    if not sep and "?" in head and "://" not in head.partition("?")[0]:
        # `?` starts the options, unless it is a URL's own query (mongodb://h/?w=1); an
        # option's value may hold "://" itself (memory?x=http://a)
        head, _, query = head.partition("?")
    scheme, _, location = head.partition(":")
    scheme = scheme.strip().lower()
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"cache store spec {redact(spec)!r} does not start with a store name")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, eq, value = part.partition("=")
        if not eq or not name:
            raise ValueError(f"cache store option {part!r} is not NAME=VALUE")
        if name in options:
            raise ValueError(f"cache store option {name!r} is given twice")
        options[name] = value
    return scheme, location, options


def known_stores() -> dict[str, str]:
    """Store name → "module:attr", from the entry points (and the built-in three)."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def open_store(spec: str) -> CacheStore:
    """A store built from `spec` (not yet opened: await its open())."""
    scheme, location, options = parse_spec(spec)
    known = known_stores()
    if scheme not in known:
        raise ValueError(
            f"unknown cache store {scheme!r}; known stores: {', '.join(sorted(known))}"
        )
    module_name, _, attr = known[scheme].partition(":")
    factory: object = import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    from_spec = getattr(factory, "from_spec", None)
    if from_spec is None:
        raise ValueError(f"cache store {scheme!r} ({known[scheme]}) has no from_spec()")
    return cast(CacheStore, from_spec(location, options))


def unknown_options(store: str, options: Mapping[str, str], allowed: set[str]) -> None:
    """ValueError naming any option a store does not understand (typos must not pass)."""
    extra = sorted(set(options) - allowed)
    if extra:
        raise ValueError(
            f"{store} store: unknown option(s) {', '.join(extra)}; "
            f"known: {', '.join(sorted(allowed))}"
        )


def parse_bool(store: str, name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{store} store: option {name}={value!r} is not a boolean")
