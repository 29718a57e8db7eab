"""Who may connect, set up once from the config: CurveZMQ, TLS, the admin token, proxies.

The node builds one `Security` before it binds anything, so a mistake — keys
that cannot be read, an authenticator that does not refuse an unlisted key, a
certificate that does not load, a public admin listener without a token —
stops it at startup with a one-line reason (ConfigError) rather than leaving
it open. `reload()` re-reads the key allow-list and the certificates (SIGHUP);
what fails to reload is logged and the old state stays in force.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from node.admintoken import AdminTokenError, require_token
from node.config import NodeConfig, parse_hostport
from node.curve import CurveError, CurveKeys, Gatekeeper
from node.errors import ConfigError
from node.proxyheaders import TrustedProxies
from node.tls import CertStore, HostPolicy, HttpsPolicy, TLSConfig, TLSError

log = logging.getLogger("scale0.security")


class Security:
    def __init__(self, config: NodeConfig) -> None:
        self.keys: CurveKeys | None = None
        self.gate: Gatekeeper | None = None
        self.certs: CertStore | None = None
        if config.curve:
            try:
                self.keys = CurveKeys.load(config.curve)
                self.gate = Gatekeeper(self.keys)
                self.gate.start()  # refuses to return unless an unlisted key is refused
            except CurveError as exc:
                raise ConfigError(f"--curve {config.curve}: {exc}") from exc
        if config.https:
            try:
                self.certs = CertStore(TLSConfig.from_flags(config.tls_cert, config.tls_key))
            except TLSError as exc:  # a message about one key names it already
                where = "" if str(exc).startswith("--tls-key ") else "--tls-cert/--tls-key: "
                raise ConfigError(f"{where}{exc}") from exc
        try:
            self.trusted = TrustedProxies.parse(config.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        admin_host, _ = parse_hostport(config.admin, "--admin")
        try:
            self.admin_token = require_token(admin_host, config.admin_token_file or None)
        except AdminTokenError as exc:  # a bad file names itself; the loopback rule, --admin
            where = "" if config.admin_token_file else f"--admin {config.admin}: "
            raise ConfigError(f"{where}{exc}") from exc
        self.https_policy = https_policy(config)

    @property
    def secure(self) -> Callable[..., None] | None:
        """Applies CURVE to a ZeroMQ socket (None: plaintext, no --curve)."""
        return self.keys.secure if self.keys is not None else None

    def reload(self, config: NodeConfig) -> None:
        """SIGHUP: the key allow-list and the certificates, read again."""
        if self.gate is not None:
            try:
                count = self.gate.reload()
                log.info("SIGHUP: %d authorised CurveZMQ keys", count)
            except CurveError as exc:
                log.error("SIGHUP: keys not reloaded, the old list stays: %s", exc)
        if self.certs is not None:
            try:
                self.certs.reload()
            except TLSError as exc:
                log.error("SIGHUP: certificates not reloaded, the old ones stay: %s", exc)
        self.https_policy = https_policy(config)

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.stop()


def https_policy(config: NodeConfig) -> HttpsPolicy | None:
    """The per-host redirect/HSTS stage from `[https_hosts."HOST"]` tables, if any."""
    if not config.https_hosts:
        return None
    _, port = parse_hostport(config.https or ":443", "--https")
    hosts: dict[str, HostPolicy] = {}
    for host, table in config.https_hosts.items():
        if not isinstance(table, dict):
            raise ConfigError(f'[https_hosts."{host}"] must be a table')
        try:
            hosts[host.lower()] = HostPolicy(**_keys(table))
        except TypeError as exc:
            raise ConfigError(f'[https_hosts."{host}"]: {exc}') from exc
    return HttpsPolicy(hosts, port)


def _keys(table: dict[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in table.items()}
