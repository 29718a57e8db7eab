"""Proxy header rules: hop-by-hop removal, forwarding headers, request ids, targets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ClientError
from node.http import Headers, Request
from node.proxyheaders import (
    HOP_BY_HOP,
    TrustedProxies,
    _forwarded_element,
    _forwarded_value,
    _node_for,
    downstream_headers,
    normalise_target,
    request_id_of,
    strip_hop_by_hop,
    upstream_headers,
)

names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
values = st.from_regex(r"[ -~]{0,30}", fullmatch=True)
fields = st.lists(st.tuples(names, values), max_size=12)
hop = st.sampled_from(["Keep-Alive", "TE", "Trailer", "Transfer-Encoding",
                       "Upgrade", "Proxy-Authorization", "Proxy-Connection", "proxy-x"])


@given(fields, st.lists(st.tuples(hop, values), max_size=4), st.lists(names, max_size=3))
def test_strip_removes_hop_by_hop_and_listed_and_keeps_the_rest_in_order(
        plain: list[tuple[str, str]], hops: list[tuple[str, str]], listed: list[str]) -> None:
    h = Headers(plain + hops)
    if listed:
        h.add("Connection", ", ".join(listed))
    out = strip_hop_by_hop(h)
    dropped = {n.lower() for n in listed} - {"host", "content-length"}
    for name, _ in out:
        low = name.lower()
        assert low not in HOP_BY_HOP and not low.startswith("proxy-") and low not in dropped
    expected = [(k, v) for k, v in plain
                if k.lower() not in HOP_BY_HOP | dropped and not k.lower().startswith("proxy-")]
    assert out.items() == expected  # order and repeats kept for everything else


def test_connection_cannot_remove_host_or_content_length() -> None:
    h = Headers([("Host", "a"), ("Content-Length", "3"), ("Connection", "host, content-length")])
    assert strip_hop_by_hop(h).items() == [("Host", "a"), ("Content-Length", "3")]


def _req(**kw: object) -> Request:
    base: dict[str, object] = {"method": "GET", "target": "/", "headers": Headers(),
                               "host": "a.test", "client": "192.0.2.1", "request_id": "rid"}
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("client", "expected"), [
    ("192.0.2.1", "for=192.0.2.1"),
    ("2001:db8::1", 'for="[2001:db8::1]"'),
    ("", "for=unknown"),
])
def test_forwarded_quotes_ipv6(client: str, expected: str) -> None:
    out = upstream_headers(_req(client=client), "n1")
    assert out.get("Forwarded") == f"{expected};proto=http;host=a.test"


def test_upstream_appends_to_existing_chains() -> None:
    h = Headers([("X-Forwarded-For", "10.0.0.1"), ("Forwarded", "for=10.0.0.1"),
                 ("Via", "1.0 edge"), ("X-Forwarded-Proto", "https")])
    # Only a trusted proxy's chain is appended to (node/proxyheaders.py, issue 8).
    out = upstream_headers(_req(headers=h), "n1", TrustedProxies.parse(["192.0.2.0/24"]))
    assert out.get("X-Forwarded-For") == "10.0.0.1, 192.0.2.1"
    assert out.get("Forwarded") == "for=10.0.0.1, for=192.0.2.1;proto=http;host=a.test"
    assert out.get("Via") == "1.0 edge, 1.1 n1"
    assert out.get("X-Forwarded-Proto") == "https"  # the trusted proxy terminated TLS
    assert out.get("X-Request-Id") == "rid"


def test_a_forwarded_request_keeps_the_first_nodes_view() -> None:
    h = Headers([("X-Forwarded-For", "10.0.0.1"), ("Via", "1.1 n1")])
    out = upstream_headers(_req(headers=h, hops=1, client="10.9.9.9"), "n2")
    assert out.get("X-Forwarded-For") == "10.0.0.1"
    assert out.get("Via") == "1.1 n1, 1.1 n2"


_SPOOFED = st.sampled_from(["X-Forwarded-For", "x-forwarded-proto", "X-Forwarded-Host",
                            "Forwarded"])


@given(fields, st.lists(st.tuples(_SPOOFED, values), max_size=4), st.lists(st.tuples(hop, values),
       max_size=3), st.booleans())
def test_an_untrusted_clients_fields_go_upstream_with_only_our_forwarding_fields(
        plain: list[tuple[str, str]], spoofed: list[tuple[str, str]],
        hops: list[tuple[str, str]], via: bool) -> None:
    """Everything end to end the client sent, in order, then one X-Forwarded-For, -Proto,
    -Host and Forwarded of ours: none of the client's own claims survive."""
    plain = [(k, v) for k, v in plain
             if k.lower() not in {"via", "x-request-id", *(n.lower() for n in _FORWARDED)}]
    mixed = [*spoofed[:2], *plain, *hops, *spoofed[2:]]
    if via:
        mixed.append(("Via", "1.0 edge"))
    out = upstream_headers(_req(headers=Headers(mixed), client="198.51.100.7"), "n1")
    kept = [(k, v) for k, v in plain
            if k.lower() not in HOP_BY_HOP and not k.lower().startswith("proxy-")]
    ours = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "a.test"),
            ("Forwarded", "for=198.51.100.7;proto=http;host=a.test")]
    if via:  # the client's Via keeps its place, with us appended
        expected = [*kept, ("Via", "1.0 edge, 1.1 n1"), *ours]
    else:
        expected = [*kept, *ours, ("Via", "1.1 n1")]
    assert out.items() == [*expected, ("X-Request-Id", "rid")]


