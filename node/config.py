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
    [services.www]                 # per-service settings: node.serviceconf
    routes = ["www.example.com"]
    timeout = 10.0

Errors are `ConfigKeyError`s carrying the table and key they are about, so
`scale0 node --check-config` can point at the file's line (node.checkconfig).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.cacheconfig import CacheConfig
from node.cpuaffinity import allowed_cpus, cpus_for
from node.errors import ConfigError
from node.protocol import DEFAULT_LIMITS
from node.querysecrets import DEFAULT_NAMES, secret_names
from node.serviceconf import ConfigKeyError, ServiceSettings, parse_services, route_specs

# The longest request head a worker takes (node.protocol): [limits] max_header_size is capped
# there, so the front never accepts a request no worker could be handed.
WORKER_HEAD_LIMIT = DEFAULT_LIMITS.max_header_bytes


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
    header_timeout: float = 30.0  # seconds from a request's first byte to its last header
    max_connections_per_client: int = 256  # per client address (fast wire); 0 = no limit


@dataclass(slots=True)
class NodeConfig:
    """Everything one `scale0 node` needs. Defaults serve on DESIGN.md's ports."""

    id: str = ""  # node name; "" = host name
    dc: str = "default"  # datacenter label; routing prefers its own
    http: str = ":8080"  # client HTTP listener, HOST:PORT ("" host = all interfaces)
    https: str = ""  # optional TLS listener, HOST:PORT (needs tls_cert and tls_key)
    tls_cert: list[str] = field(default_factory=list)  # PEM chains, one per site (SNI picks)
    tls_key: list[str] = field(default_factory=list)  # their keys, in the same order
    # `[https_hosts."www.example.com"]`: redirect = true, hsts_max_age = 31536000, ...
    https_hosts: dict[str, Any] = field(default_factory=dict)
    admin: str = "127.0.0.1:8081"  # admin listener: health, readiness (never public by default)
    admin_token_file: str = ""  # bearer token required when admin is not on loopback
    trusted_proxies: list[str] = field(default_factory=list)  # CIDRs whose X-Forwarded-* count
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
    cpu_affinity: str = "off"  # off | auto | CPU list such as 0,2-3 (node.cpuaffinity)
    busy_poll: bool = False  # an idle-class spinner per CPU while serving (node.busypoll)
    http_server: str = "fast"  # wire layer: "fast" (httptools on uvloop) or "tornado"
    gossip_preset: str = "lan"  # failure-detection timing: lan | wan | local (tests)
    # Seconds quiet after a spike before memory it left goes back to the OS (node.heaptrim);
    # 0 = never.
    return_memory_after: float = 10.0
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # `[services.NAME]` tables: routes, cache rules, overflow, replication, timeout.
    services: dict[str, ServiceSettings] = field(default_factory=dict)
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    log_format: str = "text"  # access (and other) log lines: text | json
    access_log: bool = True  # one line per request through the `scale0.access` logger
    access_log_file: str = ""  # append access lines to this file ("" = with the other logs)
    # Query parameters whose values access lines show as *** (node.querysecrets): names,
    # "default" for DEFAULT_NAMES among them; [] or ["none"] hides nothing.
    access_log_redact: list[str] = field(default_factory=lambda: list(DEFAULT_NAMES))

    def all_routes(self) -> list[str]:
        """`routes`, then the `[services.NAME]` routes: what the service map is built from."""
        return [*self.routes, *route_specs(self.services)]


_TABLES: dict[str, type[Any]] = {"workers": WorkersConfig, "limits": LimitsConfig}
_ALIASES = {"seed": "seeds", "route": "routes",  # the flag names, singular
            "trusted_proxy": "trusted_proxies"}


