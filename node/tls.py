"""TLS at the front door: certificates chosen by SNI, reloaded in place, and the https policy.

`CertStore` loads every `--tls-cert/--tls-key` pair into its own SSLContext and
hands the listener one front context whose `sni_callback` points each handshake
at the context for the name the client asked for (the first pair when it named
none or one we lack). `reload()` (SIGHUP) builds all contexts anew and swaps the
lookup table in one assignment: handshakes already done keep their context, new
ones get the new certificates, and no connection is dropped. A pair that fails
to load on reload keeps the old table and raises, so a typo never takes the
site down.

Settings follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, ECDHE
with AES-GCM or ChaCha20, no compression, no renegotiation, ALPN http/1.1.

`HttpsPolicy` is a pipeline stage: per host, an optional redirect of plain http
to https (308, which keeps the method and body) and Strict-Transport-Security on
https answers. The names a certificate covers are read with CPython's
`ssl._ssl._test_decode_cert` (the stdlib has no public way to parse a PEM file;
a certificate it cannot read simply serves as a fallback only).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.http import Headers, Request, Response
from node.stage import Next

log = logging.getLogger("scale0.tls")
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
ACME = "/.well-known/acme-challenge/"  # a certificate authority must reach these over http


class TLSError(Exception):
    """A certificate or key the operator gave cannot be used."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The https listener's certificates: (cert, key) PEM file pairs, the first is the default."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def from_flags(cls, certs: Sequence[str], keys: Sequence[str]) -> TLSConfig:
        """From repeated --tls-cert/--tls-key, matched in order."""
        if not certs:
            raise TLSError("--https needs at least one --tls-cert and --tls-key")
        if len(certs) != len(keys):
            raise TLSError(f"{len(certs)} --tls-cert but {len(keys)} --tls-key: give them in pairs")
        return cls(tuple(zip(certs, keys, strict=True)))


def server_context() -> ssl.SSLContext:
    """An empty server context with the modern settings."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)  # TLS 1.3 suites are all modern and set separately by OpenSSL
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def cert_names(cert_file: str) -> list[str]:
    """DNS names (subjectAltName, else the CN) a PEM certificate covers, lower-case."""
    try:
        info: dict[str, Any] = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError, AttributeError):
        return []
    names = [v.lower() for k, v in info.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        names = [v.lower() for rdn in info.get("subject", ()) for k, v in rdn
                 if k == "commonName"]
    return names


def _lookup(table: Mapping[str, ssl.SSLContext], name: str) -> ssl.SSLContext | None:
    if name in table:
        return table[name]
    _, _, parent = name.partition(".")
    return table.get("*." + parent) if parent else None


class CertStore:
    """The SNI table behind one https listener; `context` goes to the server."""

    def __init__(self, config: TLSConfig) -> None:
        self.config = config
        self.reloads = 0
        self._default, self._table = self._build()
        self.context = server_context()
        cert, key = config.pairs[0]
        self.context.load_cert_chain(cert, key)  # never served: the callback always switches
        self.context.sni_callback = self._pick

    def _build(self) -> tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]:
        table: dict[str, ssl.SSLContext] = {}
        first: ssl.SSLContext | None = None
        for cert, key in self.config.pairs:
            ctx = server_context()
            try:
                ctx.load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as exc:
                raise TLSError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None
            first = first or ctx
            for name in cert_names(cert):
                table.setdefault(name, ctx)  # the first pair naming a host wins
        assert first is not None
        return first, table

    def _pick(self, sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = _lookup(self._table, name.lower()) if name else None
        sslobj.context = chosen or self._default

    def names(self) -> list[str]:
        return sorted(self._table)

    def reload(self) -> None:
        """Re-read every pair (SIGHUP); on any failure keep serving the old ones and raise."""
        default, table = self._build()
        self._default, self._table = default, table  # handshakes read these fresh each time
        self.reloads += 1
        log.info("TLS certificates reloaded: %s", ", ".join(sorted(table)) or "(default only)")


def hostname(authority: str) -> str:
    """`host[:port]` → host (an IPv6 literal keeps its brackets)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] or authority
    return authority.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class HostPolicy:
    redirect: bool = False  # plain http → 308 to https
    hsts_max_age: int = 0  # seconds; 0 = no Strict-Transport-Security
    include_subdomains: bool = False


@dataclass
class HttpsPolicy:
    """Pipeline stage: redirect http → https and add HSTS, per host ("*" = any other host)."""

    hosts: dict[str, HostPolicy] = field(default_factory=dict)
    https_port: int = 443

    def policy(self, host: str) -> HostPolicy:
        name = hostname(host)
        return self.hosts.get(name) or self.hosts.get("*") or HostPolicy()

    async def __call__(self, request: Request, call_next: Next) -> Response:
        p = self.policy(request.host)
        if request.scheme == "http":
            if p.redirect and request.host and not request.target.startswith(ACME):
                return self._redirect(request)
            return await call_next(request)
        response = await call_next(request)
        if p.hsts_max_age > 0 and "strict-transport-security" not in response.headers:
            value = f"max-age={p.hsts_max_age}"
            response.headers.set("Strict-Transport-Security",
                                 value + ("; includeSubDomains" if p.include_subdomains else ""))
        return response

    def _redirect(self, request: Request) -> Response:
        name = hostname(request.host)
        authority = name if self.https_port == 443 else f"{name}:{self.https_port}"
        target = request.target if request.target.startswith("/") else "/"
        headers = Headers([("Location", f"https://{authority}{target}"),
                           ("Content-Type", "text/plain; charset=utf-8"),
                           ("Cache-Control", "no-store")])
        return Response(308, headers, b"use https\n", reason="redirect to https",
                        outcome="redirect")
