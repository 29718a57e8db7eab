"""A node's configuration: one dataclass per part, with documented defaults.

Read from a TOML file (`--config`), then overridden by command-line flags: flags
win. Top-level keys are the flags' names (`id`, `http`, `seeds`, ...; `-` and
`_` are the same); `[workers]` and `[limits]` are tables. An unknown key or a
value of the wrong type is a ConfigError that names the key and the file, so an
operator's typo never passes silently. `from_mapping` is pure; `load_config`
only adds reading the file.

Example file:

    id = "east-1"
    dc = "east"
    http = ":8080"
    routes = ["www.example.com=www", "*.example.com/api=api"]
    [workers]
    endpoint = "tcp://*:7950"
    default_timeout = 30.0
    [limits]
    max_body_size = 1073741824
    [cache]
    store = "files:/var/cache/scale0"
    max_object_size = 8388608
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError


@dataclass(slots=True)
class WorkersConfig:
    """The worker socket and the broker's timing (mirrors node.broker.BrokerConfig)."""

    endpoint: str = "tcp://*:7950"  # ROUTER bind address workers connect to
    heartbeat_interval: float = 1.0  # seconds between heartbeats both ways
    heartbeat_liveness: int = 3  # missed beats before a worker is dropped
    queue_limit: int = 1000  # requests that may wait for a free slot, per service
    default_timeout: float = 30.0  # seconds a request may take when it names no deadline
    chunk_size: int = 256 * 1024  # body bytes per frame when streaming


@dataclass(slots=True)
class LimitsConfig:
    """What the front door accepts from a client."""

    max_header_size: int = 32 * 1024  # request line + headers, bytes; over → 431
    max_body_size: int = 1 << 30  # request body bytes; over → 413 (streamed, never held)
    buffer_body_below: int = 64 * 1024  # smaller bodies are read whole before dispatch
    idle_timeout: float = 75.0  # seconds a keep-alive connection may idle
    body_timeout: float = 120.0  # seconds to receive a whole request body
    drain_grace: float = 20.0  # seconds SIGTERM waits for in-flight requests


@dataclass(slots=True)
class NodeConfig:
    """Everything one `scale0 node` needs. Defaults serve on DESIGN.md's ports."""

    id: str = ""  # node name; "" = host name
    dc: str = "default"  # datacenter label; routing prefers its own
    http: str = ":8080"  # client HTTP listener, HOST:PORT ("" host = all interfaces)
    https: str = ""  # optional TLS listener, HOST:PORT (needs tls_cert and tls_key)
    tls_cert: str = ""
    tls_key: str = ""
    admin: str = "127.0.0.1:8081"  # admin listener: health, readiness (never public by default)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    gossip: str = "tcp://*:7946"  # PUB bind for state beats
    peer: str = "tcp://*:7947"  # ROUTER bind for joins, forwards, cache fetches
    advertise: str = ""  # host peers should dial, if not the bound one (NAT)
    seeds: list[str] = field(default_factory=list)  # peer endpoints to join through
    discover: str = ""  # "mdns" to find peers on the LAN
    routes: list[str] = field(default_factory=list)  # HOST[/PREFIX]=SERVICE rules
    cache: str = "files:./scale0-cache"  # files:DIR | memory | mongo:URL | off
    # From a `[cache]` table: `store = SPEC` sets `cache`, the other keys are
    # node.cachestage.CacheConfig's (max_object_size, default_swr, purge_allowed, ...).
    cache_settings: dict[str, Any] = field(default_factory=dict)
    # `[replication]`: node.replication.ReplicationConfig's keys (scope, coalesce, ...).
    replication: dict[str, Any] = field(default_factory=dict)
    static: list[str] = field(default_factory=list)  # PREFIX=DIR mounts
    app: str = ""  # MODULE:ATTR of an in-node Tornado application
    curve: str = ""  # key directory: CurveZMQ on every ZeroMQ socket
    processes: int = 1  # node processes sharing the HTTP port (SO_REUSEPORT)
    http_server: str = "fast"  # wire layer: "fast" (httptools on uvloop) or "tornado"
    gossip_preset: str = "lan"  # failure-detection timing: lan | wan | local (tests)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


