"""node.hitcache over https: which fields a prepared answer carries for a request's scheme
and host (`https_fields`, against node.tls.HttpsPolicy), where they go in the head, and
that a full forget refuses the offers of requests that began before it (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from node.hitcache import HitCache, build_head, https_fields
from node.http import Headers, Request
from node.tls import STS, HostPolicy, HttpsPolicy

POLICY = HttpsPolicy({"a.test": HostPolicy(redirect=True, hsts_max_age=600),
                      "b.test": HostPolicy(hsts_max_age=60, include_subdomains=True),
                      "c.test": HostPolicy(redirect=True)})
HOSTS = st.sampled_from(["a.test", "A.test:8443", "b.test", "c.test", "d.test", "[::1]:8443",
                         "x.a.test", ""])
TARGETS = st.sampled_from(["/", "/x?y=1", "/.well-known/acme-challenge/t"])


def entry(headers: tuple[tuple[str, str], ...] = ()) -> CacheEntry:
    return CacheEntry("k", "", 200, (("Cache-Control", "max-age=60"), *headers), b"hi",
                      0.0, 0.0)


@given(scheme=st.sampled_from(["http", "https"]), host=HOSTS, target=TARGETS,
       wildcard=st.booleans())
def test_https_fields_are_what_the_front_adds_or_nothing_where_it_redirects(
        scheme: str, host: str, target: str, wildcard: bool) -> None:
    policy = HttpsPolicy({**POLICY.hosts, **({"*": HostPolicy(hsts_max_age=5)} if wildcard
                                              else {})})
    request = Request("GET", target, Headers(), scheme=scheme, host=host.lower())
    fields = https_fields(policy, request)
    if scheme == "https":  # what Front._Exchange sets on every https answer
        value = policy.hsts(host)
        assert fields == (((STS, value),) if value else ())
    elif policy.redirect(host, target) is not None:  # the front answers 308 first
        assert fields is None
    else:
        assert fields == ()  # never HSTS over plain http (RFC 6797 §7.2)
    assert https_fields(None, request) == ()


def test_hsts_goes_after_the_answer_fields_and_an_upstreams_own_value_stands() -> None:
    sts = ((STS, "max-age=600"),)
    head = build_head(entry(), "c", (("X-Scale0-Node", "n1"),), sts)
    assert head is not None
    assert head.endswith(b"\r\nX-Scale0-Node: n1\r\nStrict-Transport-Security: max-age=600"
                         b"\r\nContent-Length: 2\r\n\r\n")
    own = build_head(entry(((STS, "max-age=1"),)), "c", (), sts)
    assert own is not None and own.count(b"Strict-Transport-Security") == 1
    assert b"\r\nStrict-Transport-Security: max-age=1\r\n" in own


def test_an_offer_from_a_request_begun_before_a_full_forget_is_refused() -> None:
    hits = HitCache("c")
    early = Request("GET", "/a", Headers(), host="h")
    late = Request("GET", "/b", Headers(), host="h")
    early.received = late.received - 1.0  # received a moment before the reload
    hits.forget()
    hits.offer(early, entry(), 60.0)
    assert len(hits) == 0
    late.received = hits._epoch  # began as the reload ended
    hits.offer(late, entry(), 60.0)
    assert len(hits) == 1
    hits.forget("k")  # one key forgotten (a put, a purge) is no reload: its offer stands
    hits.offer(late, entry(), 60.0)
    assert len(hits) == 1
