"""Node config: defaults, TOML, flags winning, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import NodeConfig, from_mapping, load_config, parse_hostport
from node.errors import ConfigError


def test_defaults_are_designs_ports() -> None:
    c = NodeConfig()
    assert (c.http, c.admin, c.workers.endpoint) == (":8080", "127.0.0.1:8081", "tcp://*:7950")
    assert (c.gossip, c.peer, c.cache) == ("tcp://*:7946", "tcp://*:7947", "files:./scale0-cache")


def test_toml_then_flags_win(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('id = "east-1"\ndc = "east"\nroutes = ["a.test=a"]\ntls-cert = ["c.pem"]\n'
                 'tls_key = ["k.pem"]\n'
                 '[workers]\nendpoint = "tcp://*:9000"\ndefault_timeout = 5\n'
                 '[limits]\nmax_body_size = 1000\n')
    c = load_config(str(f), {"dc": "west", "workers": {"endpoint": "tcp://127.0.0.1:1"},
                             "seeds": ["tcp://s:7947"]})
    assert (c.id, c.dc, c.routes, c.tls_cert) == ("east-1", "west", ["a.test=a"], ["c.pem"])
    assert c.workers.endpoint == "tcp://127.0.0.1:1"
    assert c.workers.default_timeout == 5.0  # kept from the file, an int read as a float
    assert c.limits.max_body_size == 1000 and c.seeds == ["tcp://s:7947"]


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"htpp": ":80"}, "'htpp'"),
    ({"http": 80}, "'http' must be a str"),
    ({"routes": "a=b"}, "'routes' must be a list"),
    ({"workers": {"endpont": "x"}}, "[workers]"),
    ({"workers": 3}, "'workers' must be a table"),
    # "every flag has a key of the same name": the flag's value said where it goes
    ({"workers": "tcp://*:7950"},
     "'workers' must be a table, not 'tcp://*:7950' (--workers is endpoint = 'tcp://*:7950' "
     "in a [workers] table)"),
    ({"limits": {"max_body_size": -1}}, "must not be negative"),
    ({"http": "nope"}, "HOST:PORT"),
    ({"https": ":443"}, "tls_cert"),
    ({"processes": 0}, "at least 1"),
    ({"limits": {"max_header_size": 200_000}}, "what a worker accepts"),
])
def test_errors_name_the_key(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(doc, "node.toml")
    assert fragment in str(err.value) and "node.toml" in str(err.value)


def test_cache_as_a_spec_or_a_table() -> None:
    assert from_mapping({"cache": "memory"}).cache == "memory"
    c = from_mapping({"cache": {"store": "memory", "max_object_size": 10}})
    assert (c.cache, c.cache_settings) == ("memory", {"max_object_size": 10})
    c = from_mapping({"cache": {"default_swr": 5}}, base=c)
    assert c.cache_settings == {"max_object_size": 10, "default_swr": 5}
    with pytest.raises(ConfigError, match="store"):
        from_mapping({"cache": {"store": 3}})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=10), st.lists(st.text(max_size=5), max_size=3))
keys = st.sampled_from(["id", "dc", "http", "admin", "processes", "seeds", "routes", "cache",
                        "workers", "limits", "bogus", "tls-key"])


@given(st.dictionaries(keys, st.one_of(scalars, st.dictionaries(
    st.sampled_from(["endpoint", "queue_limit", "max_body_size", "x"]), scalars, max_size=3)),
    max_size=5))
def test_any_mapping_gives_a_config_or_a_config_error(doc: dict[str, object]) -> None:
    try:
        c = from_mapping(doc)
    except ConfigError as exc:
        assert str(exc).startswith("config")
    else:
        assert isinstance(c, NodeConfig) and c.processes >= 1
        parse_hostport(c.http)


@given(st.sampled_from(["", "127.0.0.1", "[::1]", "example.org"]), st.integers(0, 65535))
def test_hostport_roundtrip(host: str, port: int) -> None:
    assert parse_hostport(f"{host}:{port}") == (host.strip("[]"), port)
