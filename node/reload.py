"""What a config (re)load builds, and what a reload cannot change.

`build(config)` turns a NodeConfig into the immutable objects the request path
reads — the service map, the static mounts, the cache settings, the
replication scopes, the overflow policies and the per-service timeouts —
validating everything on the way (ConfigKeyError names the key, so
`--check-config` can point at its line). The node builds them at start and on
SIGHUP, then swaps them in whole: a request in flight finishes with the
objects it started with. Nothing is bound or opened here.

`needs_restart(old, new)` is pure: the keys whose change a reload cannot
apply (sockets, identity, the cache store, the wire layer, ...). The node logs
"needs a restart: KEY" for each and keeps running with the old value.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from mesh.routing import OverflowPolicy
from node.cacheconfig import CacheConfig
from node.config import NodeConfig
from node.errors import ConfigError
from node.replication import ReplicationConfig
from node.serviceconf import (
    ConfigKeyError,
    cache_settings,
    overflow_policies,
    replication_scopes,
    timeouts,
)
from node.services import Route, ServiceMap
from node.stage import Stage

# Keys a SIGHUP applies; every other top-level key needs a restart.
RELOADABLE = frozenset({"routes", "static", "services", "cache_settings", "replication",
                        "log_level", "log_format", "access_log", "access_log_file",
                        "access_log_redact", "return_memory_after"})
# Inside the reloadable tables, settings that were fixed when the part was built.
FIXED_CACHE = ("lock_timeout", "hit_for_miss")
FIXED_REPLICATION = ("inline_limit", "coalesce", "fill_timeout", "fetch_timeout",
                     "relay_purges", "max_announced", "max_applying", "tombstone_count",
                     "tombstone_age", "sync_grace")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the request path reads that a reload may replace."""

    routes: ServiceMap
    static: Stage | None
    cache: CacheConfig
    replication: ReplicationConfig
    policies: dict[str, OverflowPolicy]
    timeouts: dict[str, float]


def build(config: NodeConfig) -> Settings:
    """The reloadable objects of `config`; ConfigKeyError (naming the key) if one is wrong."""
    try:
        ServiceMap.from_specs(config.routes)
    except ConfigError as exc:
        raise ConfigKeyError(str(exc), (), "routes") from None
    for name, service in config.services.items():
        try:
            ServiceMap.from_specs(f"{rule}={name}" for rule in service.routes)
        except ConfigError as exc:
            raise ConfigKeyError(f"[services.{name}] {exc}", ("services", name), "routes") \
                from None
    routes = ServiceMap.from_specs(config.all_routes())
    _no_rule_twice(config)
    static = static_stage(config.static)
    try:
        cache = CacheConfig(**_tuples(cache_settings(config.cache_settings, config.services)))
    except TypeError as exc:
        raise ConfigKeyError(f"[cache]: {_unexpected(exc)}", ("cache",), _bad_kw(exc)) from None
    except ConfigError as exc:
        raise ConfigKeyError(str(exc), ("cache",), _named(str(exc), "cache.")) from None
    try:
        replication = ReplicationConfig(**{
            **config.replication,
            "service_scopes": {**config.replication.get("service_scopes", {}),
                               **replication_scopes(config.services)}})
    except TypeError as exc:
        raise ConfigKeyError(f"[replication]: {_unexpected(exc)}", ("replication",),
                             _bad_kw(exc)) from None
    except ConfigError as exc:
        key = _named(str(exc), "replication.") or _named(str(exc), "scope of '").rstrip("'")
        if key in config.services:  # a [services.NAME] replicate value
            raise ConfigKeyError(str(exc), ("services", key), "replicate") from None
        raise ConfigKeyError(str(exc), ("replication",), key) from None
    return Settings(routes, static, cache, replication, overflow_policies(config.services),
                    timeouts(config.services))


def _no_rule_twice(config: NodeConfig) -> None:
    """ConfigKeyError for one HOST[/PREFIX] mapped to two services: the first in the file
    would take every request and the second none (a typo, or a service renamed in one
    place only). The same rule for the same service twice is harmless."""
    seen: dict[str, str] = {}
    given: list[tuple[tuple[str, ...], Route]] = [
        ((), route) for route in ServiceMap.from_specs(config.routes).routes]
    for name, service in config.services.items():
        given += [(("services", name), route)
                  for route in ServiceMap.from_specs(f"{r}={name}" for r in service.routes).routes]
    for table, route in given:
        rule = route.host + route.prefix
        first = seen.setdefault(rule, route.service)
        if first != route.service:
            where = f"[services.{table[1]}] " if table else ""
            raise ConfigKeyError(f"{where}route {rule!r} is mapped to both {first!r} and "
                                 f"{route.service!r}; only the first would ever take a request",
                                 table, "routes")


def static_stage(specs: list[str]) -> Stage | None:
    """The static-files stage for `PREFIX=DIR` mounts (None without any)."""
    if not specs:
        return None
    from node.static import StaticFiles

    mounts = []
    for spec in specs:
        prefix, sep, directory = spec.partition("=")
        if not sep or not prefix.startswith("/") or not directory:
            raise ConfigKeyError(f"static {spec!r}: expected PREFIX=DIR, e.g. /assets=./public",
                                 (), "static")
        mounts.append((prefix, os.path.expanduser(directory)))
    try:
        return StaticFiles(mounts)
    except ValueError as exc:
        raise ConfigKeyError(f"static: {exc}", (), "static") from None


def needs_restart(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The keys that differ between `old` and `new` and that a reload cannot apply."""
    out = []
    for f in dataclasses.fields(NodeConfig):
        if f.name in RELOADABLE:
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(before):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(before)
                    if getattr(before, g.name) != getattr(after, g.name)]
        elif before != after:
            out.append(f.name)
    for table, fixed in (("cache_settings", FIXED_CACHE), ("replication", FIXED_REPLICATION)):
        before_t, after_t = getattr(old, table), getattr(new, table)
        name = "cache" if table == "cache_settings" else table
        out += [f"{name}.{k}" for k in fixed if before_t.get(k) != after_t.get(k)]
    return out


def _tuples(settings: dict[str, Any]) -> dict[str, Any]:
    """TOML lists → tuples where CacheConfig keeps tuples."""
    out = dict(settings)
    if isinstance(out.get("purge_allowed"), list):
        out["purge_allowed"] = tuple(out["purge_allowed"])
    return out


def _unexpected(exc: TypeError) -> str:
    return str(exc).replace("__init__() got an ", "").replace("CacheConfig.", "") \
        .replace("ReplicationConfig.", "")


def _bad_kw(exc: TypeError) -> str:
    text = str(exc)
    start = text.find("'")
    end = text.find("'", start + 1)
    return text[start + 1:end] if 0 <= start < end else ""


def _named(message: str, prefix: str) -> str:
    """The key a message like "cache.max_object_size must ..." is about."""
    start = message.find(prefix)
    if start < 0:
        return ""
    rest = message[start + len(prefix):]
    return rest.split()[0].rstrip(":") if rest else ""
