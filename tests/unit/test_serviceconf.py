"""[services.NAME] tables: parsing, errors naming the key, and what they become."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.routing import OverflowPolicy
from node.config import from_mapping
from node.errors import ConfigError
from node.reload import build, needs_restart
from node.serviceconf import (
    ConfigKeyError,
    ServiceSettings,
    cache_settings,
    overflow_policies,
    parse_service,
    parse_services,
    replication_scopes,
    route_specs,
    timeouts,
)

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
shares = st.floats(0.0, 1.0, allow_nan=False)
seconds = st.floats(0.0, 1e6, allow_nan=False)
settings_tables = st.fixed_dictionaries({}, optional={
    "routes": st.lists(st.sampled_from(["a.test", "*.b.test", "c.test/api", "*"]), max_size=3),
    "timeout": seconds,
    "cache": st.booleans(),
    "share_set_cookie": st.booleans(),
    "stale_while_revalidate": seconds,
    "stale_if_error": seconds,
    "overflow": st.sampled_from(["all", "dc", "none"]),
    "headroom": shares,
    "max_share_away": shares,
    "replicate": st.sampled_from(["", "none", "dc", "all"]),
})


@given(st.dictionaries(names, settings_tables, max_size=4))
def test_any_valid_tables_build_every_part(tables: dict[str, dict[str, Any]]) -> None:
    taken: set[str] = set()
    for table in tables.values():  # a rule names one service: in two it is refused
        if "routes" in table:
            table["routes"] = [rule for rule in table["routes"] if rule not in taken]
            taken.update(table["routes"])
    config = from_mapping({"services": tables})
    assert set(config.services) == set(tables)
    built = build(config)
    for name, table in tables.items():
        s = config.services[name]
        policy = built.policies[name]
        assert policy.enabled == (s.overflow != "none")
        assert (policy.allowed_dcs == frozenset()) == (s.overflow == "dc")
        assert (name in built.cache.bypass_services) == (table.get("cache") is False)
        assert (name in built.cache.share_set_cookie) == bool(table.get("share_set_cookie"))
        if "stale_while_revalidate" in table or "stale_if_error" in table:
            swr, sie = built.cache.service_defaults[name]
            assert swr == table.get("stale_while_revalidate", 0.0)
            assert sie == table.get("stale_if_error", 0.0)
        if table.get("replicate"):
            assert built.replication.service_scopes[name] == table["replicate"]
        if table.get("timeout"):
            assert built.timeouts[name] == table["timeout"]
        for rule in table.get("routes", []):
            assert f"{rule}={name}" in config.all_routes()


@given(names, st.sampled_from(sorted(ServiceSettings.__dataclass_fields__)),
       st.one_of(st.none(), st.integers(-5, -1), st.text(max_size=3), st.lists(st.integers(),
                 min_size=1, max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                          max_size=1)))
def test_bad_values_name_their_key(name: str, key: str, value: Any) -> None:
    """Whatever garbage a key holds, the error (if any) names that key and its table."""
    try:
        parse_service(name, {key: value})
    except ConfigKeyError as exc:
        assert exc.table == ("services", name) and exc.key == key
        assert repr(key) in str(exc) or key in str(exc)
        assert f"[services.{name}]" in str(exc)


@pytest.mark.parametrize(("table", "key", "fragment"), [
    ({"timout": 3}, "timout", "unknown key 'timout'"),
    ({"timeout": -1}, "timeout", "must not be negative"),
    ({"timeout": True}, "timeout", "must be a number"),
    ({"cache": "yes"}, "cache", "true or false"),
    ({"overflow": "west"}, "overflow", "all, dc or none"),
    ({"overflow": "dc", "overflow_dcs": ["west"]}, "overflow_dcs", "only makes sense"),
    ({"replicate": "everywhere"}, "replicate", "none, dc or all"),
    ({"headroom": 2}, "headroom", "between 0 and 1"),
    ({"routes": ["a.test=www"]}, "routes", "names no service here"),
    ({"routes": "a.test"}, "routes", "list of strings"),
])
def test_table_of_mistakes(table: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigKeyError) as err:
        parse_service("www", table, "node.toml")
    assert err.value.key == key and fragment in str(err.value)
    assert str(err.value).startswith("node.toml [services.www]")


def test_bad_service_name_and_shape() -> None:
    with pytest.raises(ConfigKeyError, match="service name"):
        parse_services({"w w": {}})
    with pytest.raises(ConfigKeyError, match="must be a table"):
        parse_services({"www": 3})
    with pytest.raises(ConfigKeyError, match=r"\[services.NAME\]"):
        parse_services(["www"])


def test_bad_route_inside_a_table_is_refused_by_build() -> None:
    config = from_mapping({"services": {"www": {"routes": ["exa mple.com"]}}})
    with pytest.raises(ConfigKeyError) as err:
        build(config)
    assert err.value.table == ("services", "www") and err.value.key == "routes"


def test_derivations() -> None:
    services = {
        "www": parse_service("www", {"routes": ["www.x.test"], "overflow_dcs": ["west"],
                                     "stale_if_error": 60, "timeout": 5}),
        "api": parse_service("api", {"overflow": "none", "cache": False, "replicate": "all"}),
    }
    assert route_specs(services) == ["www.x.test=www"]
    assert overflow_policies(services) == {
        "www": OverflowPolicy(allowed_dcs=frozenset({"west"})),
        "api": OverflowPolicy(enabled=False),
    }
    merged = cache_settings({"default_swr": 7.0, "bypass_services": ["old"]}, services)
    assert merged["bypass_services"] == ["api", "old"]
    assert merged["service_defaults"] == {"www": (7.0, 60.0)}
    assert replication_scopes(services) == {"api": "all"}
    assert timeouts(services) == {"www": 5.0}


def test_needs_restart_lists_only_what_a_reload_cannot_apply() -> None:
    old = from_mapping({"routes": ["a.test=a"], "cache": {"store": "memory"}})
    new = from_mapping({"routes": ["a.test=b"], "http": ":9999", "dc": "west",
                        "workers": {"endpoint": "tcp://*:1"},
                        "cache": {"store": "memory", "lock_timeout": 1.0, "default_swr": 3.0},
                        "services": {"b": {"timeout": 1}}, "log_format": "json"})
    assert sorted(needs_restart(old, new)) == ["cache.lock_timeout", "dc", "http",
                                               "workers.endpoint"]
    assert needs_restart(old, old) == []


def test_flags_keep_the_files_services() -> None:
    base = from_mapping({"services": {"www": {"timeout": 3}}})
    over = from_mapping({"dc": "east"}, "command line", base=base)
    assert over.services == base.services and over.dc == "east"
    with pytest.raises(ConfigError, match="log_format"):
        from_mapping({"log_format": "xml"})


def test_every_replication_key_a_reload_cannot_apply_is_named() -> None:
    """Each [replication] setting is read once at start (node.replication): a SIGHUP that
    changes one must say "needs a restart", never drop it silently."""
    from dataclasses import fields

    from node.reload import FIXED_REPLICATION
    from node.replication import ReplicationConfig

    reloadable = {"scope", "service_scopes"}  # scopes are swapped in by a reload
    assert {f.name for f in fields(ReplicationConfig)} - reloadable <= set(FIXED_REPLICATION)
