"""The operator's cache settings: the `[cache]` table (and per-service defaults).

One frozen dataclass, checked when it is built, so a mistake is a ConfigError
that names the key before the node binds anything; node/cachestage.py reads it
and SIGHUP swaps it whole (`CacheStage.reconfigure`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from node.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The operator's cache settings (TOML `[cache]`); lists become frozensets."""

    enabled: bool = True
    max_object_size: int = 8 * 1024 * 1024
    default_swr: float = 0.0  # seconds of stale-while-revalidate when the origin names none
    default_sie: float = 0.0  # seconds of stale-if-error when the origin names none
    share_set_cookie: frozenset[str] = frozenset()  # services whose Set-Cookie answers are shared
    bypass_services: frozenset[str] = frozenset()
    dropped_query_params: frozenset[str] = frozenset()
    lock_timeout: float = 5.0
    hit_for_miss: float = 10.0
    heuristic_cap: float = 86400.0
    purge_allowed: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Per-service (swr, sie) defaults, from `[services.NAME]` (node.serviceconf).
    service_defaults: dict[str, tuple[float, float]] = field(default_factory=dict)
    networks: tuple[Network, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("share_set_cookie", "bypass_services", "dropped_query_params"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"cache.{name} must be a list of names, not the string {value!r}")
            object.__setattr__(self, name, frozenset(value))
        if self.max_object_size <= 0:
            raise ConfigError(f"cache.max_object_size must be positive, not {self.max_object_size}")
        for name in ("default_swr", "default_sie", "lock_timeout", "hit_for_miss", "heuristic_cap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cache.{name} must not be negative, not {getattr(self, name)}")
        nets = []
        for text in self.purge_allowed:
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ConfigError(f"cache.purge_allowed: {text!r}: {exc}") from None
        object.__setattr__(self, "networks", tuple(nets))