_FORWARDED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")


@given(fields)
def test_downstream_always_has_one_via_and_no_hop_by_hop(plain: list[tuple[str, str]]) -> None:
    out = downstream_headers(Headers([*plain, ("Keep-Alive", "5")]), "n1", "rid")
    assert len(out.get_all("via")) == 1 and out.get("via", "").endswith("1.1 n1")
    assert "keep-alive" not in out
    assert out.get("x-request-id") is not None


@given(fields, st.booleans(), st.booleans())
def test_downstream_keeps_the_answers_order_and_appends_ours(
        plain: list[tuple[str, str]], via: bool, their_id: bool) -> None:
    """The answer's fields in order; a Via of the answer's keeps its place with us appended,
    else ours comes last; the id is echoed unless the answer has one."""
    plain = [(k, v) for k, v in plain if k.lower() not in {"via", "x-request-id", "connection"}
             and k.lower() not in HOP_BY_HOP and not k.lower().startswith("proxy-")]
    given_fields = list(plain)
    middle = len(plain) // 2
    if via:
        given_fields.insert(middle, ("Via", "1.0 origin"))
    if their_id:
        given_fields.append(("X-Request-Id", "theirs"))
    out = downstream_headers(Headers(given_fields), "n1", "rid")
    if via:
        expected = [*plain[:middle], ("Via", "1.0 origin, 1.1 n1"), *plain[middle:]]
        expected += [("X-Request-Id", "theirs")] if their_id else [("X-Request-Id", "rid")]
    else:
        expected = [*plain, *([("X-Request-Id", "theirs")] if their_id else []),
                    ("Via", "1.1 n1"), *([] if their_id else [("X-Request-Id", "rid")])]
    assert out.items() == expected
    assert downstream_headers(Headers(given_fields), "n1").get_all("x-request-id") == (
        ["theirs"] if their_id else [])


@given(st.text(max_size=200))
def test_request_id_is_the_clients_only_when_sane(given_id: str) -> None:
    rid = request_id_of(Headers([("X-Request-Id", given_id)]), lambda: "generated")
    assert rid in (given_id.strip(), "generated")
    assert len(rid) <= 128 and all(c.isprintable() and c != " " for c in rid)


@given(st.sampled_from(["http", "HTTP", "https"]),
       st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
       st.from_regex(r"(/[a-z0-9._~%-]{0,8}){0,4}(\?[a-z0-9=&]{0,10})?", fullmatch=True))
def test_absolute_form_splits_and_overrides_host(scheme: str, host: str, rest: str) -> None:
    t = normalise_target("GET", f"{scheme}://{host}{rest}", ["ignored.test"], "HTTP/1.1", "http")
    assert t.scheme == scheme.lower() and t.host == host.lower()
    assert t.target.startswith("/") and t.target.endswith(rest.lstrip("/"))


@given(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=2),
       st.sampled_from(["GET", "OPTIONS", "CONNECT", "POST"]),
       st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
def test_normalise_never_fails_other_than_client_error(
        target: str, hosts: list[str], method: str, version: str) -> None:
    try:
        t = normalise_target(method, target, hosts, version, "http")
    except ClientError as exc:
        assert exc.status == 400 and exc.reason
    else:
        assert t.target == "*" or t.target.startswith("/")
        assert t.host == t.host.lower()


@pytest.mark.parametrize(("method", "target", "hosts", "version"), [
    ("GET", "/", [], "HTTP/1.1"),
    ("GET", "/", ["a", "b"], "HTTP/1.1"),
    ("GET", "*", ["a"], "HTTP/1.1"),
    ("CONNECT", "a:443", ["a:443"], "HTTP/1.1"),
    ("GET", "ftp://a/", ["a"], "HTTP/1.1"),
    ("GET", "http://user@a/", ["a"], "HTTP/1.1"),
    ("GET", "/", ["bad host"], "HTTP/1.1"),
])
def test_bad_targets_are_client_errors(method: str, target: str, hosts: list[str],
                                       version: str) -> None:
    with pytest.raises(ClientError):
        normalise_target(method, target, hosts, version, "http")


def test_http10_without_host_and_options_star_are_fine() -> None:
    assert normalise_target("GET", "/x", [], "HTTP/1.0", "http").host == ""
    assert normalise_target("OPTIONS", "*", ["A.test"], "HTTP/1.1", "https").target == "*"


@given(st.sampled_from(["10.0.0.1", "::1", "fe80::1%eth0", "", "unknown", "a b"]),
       st.sampled_from(["http", "https"]),
       st.sampled_from(["", "a.test", "a.test:8080", "[::1]:80", 'q"x']))
def test_the_remembered_forwarded_element_is_the_one_built_afresh(
        client: str, scheme: str, host: str) -> None:
    fresh = f"for={_node_for(client)};proto={scheme}" + (
        f";host={_forwarded_value(host)}" if host else "")
    assert _forwarded_element(client, scheme, host) == fresh
    assert _forwarded_element(client, scheme, host) == fresh  # and when asked again


def test_add_all_is_add_in_turn() -> None:
    one, many = Headers([("Host", "h")]), Headers([("Host", "h")])
    fields = [("X-A", "1"), ("x-b", "2"), ("X-A", "3")]
    for name, value in fields:
        one.add(name, value)
    many.add_all(fields)
    assert one == many and many.get_all("x-a") == ["1", "3"] and "X-B" in many
