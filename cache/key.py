"""The primary cache key: one normalised absolute URL per cached resource.

`scheme://host[:port]/path[?query]`, built the same way on every node so peers
agree on keys: scheme and host lower-cased, the default port and a trailing dot
dropped, percent-escapes upper-cased and unreserved ones decoded (RFC 3986
§6.2.2), dot segments removed, bytes that are not printable ASCII escaped, the
fragment dropped, and the query parameters the operator names removed (tracking
parameters such as `utm_source`) with the others kept in their order — order
can matter to an origin, so it is never sorted. Request headers are *not* part
of the key; `unkeyed_conflict` spots the ones attackers use to make an origin
answer differently for the same key (cache poisoning).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters kept as they are in a path or query; everything else is %-escaped.
_SAFE: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@/?%")
_HOST_SAFE: Final = _UNRESERVED | frozenset("!$&'()*+,;=:[]%")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
# Compiled here: re.sub(pattern, ...) looks the pattern up in re's cache through two
# interpreted calls, and a stored miss normalises its URL three times.
_LONE_PERCENT: Final = re.compile(r"%(?![0-9A-F]{2})")

# Request headers that some frameworks use to rebuild the URL or method; a
# response produced under one of them may differ for the same key.
POISON_HEADERS: Final = (
    "x-forwarded-host",
    "x-host",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-forwarded-scheme",
    "x-forwarded-port",
)

_POISON: Final = frozenset(POISON_HEADERS)


class BadURL(ValueError):
    """A URL given to the cache (PURGE, Location) is not an absolute http(s) URL."""


def _fix_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


# What a key keeps as it is, "%" apart (_SAFE, _HOST_SAFE): text of these alone is its own
# normal form, as a URL nearly always is; one C-level match says so, where `_clean_each`
# takes a step a character (a fifth of a stored miss on unique URLs).
_AS_IS: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")
_HOST_AS_IS: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:\[\]]*")


def _clean(text: str, safe: frozenset[str] = _SAFE, as_is: re.Pattern[str] = _AS_IS) -> str:
    """Normalise percent-escapes and escape whatever is not safe in a key (`as_is` matches
    exactly the text of `safe` characters without a "%")."""
    if as_is.fullmatch(text) is not None:
        return text
    return _clean_each(text, safe)


def _clean_each(text: str, safe: frozenset[str]) -> str:
    """`_clean`, a character at a time: the reference for any text."""
    text = _ESCAPE.sub(_fix_escape, text)
    out: list[str] = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    # A lone "%" not starting a valid escape is escaped itself.
    return _LONE_PERCENT.sub("%25", "".join(out))


def _remove_dot_segments(path: str) -> str:
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def normalise_host(scheme: str, host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and "]" in host:  # IPv6 literal, maybe with a port
        end = host.index("]") + 1
        name, port = host[:end], host[end + 1 :] if host[end : end + 1] == ":" else ""
    else:
        name, _, port = host.partition(":")
        name = name.rstrip(".")
    if port and port != DEFAULT_PORTS.get(scheme):
        return f"{_clean(name, _HOST_SAFE, _HOST_AS_IS)}:{_clean(port, _HOST_SAFE, _HOST_AS_IS)}"
    return _clean(name, _HOST_SAFE, _HOST_AS_IS)


def _query(query: str, drop: frozenset[str]) -> str:
    if not query:
        return ""
    params = [p for p in query.split("&") if p]
    if drop:
        params = [p for p in params if unquote_plus(p.partition("=")[0]) not in drop]
    return "&".join(_clean(p) for p in params)


def cache_key(scheme: str, host: str, target: str, drop_params: Iterable[str] = ()) -> str:
    """The primary key for a request of `scheme` to `host` with origin-form `target`."""
    scheme = scheme.strip().lower() or "http"
    target = target.partition("#")[0]
    path, _, query = target.partition("?")
    path = _remove_dot_segments(_clean(path if path.startswith("/") else "/" + path))
    q = _query(query, frozenset(drop_params))
    return f"{scheme}://{normalise_host(scheme, host)}{path}{'?' + q if q else ''}"


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, host, target) of an absolute http(s) URL; BadURL otherwise."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise BadURL(f"not an absolute http(s) URL: {url[:200]!r}")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host, target = rest[:cut], rest[cut:]
    if not host or "@" in host or any(c.isspace() for c in host):
        raise BadURL(f"URL has no usable host: {url[:200]!r}")
    return scheme, host, target or "/"


def key_for_url(url: str, drop_params: Iterable[str] = ()) -> str:
    """The primary key of an absolute URL (PURGE, Location, Content-Location)."""
    return cache_key(*split_url(url), drop_params=drop_params)


def unkeyed_conflict(
    headers: Iterable[tuple[str, str]], host: str, keyed: Iterable[str] = ()
) -> str | None:
    """Why this request must not fill the shared cache, or None.

    A request carrying an unkeyed header that rewrites host, URL or method (an
    `X-Forwarded-Host` naming another host, an `X-Original-URL`, ...) could make
    the origin produce a response that others would then get under the normal
    key. Such a response is passed through but never stored or shared. Headers
    listed in `keyed` (the response's Vary) are part of the secondary key and so
    harmless; an `X-Forwarded-Host` equal to the host is what proxies send."""
    has_any = getattr(headers, "has_any", None)  # node.http.Headers: its names are lowered
    if has_any is not None and not has_any(_POISON):
        return None  # the usual request: asked twice a miss, without a lower() per field
    keyed_set = {k.lower() for k in keyed}
    for name, value in headers:
        lname = name.lower()
        if lname not in POISON_HEADERS or lname in keyed_set:
            continue
        if lname == "x-forwarded-host" and value.strip().lower() == host.lower():
            continue
        return f"unkeyed request header {name}"
    return None
