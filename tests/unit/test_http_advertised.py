"""The http address a node advertises: the host its gossip and peer sockets advertise.

With `--http :8080` and no `--advertise`, peers and `scale0 mesh` were told
`localhost:8080` while gossip and peer showed the host's real address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossip.agent import advertised
from node.config import parse_hostport
from node.meshmember import WILDCARD_HOSTS, http_advertised


def primary() -> str:
    return "10.1.2.3"


def test_a_wildcard_bind_advertises_the_primary_address_as_gossip_does() -> None:
    for bind in (":8080", "0.0.0.0:8080", "*:8080", "[::]:8080"):
        host, port = parse_hostport(bind)
        got = http_advertised(host, port, primary=primary)
        assert got == "10.1.2.3:8080", bind
        gossip = advertised("tcp://*:7946", primary())  # what the agent does for gossip
        assert got.rsplit(":", 1)[0] == gossip.removeprefix("tcp://").rsplit(":", 1)[0]
        assert "localhost" not in got


def test_advertise_wins_as_for_the_other_sockets() -> None:
    assert http_advertised("", 8080, "node-1.example.net", primary) == "node-1.example.net:8080"
    assert http_advertised("0.0.0.0", 80, "203.0.113.9", primary) == "203.0.113.9:80"


def test_a_specific_bind_is_kept() -> None:
    assert http_advertised("127.0.0.1", 8080, primary=primary) == "127.0.0.1:8080"
    assert http_advertised("10.0.0.5", 8080, primary=primary) == "10.0.0.5:8080"


def test_ipv6_hosts_are_bracketed() -> None:
    assert http_advertised("::1", 8080, primary=primary) == "[::1]:8080"
    assert http_advertised("", 8080, "fd00::7", primary) == "[fd00::7]:8080"
    assert http_advertised("::", 8080, primary=lambda: "fd00::1") == "[fd00::1]:8080"


names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
hosts = st.one_of(st.sampled_from(sorted(WILDCARD_HOSTS - {"[::]"})),
                  st.ip_addresses().map(str), names)


advertises = st.one_of(st.just(""), st.ip_addresses().map(str).filter(
    lambda a: a not in WILDCARD_HOSTS))


@given(hosts, st.integers(0, 65535), advertises)
def test_the_advertised_address_reads_back_and_is_never_a_wildcard(
        host: str, port: int, advertise: str) -> None:
    got_host, got_port = parse_hostport(http_advertised(host, port, advertise, primary))
    assert got_port == port
    assert got_host not in WILDCARD_HOSTS and got_host != "localhost"
    if advertise:
        assert got_host == advertise
    elif host not in WILDCARD_HOSTS:
        assert got_host == host
