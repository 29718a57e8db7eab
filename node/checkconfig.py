"""`scale0 node --check-config FILE`: validate a config without binding anything.

Everything the node would build at start is built (routes, static mounts,
cache, replication and per-service settings), and what it would open is
looked at without opening: the cache store's spec, the in-node app's module
(found, not imported), the TLS files (read). The answer is "FILE: ok" and exit
0, or "FILE:LINE: what is wrong" and exit 2 — like `nginx -t`.

tomllib gives line numbers only for syntax errors, so for a semantic error
`locate` scans the file's text for the table header and the key (pure, and
tested with generated files). Flags that would override the file are not
applied: the check is about the file.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from node.config import NodeConfig, from_mapping
from node.errors import ConfigError
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


def check_text(text: str, where: str) -> NodeConfig:
    """A loaded, fully built config; ConfigError (a ConfigKeyError when it can say where)."""
    from node.reload import build

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    config = from_mapping(data, where)
    build(config)
    _look_without_opening(config)
    return config


def _look_without_opening(config: NodeConfig) -> None:
    if config.cache.strip().lower() not in ("", "off", "none"):
        from cache.stores import known_stores, parse_spec

        try:
            scheme, _, _ = parse_spec(config.cache)
        except ValueError as exc:
            raise ConfigKeyError(f"cache: {exc}", (), "cache") from None
        if scheme not in known_stores():
            raise ConfigKeyError(f"cache: unknown store {scheme!r} (known: "
                                 f"{', '.join(sorted(known_stores()))})", (), "cache")
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


def check_file(path: str) -> tuple[bool, str]:
    """(ok, the line to print) for the config file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return False, f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
    try:
        config = check_text(text, path)
    except ConfigError as exc:
        line = problem_line(path, text, exc)
        message = str(exc).removeprefix(f"{path}: ").removeprefix(f"{path} ")
        return False, f"{path}:{line}: {message}" if line else f"{path}: {message}"
    services = ", ".join(config.services) or "none"
    return True, (f"{path}: ok (id {config.id or '(host name)'}, dc {config.dc}, "
                  f"{len(config.all_routes())} routes, services: {services})")
