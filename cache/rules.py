"""RFC 9111 rules for a *shared* cache as pure functions: store? fresh? how old? serve?

Everything here decides and nothing acts: inputs are header lists, the times
an entry was requested and received, `now` (wall-clock epoch seconds, passed
in), and the operator's `Policy`; outputs are verdicts the cache stage carries
out. The order of questions follows the RFC: §3 (may it be stored), §4.2.1
(freshness lifetime: s-maxage > max-age > Expires - Date > heuristic), §4.2.3
(current age), §4 and §5.2 (may this request be answered with it, or must it be
revalidated), RFC 5861 (stale-while-revalidate, stale-if-error) and §4.4
(which keys an unsafe request invalidates). Where the RFC leaves a choice, the
safer reading for a cache shared by strangers is taken.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, cast

from cache.cachecontrol import NO_DIRECTIVES, Directives, parse_cache_control, parse_delta
from cache.entry import CacheEntry
from cache.httpdate import http_date
from cache.key import BadURL, cache_key, key_for_url, normalise_host, split_url, unkeyed_conflict
from cache.vary import VaryStar, vary_fields

Fields = Iterable[tuple[str, str]]

CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD"})
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9110 §15.1 "heuristically cacheable" codes, without 206 (no range support).
DEFAULT_CACHEABLE: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
UNDERSTOOD: Final = frozenset(
    {
        200,
        203,
        204,
        300,
        301,
        302,
        303,
        307,
        308,
        400,
        403,
        404,
        405,
        410,
        414,
        451,
        500,
        501,
        502,
        503,
        504,
    }
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator's choices where the RFC leaves room (per service)."""

    share_set_cookie: bool = False  # store responses carrying Set-Cookie
    default_swr: float = 0.0  # stale-while-revalidate when the response names none
    default_sie: float = 0.0  # stale-if-error when the response names none
    heuristic_fraction: float = 0.1  # of (Date - Last-Modified), §4.2.2
    heuristic_cap: float = 86400.0  # one day


class _Indexed(Protocol):
    """A multi-map that finds fields by lower-cased names it keeps (node.http.Headers,
    which this package may not import): a lookup without a lower() per field."""

    def get_all(self, name: str) -> list[str]: ...

    def get(self, name: str, default: str | None = None) -> str | None: ...

    def get_joined(self, name: str) -> str | None: ...


def _indexed(headers: Fields) -> _Indexed | None:
    # A stored entry's fields are a tuple: say so before hasattr, whose failed lookup
    # raises and clears an AttributeError (a decision on an entry asks six times).
    if type(headers) is tuple or type(headers) is list:
        return None
    return cast(_Indexed, headers) if hasattr(headers, "get_joined") else None


def _many(headers: Fields) -> Fields:
    """`headers` in a form that can be read more than once, copied only when it cannot:
    an indexed multi-map stays one (a copy into a list cost every later lookup a lower()
    per field — a dozen lookups a miss)."""
    if isinstance(headers, (list, tuple)) or _indexed(headers) is not None:
        return headers
    return list(headers)


def get_all(headers: Fields, name: str) -> list[str]:
    if (indexed := _indexed(headers)) is not None:
        return indexed.get_all(name)
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def get_first(headers: Fields, name: str) -> str | None:
    if (indexed := _indexed(headers)) is not None:
        return indexed.get(name)
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def response_directives(headers: Fields) -> Directives:
    return parse_cache_control(get_all(headers, "cache-control"))


# -- §3: may it be stored? ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # why not (or "" when ok), for Cache-Status detail and logs


# Every verdict `storable` gives is one of these, made once and shared (frozen: none can be
# changed under another's feet). Made per response, they ran the __init__ dataclasses
# writes, interpreted even compiled (docs/ARCHITECTURE.md, "Compiled or pure").
_STORABLE: Final = Verdict(True, "")
_REFUSED: Final = {reason: Verdict(False, reason) for reason in (
    "method", "status", "no-store", "cache-control too long", "private", "authorization",
    "set-cookie", "vary-star", "no freshness")}


def storable(
    method: str,
    request_headers: Fields,
    status: int,
    response_headers: Fields,
    *,
    request_cc: Directives,
    policy: Policy,
) -> Verdict:
    """Whether a shared cache may store this response to this request (§3, §3.5)."""
    headers = _many(response_headers)
    cc = response_directives(headers)
    if method not in CACHEABLE_METHODS:
        return _REFUSED["method"]
    if status not in UNDERSTOOD:
        return _REFUSED["status"]
    if request_cc.no_store or cc.no_store:
        return _REFUSED["no-store"]
    if cc.truncated:
        return _REFUSED["cache-control too long"]
    if cc.private:
        return _REFUSED["private"]
    if get_first(request_headers, "authorization") is not None and not (
        cc.public or cc.has("s-maxage") or cc.must_revalidate
    ):
        return _REFUSED["authorization"]
    if not policy.share_set_cookie and get_first(headers, "set-cookie") is not None:
        return _REFUSED["set-cookie"]
    if isinstance(vary_fields(get_all(headers, "vary")), VaryStar):
        return _REFUSED["vary-star"]
    explicit = cc.has("max-age") or cc.has("s-maxage") or get_first(headers, "expires") is not None
    if not (explicit or cc.public or status in DEFAULT_CACHEABLE):
        return _REFUSED["no freshness"]
    return _STORABLE


