"""Forwarding headers are believed only from trusted proxies (issue 8)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.http import Headers, Request
from node.proxyheaders import NO_PROXIES, TrustedProxies, client_address, upstream_headers

LB = TrustedProxies.parse(["10.0.0.0/8", "::1"])
ipv4 = st.ip_addresses(v=4).map(str)
claims = st.lists(st.sampled_from([
    ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"), ("Forwarded", "for=6.6.6.6;proto=https;host=evil"),
    ("X-Forwarded-For", "1.2.3.4, 10.1.1.1"), ("x-forwarded-for", "garbage")]), max_size=6)


def _req(client: str, headers: Headers, scheme: str = "http") -> Request:
    return Request("GET", "/", headers, b"", scheme=scheme, host="good.example", client=client)


@given(ipv4.filter(lambda a: ipaddress.ip_address(a) not in ipaddress.ip_network("10.0.0.0/8")),
       claims, st.sampled_from(["http", "https"]))
def test_an_untrusted_peer_cannot_claim_anything(client: str, sent: list[tuple[str, str]],
                                                 scheme: str) -> None:
    out = upstream_headers(_req(client, Headers(sent), scheme), "n1", LB)
    assert out.get_all("x-forwarded-for") == [client]
    assert out.get_all("x-forwarded-proto") == [scheme]
    assert out.get_all("x-forwarded-host") == ["good.example"]
    assert out.get_all("forwarded") == [f"for={client};proto={scheme};host=good.example"]
    assert client_address(client, Headers(sent), LB) == client


@given(claims)
def test_nobody_is_trusted_by_default(sent: list[tuple[str, str]]) -> None:
    out = upstream_headers(_req("10.1.1.1", Headers(sent)), "n1")
    assert out.get_all("x-forwarded-for") == ["10.1.1.1"]
    assert "evil" not in str(list(out.items()))
    assert client_address("10.1.1.1", Headers(sent), NO_PROXIES) == "10.1.1.1"


def test_a_trusted_proxys_chain_names_the_real_client() -> None:
    h = Headers([("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.2.2.2"),
                 ("X-Forwarded-Proto", "https")])
    assert client_address("10.9.9.9", h, LB) == "203.0.113.7"  # 6.6.6.6 is the client's claim
    out = upstream_headers(_req("10.9.9.9", h), "n1", LB)
    assert out.get("X-Forwarded-For") == "6.6.6.6, 203.0.113.7, 10.2.2.2, 10.9.9.9"
    assert out.get("X-Forwarded-Proto") == "https"
    assert client_address("::1", Headers([("X-Forwarded-For", "10.0.0.1")]), LB) == "10.0.0.1"
    assert client_address("::ffff:10.0.0.5", Headers([("X-Forwarded-For", "x")]), LB) == \
        "::ffff:10.0.0.5"


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        TrustedProxies.parse(["10.0.0.0/33"])
    assert not LB.trusts("not an ip") and not LB.trusts("")


@given(st.text(max_size=40), st.text(max_size=200))
def test_client_address_takes_any_input(peer: str, xff: str) -> None:
    value = "".join(c for c in xff if c.isprintable())
    got = client_address(peer, Headers([("X-Forwarded-For", value)]), LB)
    assert got == peer or got in value
