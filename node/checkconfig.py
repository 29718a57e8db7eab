"""`scale0 node --check-config FILE`: validate a config without binding anything.

Everything the node would build at start is built (routes, static mounts,
cache, replication and per-service settings), and what it would open is
looked at without opening: the cache store's spec, the in-node app's module
(found, not imported), the TLS files (read). The answer is "FILE: ok" and exit
0, or "FILE:LINE: what is wrong" and exit 2 — like `nginx -t`.

tomllib gives line numbers only for syntax errors, so for a semantic error
`locate` scans the file's text for the table header and the key (pure, and
tested with generated files). Flags given with it are laid over the file as
`scale0 node` would lay them (`--config a.toml --check-config --id zz`): what
is checked is the config the node would run with. A mistake in a flag has no
line in the file, and is reported without one.

Then what the node checks before it binds a socket is checked by the node's own
code: `node.security.Security` (TLS files, trusted proxies, the admin listener's
token — mandatory off loopback), the CurveZMQ key directory (`CurveKeys.load`;
the ZAP authenticator is not started, so nothing is bound) and the cache store's
spec (`open_store` builds the store without opening it: no directory is made).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.config import NodeConfig, from_mapping
from node.errors import ConfigError
from node.processes import port_problem
from node.serviceconf import ConfigKeyError

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[=.]""")
_ALIASES = {"routes": ("route",), "seeds": ("seed",), "cache": ("store",)}


def _split_path(text: str) -> tuple[str, ...]:
    """`services."a.b"` → ("services", "a.b")."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


def locate(text: str, table: tuple[str, ...], key: str) -> int | None:
    """The 1-based line of `key` in `[table]` (or of the table's header, or None)."""
    names = {key, key.replace("_", "-"), key.replace("-", "_")}
    names.update(_ALIASES.get(key.replace("-", "_"), ()))
    current: tuple[str, ...] = ()
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            current = _split_path(m.group(1))
            if current == table and header_line is None:
                header_line = number
            elif key and current == (*table, key) and header_line is None:
                header_line = number  # the key is itself a table: [services.www]
            continue
        k = _KEY.match(line)
        if k and current == table and key and _unquote(k.group(1)) in names:
            return number
    return header_line


def problem_line(path: str, text: str, exc: ConfigError) -> int | None:
    if isinstance(exc, ConfigKeyError):
        return locate(text, exc.table, exc.key) or (1 if text else None)
    m = re.search(r"at line (\d+)", str(exc))
    return int(m.group(1)) if m else None


class FlagError(ConfigError):
    """A mistake in a flag given with --check-config: it has no line in the file."""


def check_text(text: str, where: str,
               overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """A loaded, fully built config; ConfigError (a ConfigKeyError when it can say where,
    a FlagError when a flag in `overrides` is wrong)."""
    from node.reload import build

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    config = from_mapping(data, where)
    if overrides:
        try:
            config = from_mapping(overrides, "command line", base=config)
        except ConfigError as exc:
            raise FlagError(str(exc)) from None
    build(config)
    _look_without_opening(config)
    _as_the_node_would(config)
    return config


def _as_the_node_would(config: NodeConfig) -> None:
    """What the node refuses at start, before binding: by the node's own code."""
    from node.curve import CurveError, CurveKeys
    from node.security import Security

    if config.curve:
        try:
            CurveKeys.load(config.curve)
        except CurveError as exc:
            raise ConfigKeyError(f"curve {config.curve}: {exc}", (), "curve") from None
    try:
        Security(dataclasses.replace(config, curve=""))  # the keys are above, not bound
    except ConfigError as exc:
        raise ConfigKeyError(str(exc), (), _security_key(str(exc))) from None
    if (problem := port_problem(config)) is not None:  # --processes N: each binds its own
        raise ConfigKeyError(problem, (), "processes")


def _security_key(message: str) -> str:
    """The key a node.security message is about (for its line)."""
    if message.startswith("--admin-token-file "):
        return "admin_token_file"
    if message.startswith("--admin "):  # the loopback rule: "--admin X: why"
        return "admin"
    if message.startswith("--tls-key "):  # one key named: an encrypted one
        return "tls_key"
    for needle, key in (("--tls", "tls_cert"), ("https_hosts", "https_hosts"),
                        ("trusted_proxies", "trusted_proxies")):
        if needle in message:
            return key
    return ""


def _look_without_opening(config: NodeConfig) -> None:
    if config.cache.strip().lower() not in ("", "off", "none"):
        from cache.stores import open_store

        try:
            open_store(config.cache)  # built as the node builds it, not opened
        except ValueError as exc:
            raise ConfigKeyError(f"cache: {exc}", (), "cache") from None
    if config.app:
        from node.inapp import parse_spec as app_spec

        try:
            module, _ = app_spec(config.app)
            found = importlib.util.find_spec(module)
        except (ValueError, ImportError, ConfigError) as exc:
            raise ConfigKeyError(f"app: {exc}", (), "app") from None
        if found is None:
            raise ConfigKeyError(f"app: module {module!r} is not on the Python path "
                                 "(PYTHONPATH)", (), "app")
    for key in ("tls_cert", "tls_key"):
        for name in getattr(config, key):
            if not Path(name).is_file():
                raise ConfigKeyError(f"{key}: {name!r} is not a readable file", (), key)


def check_file(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """(ok, the line to print) for the config file at `path`, with the flags in
    `overrides` laid over it (as node.cli gives them to load_config)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return False, f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
    try:
        config = check_text(text, path, overrides)
    except FlagError as exc:
        return False, f"{path}: {exc}"
    except ConfigError as exc:
        line = problem_line(path, text, exc)
        message = str(exc).removeprefix(f"{path}: ").removeprefix(f"{path} ")
        return False, f"{path}:{line}: {message}" if line else f"{path}: {message}"
    services = ", ".join(config.services) or "none"
    return True, (f"{path}: ok (id {config.id or '(host name)'}, dc {config.dc}, "
                  f"{_count(len(config.all_routes()), 'route')}, services: {services})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