# -- §4.2: freshness and age --------------------------------------------------


def freshness_lifetime(status: int, headers: Fields, response_time: float, policy: Policy) -> float:
    """Seconds this response stays fresh in a shared cache (§4.2.1, §4.2.2); never negative."""
    headers = _many(headers)
    cc = response_directives(headers)
    for name in ("s-maxage", "max-age"):
        if cc.has(name):
            value = cc.seconds(name)
            return float(value) if value is not None else 0.0  # junk value: stale
    date = http_date(get_first(headers, "date"))
    base = date if date is not None else response_time
    expires_raw = get_first(headers, "expires")
    if expires_raw is not None:
        expires = http_date(expires_raw)
        return max(0.0, expires - base) if expires is not None else 0.0
    if cc.no_cache or not (status in DEFAULT_CACHEABLE or cc.public):
        return 0.0
    last_modified = http_date(get_first(headers, "last-modified"))
    if last_modified is None or last_modified >= base:
        return 0.0
    return min(policy.heuristic_cap, (base - last_modified) * policy.heuristic_fraction)


def current_age(headers: Fields, request_time: float, response_time: float, now: float) -> float:
    """§4.2.3: corrected initial age plus resident time; never negative, monotonic in `now`.

    A peer's clock may run ahead of ours, so a `response_time` in our future
    counts as no resident time rather than a negative one."""
    headers = _many(headers)
    age_raw = get_first(headers, "age")
    age_value = (parse_delta(age_raw) or 0) if age_raw is not None else 0
    date = http_date(get_first(headers, "date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_initial_age = max(apparent_age, age_value + response_delay)
    return corrected_initial_age + max(0.0, now - response_time)


# -- §4, §5.2, RFC 5861: may this request be served with it? ------------------


class Action(enum.Enum):
    FRESH = "fresh"  # serve it as it is
    STALE_SERVE_AND_REVALIDATE = "stale"  # serve it, refresh it in the background
    MUST_REVALIDATE = "revalidate"  # ask the origin (conditionally) first
    MISS = "miss"  # unusable: fetch as if nothing were stored


# A value made per decision (twice for a coalesced answer): not frozen, and its __init__
# written out (init=False), since mypyc leaves a generated one interpreted and a frozen one
# sets each field through object.__setattr__ (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True, init=False)
class Decision:
    action: Action
    age: float
    lifetime: float
    stale_if_error: bool  # may it be served stale if the origin fails or errs?
    reason: str

    def __init__(self, action: Action, age: float, lifetime: float, stale_if_error: bool,
                 reason: str = "") -> None:
        self.action = action
        self.age = age
        self.lifetime = lifetime
        self.stale_if_error = stale_if_error
        self.reason = reason

    @property
    def ttl(self) -> float:
        """Remaining freshness; negative once stale (RFC 9211's `ttl`)."""
        return self.lifetime - self.age


def decide(
    status: int,
    headers: Fields,
    *,
    request_time: float,
    response_time: float,
    request_cc: Directives,
    now: float,
    policy: Policy,
) -> Decision:
    """What to do with a stored response for a request carrying `request_cc`."""
    headers = _many(headers)
    cc = response_directives(headers)
    age = current_age(headers, request_time, response_time, now)
    lifetime = freshness_lifetime(status, headers, response_time, policy)
    staleness = age - lifetime
    # §4.2.4: no stale answers where a directive forbids them, not even on error.
    stale_forbidden = cc.no_cache or cc.must_revalidate or cc.proxy_revalidate or cc.has("s-maxage")
    sie = _window(cc, request_cc, "stale-if-error", policy.default_sie)
    on_error = not stale_forbidden and staleness <= sie

    def verdict(action: Action, reason: str) -> Decision:
        return Decision(action, age, lifetime, on_error, reason)

    if isinstance(vary_fields(get_all(headers, "vary")), VaryStar):
        return Decision(Action.MISS, age, lifetime, False, "vary-star")
    if request_cc.no_cache:
        return verdict(Action.MUST_REVALIDATE, "request no-cache")
    if cc.no_cache:
        return verdict(Action.MUST_REVALIDATE, "response no-cache")
    req_max_age = request_cc.seconds("max-age") if request_cc.has("max-age") else None
    if request_cc.has("max-age") and req_max_age is None:
        req_max_age = 0  # junk: the strictest reading
    min_fresh = request_cc.seconds("min-fresh")
    request_ok = (req_max_age is None or age <= req_max_age) and (
        min_fresh is None or lifetime - age >= min_fresh
    )
    if staleness < 0:
        if request_ok:
            return verdict(Action.FRESH, "")
        return verdict(Action.MUST_REVALIDATE, "request freshness")
    if stale_forbidden:
        return verdict(Action.MUST_REVALIDATE, "stale, revalidation required")
    max_stale = request_cc.seconds("max-stale")
    stale_ok = request_cc.max_stale_any or (max_stale is not None and staleness <= max_stale)
    if stale_ok and (req_max_age is None or age <= req_max_age):
        return verdict(Action.STALE_SERVE_AND_REVALIDATE, "request max-stale")
    swr = cc.seconds("stale-while-revalidate")
    window = float(swr) if swr is not None else policy.default_swr
    if request_ok and req_max_age is None and staleness <= window:
        return verdict(Action.STALE_SERVE_AND_REVALIDATE, "stale-while-revalidate")
    return verdict(Action.MUST_REVALIDATE, "stale")


def _window(cc: Directives, request_cc: Directives, name: str, default: float) -> float:
    """The larger of the response's, the request's and the operator's window."""
    values = [default]
    for d in (cc, request_cc):
        v = d.seconds(name)
        if v is not None:
            values.append(float(v))
    return max(values)


# -- §4.4: invalidation -----------------------------------------------------------


def invalidated_keys(
    method: str,
    status: int,
    response_headers: Fields,
    *,
    scheme: str,
    host: str,
    target: str,
    drop_params: Iterable[str] = (),
) -> list[str]:
    """Keys an unsafe request's non-error response invalidates (§4.4).

    The request URI, and the Location and Content-Location URIs when they name
    the same host (a response must not be able to evict another site's entries)."""
    if method.upper() in SAFE_METHODS or not 200 <= status < 400:
        return []
    drop = tuple(drop_params)
    own = cache_key(scheme, host, target, drop)
    keys = [own]
    own_host = normalise_host(scheme, host)
    for name in ("location", "content-location"):
        value = get_first(response_headers, name)
        if not value:
            continue
        value = value.strip()
        try:
            if value.startswith("/") and not value.startswith("//"):
                key = cache_key(scheme, host, value, drop)
            else:
                other_scheme, other_host, other_target = split_url(value)
                if normalise_host(other_scheme, other_host) != own_host:
                    continue
                key = cache_key(other_scheme, other_host, other_target, drop)
        except BadURL:
            continue
        if key not in keys:
            keys.append(key)
    return keys


# -- the whole "may the shared cache keep this?" question ------------------------


def refusal(
    request_headers: Fields,
    host: str,
    status: int,
    response_headers: Fields,
    *,
    request_cc: Directives,
    policy: Policy,
    max_size: int,
) -> str | None:
    """Why a GET's response must not be stored or shared, or None when it may be.

    `storable` plus the two guards a shared cache adds: a request whose unkeyed
    headers could have shaped the answer (cache.key.unkeyed_conflict), and a
    declared body larger than the cache takes."""
    items = _many(response_headers)
    verdict = storable("GET", request_headers, status, items, request_cc=request_cc, policy=policy)
    if not verdict.ok:
        return verdict.reason
    keyed = [n.strip() for v in get_all(items, "vary") for n in v.split(",")]
    conflict = unkeyed_conflict(request_headers, host, keyed)
    if conflict is not None:
        return conflict
    length = get_first(items, "content-length")
    if length and length.strip().isdigit() and int(length) > max_size:
        return "too large"
    return None


def replica_refusal(
    entry: CacheEntry,
    *,
    policy: Policy,
    max_size: int,
    now: float,
    drop_params: Iterable[str] = (),
    max_skew: float = 60.0,
) -> str | None:
    """Why an entry sent by a peer must not be stored here, or None.

    A peer's entry is checked as a local fill would be (it may come from a
    misconfigured or older node): its key must be one this node would build,
    its headers storable, its body within the cap, and its times plausible —
    a response time far in our future would keep it fresh for ever."""
    try:
        if key_for_url(entry.key, drop_params) != entry.key:
            return "key not normalised"
    except BadURL:
        return "key is not a URL"
    if len(entry.body) > max_size:
        return "too large"
    if not entry.request_time <= entry.response_time <= now + max_skew:
        return "implausible times"
    verdict = storable(
        "GET", (), entry.status, entry.headers, request_cc=NO_DIRECTIVES, policy=policy
    )
    return None if verdict.ok else verdict.reason
