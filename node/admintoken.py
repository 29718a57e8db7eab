"""A bearer token in front of the admin listener when it is not on loopback.

The admin pages can purge the cache and show the mesh, so off loopback they
require `Authorization: Bearer <token>`, the token read from
`--admin-token-file`. `guard(app, token)` wraps the admin Application as a
Tornado connection delegate: the check runs on the request head, before any
handler (including ones other parts mount through `extra_routes`) or body, so
no route can forget it. Comparison is constant-time; the token is never logged
or echoed, and a refusal says only that a valid token is needed.

One exception, for load balancers and DNS health checks that cannot send a
header: a GET or HEAD of exactly `/_scale0/ready` or `/_scale0/health` without
the token goes to the admin app's probe app (node/admin.py `probe_app`), which
answers the status and nothing else; with the token, to the full app. Any other
path, method or spelling without the token is refused as before.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import stat
from pathlib import Path

from tornado import httputil

from node.admin import HEALTH, PROBES, READY

log = logging.getLogger("scale0.admin")
MIN_LENGTH = 16
_REFUSAL = b"a valid admin token is required (Authorization: Bearer ...)\n"
OPEN_PATHS = frozenset({HEALTH, READY})  # exact paths; a query string is allowed


class AdminTokenError(Exception):
    """The token file is missing, unreadable or too weak: the operator's to fix."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; "" or a wildcard (all interfaces) is not."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_token(path: str | Path) -> bytes:
    """The token in `path` (surrounding whitespace ignored); warns if others may read it."""
    p = Path(path)
    try:
        data = p.read_bytes().strip()
        mode = p.stat().st_mode
    except OSError as exc:
        raise AdminTokenError(f"--admin-token-file {p}: {exc.strerror or exc}") from None
    if len(data) < MIN_LENGTH or b"\n" in data:
        raise AdminTokenError(f"--admin-token-file {p}: the token must be one line of at least "
                              f"{MIN_LENGTH} characters (e.g. `openssl rand -hex 32`)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--admin-token-file %s is readable by other users; chmod 600 it", p)
    return data


def require_token(admin_host: str, token_file: str | None) -> bytes | None:
    """The token the admin listener on `admin_host` needs, or None on loopback without one.

    Off loopback a token file is mandatory: AdminTokenError says so."""
    if token_file:
        return load_token(token_file)
    if is_loopback(admin_host):
        return None
    raise AdminTokenError(f"the admin listener on {admin_host or 'all interfaces'} is not "
                          f"loopback: give --admin-token-file")


def check_bearer(authorization: str | None, token: bytes) -> bool:
    """Does the Authorization header carry `token`? Constant-time in the token's content."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    ok_scheme = scheme.lower() == "bearer"
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token) and ok_scheme


class _Gate(httputil.HTTPMessageDelegate):
    def __init__(self, guard: TokenGuard, server_conn: object,
                 request_conn: httputil.HTTPConnection) -> None:
        self._guard, self._server_conn, self._conn = guard, server_conn, request_conn
        self._inner: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        guard = self._guard
        app = guard.app if check_bearer(headers.get("Authorization"), guard.token) else None
        if app is None and guard.probes is not None and start_line.method in ("GET", "HEAD") \
                and start_line.path.partition("?")[0] in OPEN_PATHS:
            app = guard.probes  # status only: what a checker without headers may know
        if app is not None:
            self._inner = app.start_request(self._server_conn, self._conn)
            self._inner.headers_received(start_line, headers)
            return
        guard.refused += 1
        out = httputil.HTTPHeaders({
            "WWW-Authenticate": 'Bearer realm="scale0-admin"', "Connection": "close",
            "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
            "Content-Length": str(len(_REFUSAL))})
        self._conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 401, "Unauthorized"),
                                 out, _REFUSAL)
        self._conn.finish()

    def data_received(self, chunk: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(chunk)  # a refused request's body is discarded

    def finish(self) -> None:
        if self._inner is not None:
            self._inner.finish()

    def on_connection_close(self) -> None:
        if self._inner is not None:
            self._inner.on_connection_close()


class TokenGuard(httputil.HTTPServerConnectionDelegate):
    """`HTTPServer(TokenGuard(app, token, probes))`: every request must carry the bearer
    token, but for the probes' two paths, answered by `probes` (if any) without it."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, token: bytes,
                 probes: httputil.HTTPServerConnectionDelegate | None = None) -> None:
        self.app, self.token, self.probes = app, token, probes
        self.refused = 0

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Gate(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)
        if self.probes is not None:
            self.probes.on_close(server_conn)


def guard(app: httputil.HTTPServerConnectionDelegate,
          token: bytes | None) -> httputil.HTTPServerConnectionDelegate:
    """`app` itself without a token (loopback), else `app` behind the token check, with
    the token-free probes the admin app carries (node/admin.py `make_admin_app`)."""
    if token is None:
        return app
    settings = getattr(app, "settings", None)
    probes = settings.get(PROBES) if isinstance(settings, dict) else None
    return TokenGuard(app, token, probes)
