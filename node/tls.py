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

A refused handshake tells the client why: a TLS 1.0/1.1 ClientHello gets the
`protocol_version` alert RFC 5246 E.1 requires (any other fatal alert OpenSSL writes
goes out the same way). Tornado's wire writes it to the socket itself; the loop's TLS
layer behind the fast wire (asyncio's and uvloop's SSLProtocol) aborts the
connection before sending what OpenSSL left in the outgoing memory BIO (CPython
gh-98078), so the front context's SSLObjects (`FlushingSSLObject`, through
`SSLContext.sslobject_class`) hold such a failure back once: the loop sees "want
read", sends the alert, and the failure is raised when the client answers it (its
close, or anything else it sends), or the handshake timeout ends the connection.

`HttpsPolicy` is the per-host decision, pure: an optional redirect of plain http
to https (308, which keeps the method and body) and the Strict-Transport-Security
value for https answers. The front door applies it (node/front.py), not a
pipeline stage, so that it covers every answer a listener writes: in-node app
routes, the pipeline's own error answers (502/503/504/500) and the front's
rejections (400/413/431), like nginx's `add_header ... always`.

The names a certificate covers are read with CPython's
`ssl._ssl._test_decode_cert` (the stdlib has no public way to parse a PEM file;
a certificate it cannot read simply serves as a fallback only).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tornado import httputil

from node.errors import ClientError
from node.http import Headers, Response
from node.proxyheaders import Target, normalise_target

log = logging.getLogger("scale0.tls")
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
ACME = "/.well-known/acme-challenge/"  # a certificate authority must reach these over http
STS = "Strict-Transport-Security"


class TLSError(Exception):
    """A certificate or key the operator gave cannot be used."""


class _Encrypted(Exception):
    """OpenSSL asked for the key's passphrase."""


def _no_passphrase() -> str:
    raise _Encrypted


def load_pair(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """`ctx.load_cert_chain(cert, key)`, or TLSError with a one-line reason. A key
    protected by a passphrase is refused by name: without a password callback OpenSSL
    would prompt for it on the terminal (blocking the start, or failing with "Invalid
    argument" when there is none, and again at each SIGHUP)."""
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise TLSError(f"--tls-key {key} is encrypted (protected by a passphrase): scale0 "
                       f"needs an unencrypted key (openssl pkey -in {key} -out PLAIN.key, "
                       "then give PLAIN.key, readable by the node's user only)") from None
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None


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


class FlushingSSLObject(ssl.SSLObject):
    """A memory-BIO TLS connection whose failed handshake lets the alert out first.

    When OpenSSL fails a handshake with an alert waiting in the outgoing BIO, the first
    `do_handshake` raises SSLWantReadError instead (the loop then sends the outgoing
    bytes and waits for the client) and the next one raises the real error, without
    touching OpenSSL again. A failure with nothing to send is raised at once, as before
    (plaintext http: OpenSSL sends no alert for it)."""

    outgoing: ssl.MemoryBIO | None = None
    failed: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if self.outgoing is None or not self.outgoing.pending:
                raise
            self.failed = exc
            raise ssl.SSLWantReadError("handshake failed; the alert goes out first") from exc


class ServerContext(ssl.SSLContext):
    """An SSLContext whose memory-BIO connections (the loop's TLS layer) are
    FlushingSSLObjects; sockets it wraps (Tornado's wire) are plain SSLSockets."""

    sslobject_class = FlushingSSLObject

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if isinstance(obj, FlushingSSLObject):
            obj.outgoing = outgoing
        return obj


def server_context() -> ssl.SSLContext:
    """An empty server context with the modern settings."""
    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
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
        load_pair(self.context, *config.pairs[0])  # never served: the callback always switches
        self.context.sni_callback = self._pick

    def _build(self) -> tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]:
        table: dict[str, ssl.SSLContext] = {}
        first: ssl.SSLContext | None = None
        for cert, key in self.config.pairs:
            ctx = server_context()
            load_pair(ctx, cert, key)
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
    """Per host ("*" = any other host): redirect http → https, HSTS on https answers."""

    hosts: dict[str, HostPolicy] = field(default_factory=dict)
    https_port: int = 443

    def policy(self, host: str) -> HostPolicy:
        name = hostname(host).lower()  # a raw Host header too (a request refused as bad)
        return self.hosts.get(name) or self.hosts.get("*") or HostPolicy()

    def hsts(self, host: str) -> str | None:
        """The Strict-Transport-Security value for an answer to `host` over https, if any
        (never send it over plain http: RFC 6797 §7.2)."""
        p = self.policy(host)
        if p.hsts_max_age <= 0:
            return None
        return f"max-age={p.hsts_max_age}" + ("; includeSubDomains" if p.include_subdomains else "")

    def redirect(self, host: str, target: str) -> Response | None:
        """The 308 answer to a plain-http request for `host` and origin-form `target`, or
        None to serve it as it is (no redirect for the host, no host named, or an ACME
        challenge a certificate authority must reach over http)."""
        if not host or target.startswith(ACME) or not self.policy(host).redirect:
            return None
        name = hostname(host)
        authority = name if self.https_port == 443 else f"{name}:{self.https_port}"
        path = target if target.startswith("/") else "/"
        headers = Headers([("Location", f"https://{authority}{path}"),
                           ("Content-Type", "text/plain; charset=utf-8"),
                           ("Cache-Control", "no-store")])
        return Response(308, headers, b"use https\n", reason="redirect to https",
                        outcome="redirect")


def policy_target(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders,
                   scheme: str) -> Target | None:
    """Host and target as the pipeline will see them (to pick a host's policy before an
    in-node app is consulted), or None if the request is bad."""
    try:
        return normalise_target(start_line.method, start_line.path, headers.get_list("Host"),
                                start_line.version, scheme)
    except ClientError:
        return None


class AddFields(httputil.HTTPConnection):
    """A Tornado app's connection that adds fields (HSTS) to the head the app writes,
    unless the app set them itself, and drops Tornado's default `Server:
    TornadoServer/<version>` (no answer of ours names a server; a value the app set
    itself stands); everything else is the real connection's. In-node apps (node.inapp)
    and the admin listener (node.admin.Unbranded) answer through it."""

    def __init__(self, conn: httputil.HTTPConnection, fields: list[tuple[str, str]]) -> None:
        self._conn = conn
        self._fields = fields

    def write_headers(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                      headers: httputil.HTTPHeaders,
                      chunk: bytes | None = None) -> asyncio.Future[None]:
        if headers.get("Server", "").startswith("TornadoServer/"):
            del headers["Server"]
        for name, value in self._fields:
            if name not in headers:
                headers[name] = value
        return self._conn.write_headers(start_line, headers, chunk)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self._conn.write(chunk)

    def finish(self) -> None:
        self._conn.finish()

    def __getattr__(self, name: str) -> Any:  # context, set_close_callback, detach, ...
        return getattr(self._conn, name)