_TABLES: dict[str, type[Any]] = {"workers": WorkersConfig, "limits": LimitsConfig}
_ALIASES = {"seed": "seeds", "route": "routes"}  # the flag names, singular


def _check(key: str, value: Any, default: Any, where: str) -> Any:
    """`value` if it has the type of `default` (ints pass as floats), else ConfigError."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "list of strings" if isinstance(default, list) else type(default).__name__
        raise ConfigError(f"{where}: {key!r} must be a {kind}, not {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: {key!r} must not be negative, got {value!r}")
    return value


def _fill(obj: Any, data: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key {raw_key!r} (known: {known})")
        current = getattr(obj, key)
        if key == "cache" and isinstance(value, Mapping):
            settings = dict(value)
            obj.cache = _check("store", settings.pop("store", obj.cache), "", f"{where} [cache]")
            obj.cache_settings = {**obj.cache_settings, **settings}
        elif key == "cache_settings":
            raise ConfigError(f"{where}: put cache settings in a [cache] table")
        elif isinstance(current, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {key!r} must be a table, not {value!r}")
            setattr(obj, key, {**current, **value})
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {key!r} must be a table, not {value!r}")
            _fill(current, value, f"{where} [{key}]")
        else:
            setattr(obj, key, _check(key, value, current, where))


def from_mapping(data: Mapping[str, Any], where: str = "config",
                 base: NodeConfig | None = None) -> NodeConfig:
    """A NodeConfig from parsed TOML (or flags) laid over `base` (or the defaults)."""
    config = dataclasses.replace(base) if base is not None else NodeConfig()
    if base is not None:  # replace() is shallow: copy the tables we may change
        config.workers = dataclasses.replace(base.workers)
        config.limits = dataclasses.replace(base.limits)
        config.cache_settings = dict(base.cache_settings)
        config.replication = dict(base.replication)
    _fill(config, data, where)
    validate(config, where)
    return config


def validate(config: NodeConfig, where: str = "config") -> None:
    """Cross-field rules that types alone cannot say."""
    for key in ("http", "admin"):
        parse_hostport(getattr(config, key), f"{where}: {key!r}")
    if config.https:
        parse_hostport(config.https, f"{where}: 'https'")
        if not (config.tls_cert and config.tls_key):
            raise ConfigError(f"{where}: 'https' needs both 'tls_cert' and 'tls_key'")
    if config.processes < 1:
        raise ConfigError(f"{where}: 'processes' must be at least 1")
    if config.http_server not in ("fast", "tornado"):
        raise ConfigError(f"{where}: 'http_server' must be 'fast' or 'tornado', "
                          f"not {config.http_server!r}")
    if config.gossip_preset not in ("lan", "wan", "local"):
        raise ConfigError(f"{where}: 'gossip_preset' must be lan, wan or local, "
                          f"not {config.gossip_preset!r}")
    if config.discover not in ("", "mdns"):
        raise ConfigError(f"{where}: 'discover' must be 'mdns' or empty, not {config.discover!r}")
    if config.limits.max_header_size < 1024:
        raise ConfigError(f"{where}: [limits] 'max_header_size' must be at least 1024 bytes")


def parse_hostport(value: str, where: str = "address") -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `[V6]:PORT` → (host, port); "" host means all interfaces."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT such as 127.0.0.1:8080, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{where}: put an IPv6 address in brackets, as in [::1]:8080")
    return host, int(port_text)


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """The file at `path` (if any), then `overrides` (the flags that were given)."""
    config = NodeConfig()
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        config = from_mapping(data, path)
    if overrides:
        config = from_mapping(overrides, "command line", base=config)
    return config