def _check(key: str, value: Any, default: Any, where: str,
           table: tuple[str, ...] = (), *, shown: str = "") -> Any:
    """`value` if it has the type of `default` (ints pass as floats), else ConfigError.

    `shown` is the key as the operator wrote it (`seed` for `seeds`), for the message."""
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
        raise ConfigKeyError(f"{where}: {(shown or key)!r} must be a {kind}, not {value!r}",
                             table, key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigKeyError(f"{where}: {(shown or key)!r} must not be negative, got {value!r}",
                             table, key)
    return value


def _fill(obj: Any, data: Mapping[str, Any], where: str, table: tuple[str, ...] = ()) -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigKeyError(f"{where}: unknown key {raw_key!r} (known: {known})",
                                 table, str(raw_key))
        current = getattr(obj, key)
        if key == "cache" and isinstance(value, Mapping):
            settings = dict(value)
            _cache_keys(settings, f"{where} [cache]")
            obj.cache = _check("store", settings.pop("store", obj.cache), "", f"{where} [cache]",
                               ("cache",))
            obj.cache_settings = {**obj.cache_settings, **settings}
        elif key == "cache_settings":
            raise ConfigKeyError(f"{where}: put cache settings in a [cache] table", table, raw_key)
        elif key == "services" and not table:
            obj.services = {**obj.services, **parse_services(value, where)}
        elif isinstance(current, dict):
            if not isinstance(value, Mapping):
                raise ConfigKeyError(f"{where}: {key!r} must be a table, not {value!r}",
                                     table, str(raw_key))
            setattr(obj, key, {**current, **value})
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                hint = (f" (--workers is endpoint = {value!r} in a [workers] table)"
                        if key == "workers" and not table and isinstance(value, str) else "")
                raise ConfigKeyError(f"{where}: {key!r} must be a table, not {value!r}{hint}",
                                     table, str(raw_key))
            _fill(current, value, f"{where} [{key}]", (*table, str(raw_key)))
        else:
            shown = str(raw_key) if str(raw_key) != key else ""
            setattr(obj, key, _check(key, value, current, where, table, shown=shown))


def _cache_keys(settings: Mapping[str, Any], where: str) -> None:
    """ConfigKeyError listing the known keys if the `[cache]` table has another one."""
    known = {f.name for f in dataclasses.fields(CacheConfig) if f.init} | {"store"}
    for raw_key in settings:
        if str(raw_key) not in known:
            raise ConfigKeyError(f"{where}: unknown key {raw_key!r} (known: "
                                 f"{', '.join(sorted(known))})", ("cache",), str(raw_key))


def from_mapping(data: Mapping[str, Any], where: str = "config",
                 base: NodeConfig | None = None) -> NodeConfig:
    """A NodeConfig from parsed TOML (or flags) laid over `base` (or the defaults)."""
    config = dataclasses.replace(base) if base is not None else NodeConfig()
    if base is not None:  # replace() is shallow: copy the tables we may change
        config.workers = dataclasses.replace(base.workers)
        config.limits = dataclasses.replace(base.limits)
        config.cache_settings = dict(base.cache_settings)
        config.replication = dict(base.replication)
        config.services = dict(base.services)
    _fill(config, data, where)
    validate(config, where)
    return config


def validate(config: NodeConfig, where: str = "config") -> None:
    """Cross-field rules that types alone cannot say."""
    def bad(key: str, message: str) -> ConfigKeyError:
        return ConfigKeyError(f"{where}: {message}", (), key)

    for key in ("http", "admin", "https"):
        if key == "https" and not config.https:
            continue
        try:
            parse_hostport(getattr(config, key), f"{where}: {key!r}")
        except ConfigError as exc:
            raise ConfigKeyError(str(exc), (), key) from None
    for key, shown, value, bind in _endpoints(config, where):
        try:
            check_endpoint(value, shown, bind=bind, ipc=key == "workers", example=_EXAMPLES[key])
        except ConfigError as exc:
            raise ConfigKeyError(str(exc), ("workers",) if key == "workers" else (),
                                 "endpoint" if key == "workers" else key) from None
    if len(config.tls_cert) != len(config.tls_key):
        raise bad("tls_cert", "give one 'tls_key' for every 'tls_cert', in the same order")
    if config.https and not (config.tls_cert and config.tls_key):
        raise bad("https", "'https' needs both 'tls_cert' and 'tls_key'")
    if config.processes < 1:
        raise bad("processes", "'processes' must be at least 1")
    if config.http_server not in ("fast", "tornado"):
        raise bad("http_server", f"'http_server' must be 'fast' or 'tornado', "
                                 f"not {config.http_server!r}")
    if config.gossip_preset not in ("lan", "wan", "local"):
        raise bad("gossip_preset", f"'gossip_preset' must be lan, wan or local, "
                                   f"not {config.gossip_preset!r}")
    if config.discover not in ("", "mdns"):
        raise bad("discover", f"'discover' must be 'mdns' or empty, not {config.discover!r}")
    if not 1024 <= config.limits.max_header_size <= WORKER_HEAD_LIMIT:
        raise ConfigKeyError(f"{where}: [limits] 'max_header_size' must be at least 1024 "
                             f"bytes and at most {WORKER_HEAD_LIMIT} (what a worker accepts)",
                             ("limits",), "max_header_size")
    if not config.return_memory_after < float("inf"):  # not negative: _check; nan, inf here
        shown = "--return-memory-after" if where == "command line" else "'return_memory_after'"
        raise bad("return_memory_after", f"{shown} must be a number of seconds (0: never), "
                                         f"not {config.return_memory_after!r}")
    try:
        cpus_for(config.cpu_affinity, 0, allowed_cpus())
    except ValueError as exc:
        shown = "--cpu-affinity" if where == "command line" else "'cpu_affinity'"
        raise bad("cpu_affinity", f"{shown} must be off, auto or a list of CPUs such as 0,2-3: "
                                  f"{exc}") from None
    if config.log_format not in ("text", "json"):
        raise ConfigKeyError(f"{where}: 'log_format' must be text or json, "
                             f"not {config.log_format!r}", (), "log_format")
    try:
        secret_names(config.access_log_redact)
    except ValueError as exc:
        shown = "--access-log-redact" if where == "command line" else "'access_log_redact'"
        raise ConfigKeyError(f"{where}: {shown}: {exc}", (), "access_log_redact") from None
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigKeyError(f"{where}: 'log_level' must be DEBUG, INFO, WARNING or ERROR, "
                             f"not {config.log_level!r}", (), "log_level")


def _endpoints(config: NodeConfig, where: str) -> list[tuple[str, str, str, bool]]:
    """(key, how the operator wrote it, value, bound?) of each ZeroMQ endpoint of `config`."""
    flags = where == "command line"
    out = [("workers", "--workers" if flags else f"{where}: [workers] endpoint =",
            config.workers.endpoint, True)]
    for key in ("gossip", "peer"):
        out.append((key, f"--{key}" if flags else f"{where}: {key} =", getattr(config, key),
                    True))
    out += [("seeds", "--seed" if flags else f"{where}: seeds entry", seed, False)
            for seed in config.seeds]
    return out


_EXAMPLES = {"workers": "tcp://*:7950", "gossip": "tcp://*:7946", "peer": "tcp://*:7947",
             "seeds": "tcp://10.0.0.5:7947"}
_IPV4ISH = re.compile(r"[0-9.]+")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63}){0,126}\.?")


