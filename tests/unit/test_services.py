"""Service mapping: host and prefix rules, precedence, the default, 404."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ConfigError, NoRoute
from node.services import DEFAULT_SERVICE, KnownServices, Route, ServiceMap, hostname

MAP = ServiceMap.from_specs([
    "www.example.com=www",
    "www.example.com/api=api",
    "www.example.com/api/v2=api2",
    "*.example.com=wild",
    "*.deep.example.com=deeper",
    "*/health=health",
])


@pytest.mark.parametrize(("host", "path", "service"), [
    ("www.example.com", "/", "www"),
    ("WWW.Example.com:8080", "/api", "api"),
    ("www.example.com", "/api/users?x=1", "api"),
    ("www.example.com", "/apix", "www"),  # prefixes match whole segments
    ("www.example.com", "/api/v2/x", "api2"),  # longest prefix wins
    ("shop.example.com", "/api", "wild"),
    ("a.b.example.com", "/", "wild"),
    ("x.deep.example.com", "/", "deeper"),  # longest wildcard wins
    ("example.com", "/", "default"),  # *.example.com does not take the bare domain
    ("other.test", "/health", "health"),
    ("www.example.com", "/health", "www"),  # an exact host beats *
    ("[::1]:8080", "/", "default"),
])
def test_table(host: str, path: str, service: str) -> None:
    assert MAP.service_for(host, path, None) == service


def test_unmapped_without_default_is_404_with_a_reason() -> None:
    with pytest.raises(NoRoute) as err:
        MAP.service_for("nowhere.test", "/", known={"www"})
    assert err.value.status == 404
    assert "nowhere.test" in err.value.reason and "\n" not in err.value.reason
    assert MAP.service_for("nowhere.test", "/", known={"default"}) == "default"


@pytest.mark.parametrize("spec", ["", "www", "=svc", "www=", "a b=svc", "ex*.com=x",
                                  "*.*.com=x", "a:80=x", "a=s v c"])
def test_bad_specs_name_the_flag(spec: str) -> None:
    with pytest.raises(ConfigError, match="--route"):
        Route.parse(spec)


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
segments = st.lists(st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), max_size=3)
specs = st.tuples(st.one_of(hosts, hosts.map(lambda h: "*." + h), st.just("*")), segments,
                  st.from_regex(r"[a-z]{1,5}", fullmatch=True))


@given(st.lists(specs, max_size=8), hosts, segments)
def test_the_winner_matches_and_nothing_more_specific_does(
        rules: list[tuple[str, list[str], str]], host: str, path_parts: list[str]) -> None:
    routes = [Route.parse(f"{h}{''.join('/' + s for s in p)}={svc}") for h, p, svc in rules]
    smap = ServiceMap(routes)
    path = "/" + "/".join(path_parts)
    won = smap.match(host, path)
    matching = [r for r in routes if r.host_rank(host) >= 0 and r.takes_path(path)]
    if won is None:
        assert not matching
        assert smap.service_for(host, path, None) == "default"
    else:
        key = (won.host_rank(host), len(won.prefix))
        assert all((r.host_rank(host), len(r.prefix)) <= key for r in matching)
        assert smap.service_for(host, path, ()) == won.service


@given(hosts, st.integers(0, 65535))
def test_hostname_drops_the_port(host: str, port: int) -> None:
    assert hostname(f"{host.upper()}:{port}") == host


_label = st.text("abcdefghij", min_size=1, max_size=6)
_segment = st.text("abcdefghij0123456789-", min_size=1, max_size=6)


@given(st.lists(st.tuples(_label, st.lists(_segment, max_size=2), _label), max_size=5),
       _label, st.lists(_segment, max_size=3), st.text("abc=&", max_size=6))
def test_a_cache_keys_service_is_what_its_request_would_get(
        rules: list[tuple[str, list[str], str]], host: str, path: list[str], query: str) -> None:
    from cache.key import cache_key
    from node.services import service_of_key

    mapper = ServiceMap.from_specs(
        f"{h}.test{''.join('/' + p for p in prefix)}={svc}" for h, prefix, svc in rules)
    target = "/" + "/".join(path) + (f"?{query}" if query else "")
    key = cache_key("http", f"{host}.test", target)
    route = mapper.match(f"{host}.test", "/" + "/".join(path))
    assert service_of_key(mapper, key) == (route.service if route else "default")


class Offers:
    """What the workers and the load table offer, as KnownServices asks it."""

    def __init__(self, *services: str) -> None:
        self.now: set[str] = set(services)
        self.asked = 0

    def __call__(self) -> set[str]:
        self.asked += 1
        return set(self.now)


def test_default_counts_as_offered_only_while_the_node_warms_up() -> None:
    clock = [100.0]
    offers = Offers("api")
    known = KnownServices(offers, warm_until=104.0, clock=lambda: clock[0])
    assert set(known()) == {"api", DEFAULT_SERVICE}  # its workers may not have said READY yet
    clock[0] = 104.0
    assert set(known()) == {"api"}  # warmed up, and no one offers it: a 404 for unrouted
    assert not known.default_seen


def test_default_once_offered_stays_known_without_asking_again() -> None:
    clock = [200.0]
    offers = Offers("api")
    known = KnownServices(offers, warm_until=0.0, clock=lambda: clock[0])
    assert DEFAULT_SERVICE not in known()
    offers.now.add(DEFAULT_SERVICE)
    assert DEFAULT_SERVICE in known() and known.default_seen
    offers.now.clear()  # its last worker went (a deploy): its requests wait, not 404
    asked = offers.asked
    for _ in range(3):
        assert set(known()) == {DEFAULT_SERVICE}
    assert offers.asked == asked  # no scan of workers and load table per request any more
