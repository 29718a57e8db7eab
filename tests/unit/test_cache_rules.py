"""RFC 9111 shared-cache rules: tables of cases and hypothesis properties."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.cachecontrol import Directives, parse_cache_control
from cache.rules import (
    DEFAULT_CACHEABLE,
    Action,
    Policy,
    current_age,
    decide,
    freshness_lifetime,
    invalidated_keys,
    storable,
)

T0 = 1_700_000_000.0
NONE = Directives()
POLICY = Policy()


def date(t: float) -> str:
    return formatdate(t, usegmt=True)


def ok(
    method: str = "GET",
    *,
    req: list[tuple[str, str]] | None = None,
    status: int = 200,
    resp: list[tuple[str, str]] | None = None,
    req_cc: str = "",
    policy: Policy = POLICY,
) -> tuple[bool, str]:
    v = storable(
        method, req or [], status, resp or [], request_cc=parse_cache_control(req_cc), policy=policy
    )
    return v.ok, v.reason


AUTH = [("Authorization", "Bearer x")]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (True, "")),
        ({"method": "POST", "resp": [("Cache-Control", "max-age=60")]}, (False, "method")),
        ({"resp": [("Cache-Control", "no-store")]}, (False, "no-store")),
        ({"req_cc": "no-store"}, (False, "no-store")),
        ({"resp": [("Cache-Control", "private, max-age=60")]}, (False, "private")),
        ({"resp": [("Cache-Control", 'private="X", max-age=60')]}, (False, "private")),
        ({"req": AUTH, "resp": [("Cache-Control", "max-age=60")]}, (False, "authorization")),
        ({"req": AUTH, "resp": [("Cache-Control", "public")]}, (True, "")),
        ({"req": AUTH, "resp": [("Cache-Control", "s-maxage=5")]}, (True, "")),
        ({"req": AUTH, "resp": [("Cache-Control", "must-revalidate")]}, (True, "")),
        ({"resp": [("Set-Cookie", "s=1"), ("Cache-Control", "max-age=9")]}, (False, "set-cookie")),
        ({"resp": [("Set-Cookie", "s=1")], "policy": Policy(share_set_cookie=True)}, (True, "")),
        ({"resp": [("Vary", "Accept, *")]}, (False, "vary-star")),
        ({"status": 302}, (False, "no freshness")),
        ({"status": 302, "resp": [("Cache-Control", "max-age=5")]}, (True, "")),
        ({"status": 307, "resp": [("Expires", date(T0))]}, (True, "")),
        ({"status": 500, "resp": [("Cache-Control", "public")]}, (True, "")),
        ({"status": 206, "resp": [("Cache-Control", "max-age=5")]}, (False, "status")),
        ({"status": 304, "resp": [("Cache-Control", "max-age=5")]}, (False, "status")),
        ({"status": 599, "resp": [("Cache-Control", "max-age=5")]}, (False, "status")),
        ({"status": 404}, (True, "")),
        (
            {"resp": [("Cache-Control", "max-age=1, " + "x" * 5000)]},
            (False, "cache-control too long"),
        ),
    ],
)
def test_storable_table(kwargs: dict[str, object], expected: tuple[bool, str]) -> None:
    assert ok(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "headers", "lifetime"),
    [
        (200, [("Cache-Control", "max-age=60, s-maxage=10")], 10),
        (200, [("Cache-Control", "max-age=60"), ("Expires", date(T0 + 999))], 60),
        (200, [("Date", date(T0)), ("Expires", date(T0 + 100))], 100),
        (200, [("Expires", date(T0 + 100))], 100),  # no Date: response time
        (200, [("Date", date(T0)), ("Expires", date(T0 - 100))], 0),
        (200, [("Expires", "0")], 0),
        (200, [("Cache-Control", "max-age=junk")], 0),
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 - 1000))], 100),
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 - 10**8))], 86400),
        (200, [("Date", date(T0)), ("Last-Modified", date(T0 + 10))], 0),
        (302, [("Date", date(T0)), ("Last-Modified", date(T0 - 1000))], 0),
        (200, [("Cache-Control", "no-cache"), ("Last-Modified", date(T0 - 1000))], 0),
        (200, [], 0),
    ],
)
def test_freshness_table(status: int, headers: list[tuple[str, str]], lifetime: float) -> None:
    assert freshness_lifetime(status, headers, T0, POLICY) == pytest.approx(lifetime)


def test_current_age_rfc_example() -> None:
    # Origin says Age: 10, Date 5 s before arrival, 2 s round trip, resident 30 s.
    headers = [("Age", "10"), ("Date", date(T0 - 5))]
    assert current_age(headers, T0 - 2, T0, T0 + 30) == pytest.approx(10 + 2 + 30)
    assert current_age([("Date", date(T0 - 50))], T0, T0, T0) == pytest.approx(50)
    assert current_age([("Age", "bogus")], T0, T0, T0 + 1) == pytest.approx(1)
    assert current_age([], T0 + 100, T0 + 100, T0) == 0  # a peer's clock ahead of ours


def dec(
    headers: list[tuple[str, str]],
    now: float,
    req: str = "",
    status: int = 200,
    policy: Policy = POLICY,
) -> Action:
    return decide(
        status,
        headers,
        request_time=T0,
        response_time=T0,
        request_cc=parse_cache_control(req),
        now=now,
        policy=policy,
    ).action


F, S, R, M = (Action.FRESH, Action.STALE_SERVE_AND_REVALIDATE, Action.MUST_REVALIDATE, Action.MISS)
MA60 = [("Cache-Control", "max-age=60")]


@pytest.mark.parametrize(
    ("headers", "age", "req", "expected"),
    [
        (MA60, 10, "", F),
        (MA60, 61, "", R),
        (MA60, 10, "no-cache", R),
        (MA60, 10, "max-age=5", R),
        (MA60, 10, "max-age=10", F),
        (MA60, 50, "min-fresh=20", R),
        (MA60, 30, "min-fresh=20", F),
        (MA60, 70, "max-stale=20", S),
        (MA60, 90, "max-stale=20", R),
        (MA60, 9999, "max-stale", S),
        ([("Cache-Control", "max-age=60, must-revalidate")], 70, "max-stale", R),
        ([("Cache-Control", "max-age=60, proxy-revalidate")], 70, "max-stale", R),
        ([("Cache-Control", "s-maxage=60, stale-while-revalidate=100")], 70, "", R),
        ([("Cache-Control", "no-cache, max-age=60")], 1, "", R),
        ([("Cache-Control", "max-age=60, stale-while-revalidate=30")], 80, "", S),
        ([("Cache-Control", "max-age=60, stale-while-revalidate=30")], 100, "", R),
        ([("Cache-Control", "max-age=60, stale-while-revalidate=30")], 80, "max-age=70", R),
        ([("Cache-Control", "max-age=60"), ("Vary", "*")], 1, "", M),
    ],
)
def test_decision_table(
    headers: list[tuple[str, str]], age: float, req: str, expected: Action
) -> None:
    assert dec(headers, T0 + age, req) is expected


def test_operator_swr_default_and_stale_if_error() -> None:
    assert dec(MA60, T0 + 70, policy=Policy(default_swr=20)) is S
    d = decide(
        200,
        MA60,
        request_time=T0,
        response_time=T0,
        request_cc=NONE,
        now=T0 + 100,
        policy=Policy(default_sie=50),
    )
    assert d.action is R and d.stale_if_error and d.ttl == pytest.approx(-40)
    d = decide(
        200,
        [("Cache-Control", "max-age=60, stale-if-error=10")],
        request_time=T0,
        response_time=T0,
        request_cc=NONE,
        now=T0 + 100,
        policy=POLICY,
    )
    assert not d.stale_if_error
    d = decide(
        200,
        [("Cache-Control", "max-age=60, must-revalidate, stale-if-error=999")],
        request_time=T0,
        response_time=T0,
        request_cc=NONE,
        now=T0 + 100,
        policy=POLICY,
    )
    assert not d.stale_if_error


def test_invalidation() -> None:
    keys = invalidated_keys(
        "POST",
        201,
        [("Location", "/items/7"), ("Content-Location", "http://other.example/x")],
        scheme="http",
        host="shop.example",
        target="/items",
    )
    assert keys == ["http://shop.example/items", "http://shop.example/items/7"]
    assert invalidated_keys("GET", 200, [], scheme="http", host="h", target="/") == []
    assert invalidated_keys("DELETE", 500, [], scheme="http", host="h", target="/") == []
    assert invalidated_keys(
        "PUT",
        204,
        [("Location", "HTTP://H:80/y"), ("Location", "junk")],
        scheme="http",
        host="h",
        target="/x",
    ) == ["http://h/x", "http://h/y"]


# -- properties ---------------------------------------------------------------------------

cc_members = st.sampled_from(
    [
        "public",
        "private",
        "no-store",
        "no-cache",
        "max-age=30",
        "s-maxage=10",
        "must-revalidate",
        "proxy-revalidate",
        "stale-while-revalidate=20",
        "stale-if-error=40",
        "max-age=junk",
    ]
)
resp_headers = (
    st.lists(cc_members, max_size=5)
    .map(lambda ms: [("Cache-Control", ", ".join(ms))] if ms else [])
    .flatmap(
        lambda h: st.lists(
            st.sampled_from(
                [
                    ("Expires", date(T0 + 50)),
                    ("Date", date(T0 - 3)),
                    ("Last-Modified", date(T0 - 900)),
                    ("Age", "7"),
                    ("Set-Cookie", "a=1"),
                    ("Vary", "Accept"),
                    ("Vary", "*"),
                ]
            ),
            max_size=4,
        ).map(lambda extra: h + extra)
    )
)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
statuses = st.sampled_from([200, 203, 204, 206, 301, 302, 304, 404, 410, 500, 502, 503])
req_headers = st.lists(st.sampled_from([("Authorization", "x"), ("Accept", "a")]), max_size=2)


@given(methods, req_headers, statuses, resp_headers, st.booleans())
def test_storable_properties(
    method: str, req: list[tuple[str, str]], status: int, resp: list[tuple[str, str]], share: bool
) -> None:
    v = storable(method, req, status, resp, request_cc=NONE, policy=Policy(share_set_cookie=share))
    cc = parse_cache_control([v for k, v in resp if k == "Cache-Control"])
    if v.ok:
        assert method in ("GET", "HEAD")
        assert not cc.private and not cc.no_store
        assert ("Vary", "*") not in resp
        assert share or all(k != "Set-Cookie" for k, _ in resp)
        if any(k == "Authorization" for k, _ in req):
            assert cc.public or cc.has("s-maxage") or cc.must_revalidate
        assert (
            status in DEFAULT_CACHEABLE
            or cc.public
            or cc.has("max-age")
            or cc.has("s-maxage")
            or any(k == "Expires" for k, _ in resp)
        )


@given(resp_headers, st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 10))
def test_age_monotonic_and_lifetime_nonnegative(
    headers: list[tuple[str, str]], dt1: float, dt2: float, delay: float
) -> None:
    a1 = current_age(headers, T0 - delay, T0, T0 + dt1)
    a2 = current_age(headers, T0 - delay, T0, T0 + dt1 + dt2)
    assert 0 <= a1 <= a2
    assert freshness_lifetime(200, headers, T0, POLICY) >= 0


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([200, 302, 404]))
def test_s_maxage_wins(s: int, m: int, status: int) -> None:
    headers = [("Cache-Control", f"max-age={m}, s-maxage={s}"), ("Expires", date(T0 + 7))]
    assert freshness_lifetime(status, headers, T0, POLICY) == s


@given(
    resp_headers,
    st.floats(0, 1e5),
    st.sampled_from(["", "no-cache", "max-age=0", "max-stale", "min-fresh=10"]),
)
def test_decision_consistent(headers: list[tuple[str, str]], dt: float, req: str) -> None:
    d = decide(
        200,
        headers,
        request_time=T0,
        response_time=T0,
        request_cc=parse_cache_control(req),
        now=T0 + dt,
        policy=POLICY,
    )
    cc = parse_cache_control([v for k, v in headers if k == "Cache-Control"])
    if d.action is Action.FRESH:
        assert d.age < d.lifetime and not cc.no_cache and req != "no-cache"
    if d.action is Action.STALE_SERVE_AND_REVALIDATE or (d.stale_if_error and d.ttl <= 0):
        assert not (cc.must_revalidate or cc.proxy_revalidate or cc.has("s-maxage") or cc.no_cache)
