"""Per-service settings: the `[services.NAME]` tables of the config file.

One frozen `ServiceSettings` per service, and pure functions that turn the set
of them into what the parts of a node read: route rules for node.services,
cache settings for node.cachestage.CacheConfig, overflow policies for
mesh.routing, replication scopes for node.replication, and timeouts. The node
builds these objects once per (re)load and swaps them in whole, so a request
in flight keeps the settings it started with.

    [services.www]
    routes = ["www.example.com", "example.com/shop"]   # HOST[/PREFIX] → this service
    timeout = 30.0                 # seconds end to end (0: [workers] default_timeout)
    cache = true                   # false: never stored, never served from the cache
    share_set_cookie = false       # store answers that carry Set-Cookie
    stale_while_revalidate = 30    # default when the origin names none ([cache] default_swr)
    stale_if_error = 300           # default when the origin names none ([cache] default_sie)
    overflow = "all"               # all | dc | none: where saturated requests may go
    overflow_dcs = []              # with "all": only these other datacenters (empty: any)
    headroom = 0.1                 # share of slots kept for our own clients when peers ask
    max_share_away = 1.0           # cap on the share of requests sent to peers
    replicate = "dc"               # none | dc | all ("" : [replication] scope)

Dropped query parameters stay a `[cache]` setting: a purge by URL names no
service, so the cache key must not depend on one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mesh.routing import OverflowPolicy
from node.errors import ConfigError
from node.services import SERVICE_NAME_CHARS

OVERFLOW = ("all", "dc", "none")
SCOPES = ("", "none", "dc", "all")


class ConfigKeyError(ConfigError):
    """A ConfigError that knows which key of which table it is about (for file:line)."""

    def __init__(self, message: str, table: tuple[str, ...] = (), key: str = "") -> None:
        super().__init__(message)
        self.table = table
        self.key = key


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """One `[services.NAME]` table; the defaults change nothing."""

    routes: tuple[str, ...] = ()
    timeout: float = 0.0
    cache: bool = True
    share_set_cookie: bool = False
    stale_while_revalidate: float = -1.0  # -1: not set, the [cache] default applies
    stale_if_error: float = -1.0
    overflow: str = "all"
    overflow_dcs: tuple[str, ...] = ()
    headroom: float = 0.1
    max_share_away: float = 1.0
    replicate: str = ""


_DEFAULTS = ServiceSettings()
_KEYS = {f.name for f in fields(ServiceSettings)}


def _value(name: str, key: str, value: Any, where: str) -> Any:
    default = getattr(_DEFAULTS, key)
    table = ("services", name)
    label = f"{where} [services.{name}]: {key!r}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {bool: "true or false", float: "number", tuple: "list of strings"}.get(
            type(default), "string")
        raise ConfigKeyError(f"{label} must be a {kind}, not {value!r}", table, key)
    if isinstance(value, float) and value < 0:
        raise ConfigKeyError(f"{label} must not be negative, got {value!r}", table, key)
    return value


def parse_service(name: str, data: Mapping[str, Any], where: str = "config") -> ServiceSettings:
    """A ServiceSettings from one table; ConfigKeyError naming the key when wrong."""
    if not name or not set(name) <= SERVICE_NAME_CHARS:
        raise ConfigKeyError(f"{where}: service name {name!r} may use letters, digits, "
                             "'.', '_' and '-'", ("services",), name)
    if not isinstance(data, Mapping):
        raise ConfigKeyError(f"{where}: [services.{name}] must be a table, not {data!r}",
                             ("services",), name)
    values: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("-", "_")
        if key not in _KEYS:
            raise ConfigKeyError(f"{where} [services.{name}]: unknown key {raw!r} "
                                 f"(known: {', '.join(sorted(_KEYS))})", ("services", name), raw)
        values[key] = _value(name, key, value, where)
    s = ServiceSettings(**values)
    table = ("services", name)
    if s.overflow not in OVERFLOW:
        raise ConfigKeyError(f"{where} [services.{name}]: 'overflow' must be all, dc or none, "
                             f"not {s.overflow!r}", table, "overflow")
    if s.overflow_dcs and s.overflow != "all":
        raise ConfigKeyError(f"{where} [services.{name}]: 'overflow_dcs' only makes sense with "
                             f"overflow = \"all\" (it is {s.overflow!r})", table, "overflow_dcs")
    if s.replicate not in SCOPES:
        raise ConfigKeyError(f"{where} [services.{name}]: 'replicate' must be none, dc or all, "
                             f"not {s.replicate!r}", table, "replicate")
    for key in ("headroom", "max_share_away"):
        if getattr(s, key) > 1.0:
            raise ConfigKeyError(f"{where} [services.{name}]: {key!r} is a share between 0 and "
                                 f"1, not {getattr(s, key)!r}", table, key)
    for rule in s.routes:
        if "=" in rule:
            raise ConfigKeyError(f"{where} [services.{name}]: route {rule!r} names no service "
                                 f"here: write HOST[/PREFIX] (the table names it)", table,
                                 "routes")
    return s


def parse_services(data: Any, where: str = "config") -> dict[str, ServiceSettings]:
    if not isinstance(data, Mapping):
        raise ConfigKeyError(f"{where}: 'services' must hold [services.NAME] tables",
                             (), "services")
    return {str(name): parse_service(str(name), table, where) for name, table in data.items()}


def route_specs(services: Mapping[str, ServiceSettings]) -> list[str]:
    """`HOST[/PREFIX]=SERVICE` rules of every table, in file order."""
    return [f"{rule}={name}" for name, s in services.items() for rule in s.routes]


def cache_settings(base: Mapping[str, Any],
                   services: Mapping[str, ServiceSettings]) -> dict[str, Any]:
    """`[cache]` settings with the services' bypass, Set-Cookie and stale defaults folded in."""
    out = dict(base)
    bypass = set(out.get("bypass_services", ()))
    share = set(out.get("share_set_cookie", ()))
    stale: dict[str, tuple[float, float]] = dict(out.get("service_defaults", {}))
    swr, sie = float(out.get("default_swr", 0.0)), float(out.get("default_sie", 0.0))
    for name, s in services.items():
        if not s.cache:
            bypass.add(name)
        if s.share_set_cookie:
            share.add(name)
        if s.stale_while_revalidate >= 0 or s.stale_if_error >= 0:
            stale[name] = (s.stale_while_revalidate if s.stale_while_revalidate >= 0 else swr,
                           s.stale_if_error if s.stale_if_error >= 0 else sie)
    if bypass:
        out["bypass_services"] = sorted(bypass)
    if share:
        out["share_set_cookie"] = sorted(share)
    if stale:
        out["service_defaults"] = stale
    return out


def overflow_policies(services: Mapping[str, ServiceSettings]) -> dict[str, OverflowPolicy]:
    out = {}
    for name, s in services.items():
        allowed: frozenset[str] | None = None
        if s.overflow == "dc":
            allowed = frozenset()  # routing always allows our own datacenter
        elif s.overflow_dcs:
            allowed = frozenset(s.overflow_dcs)
        out[name] = OverflowPolicy(enabled=s.overflow != "none", allowed_dcs=allowed,
                                   headroom=s.headroom, max_share_away=s.max_share_away)
    return out


def replication_scopes(services: Mapping[str, ServiceSettings]) -> dict[str, str]:
    return {name: s.replicate for name, s in services.items() if s.replicate}


def timeouts(services: Mapping[str, ServiceSettings]) -> dict[str, float]:
    return {name: s.timeout for name, s in services.items() if s.timeout > 0}