def check_endpoint(value: str, where: str, *, bind: bool, ipc: bool = False,
                   example: str = "") -> str:
    """`value` if it is a ZeroMQ endpoint the node can use, else ConfigError naming `where`.

    `tcp://HOST:PORT`: HOST an IPv4 address, an `[IPv6]` one or a name (a host, or an
    interface to bind); PORT 1-65535. A socket that binds (`bind`) also takes `*` for
    HOST (every interface) and `*` or 0 for PORT (any free one). `ipc://PATH` (a Unix
    socket, same machine only) where `ipc` (the worker socket); never for mesh peers."""
    forms = "tcp://HOST:PORT or ipc://PATH" if ipc else "tcp://HOST:PORT"
    example = example or ("tcp://*:7950" if bind else "tcp://127.0.0.1:7950")
    scheme, sep, rest = value.partition("://")
    if ipc and sep and scheme == "ipc":
        if rest and "\0" not in rest and not rest.isspace():
            return value
        raise ConfigError(f"{where} {value}: ipc:// needs a socket path, as in ipc:///run/w.sock")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme != "tcp" or not colon:
        # The guess repeats the value: only one that is a plain word (never a second line)
        guess = not sep and ":" in value and value.isprintable() and " " not in value
        hint = f"did you mean tcp://{value}?" if guess else f"e.g. {example}"
        raise ConfigError(f"{where} {value}: expected {forms}; {hint}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{where} {value}: {host} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"{where} {value}: put an IPv6 address in brackets, as in "
                          f"tcp://[::1]:7950")
    elif host == "*":
        if not bind:
            raise ConfigError(f"{where} {value}: * (every interface) is for binding; "
                              f"name the host to connect to, e.g. {example}")
    elif _IPV4ISH.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{where} {value}: {host} is not an IPv4 address") from None
    elif not _NAME.fullmatch(host):
        raise ConfigError(f"{where} {value}: expected a host name, an IPv4 address, "
                          f"[IPv6]{' or *' if bind else ''} before :PORT")
    if bind and port in ("*", "0"):
        return value
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"{where} {value}: the port must be 1-65535"
                          f"{' (or * for any free one)' if bind else ''}, not {port!r}")
    return value


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
