"""TLS at the front door over real loopback connections, with a CA the test makes itself.

The openssl command line makes the CA and the leaf certificates (no extra
Python dependency). A real Tornado HTTPServer serves with `CertStore.context`;
clients verify against the test CA and name a host by SNI.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from hypothesis import given
from hypothesis import strategies as st
from testkit.pki import make_ca, make_leaf
from tornado.httpserver import HTTPServer

from node.http import Headers, Request
from node.proxyheaders import upstream_headers
from node.tls import CertStore, HostPolicy, HttpsPolicy, TLSConfig, TLSError, cert_names, hostname

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    for host in ("a.test", "b.test"):
        for tag in ("v1", "v2"):
            make_leaf(d, host, tag)
    yield d


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(f"hello {self.request.protocol}")


def client_ctx(ca: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def unit_of(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert()
    assert cert is not None
    subject: Any = cert["subject"]
    return str(next(v for rdn in subject for k, v in rdn if k == "organizationalUnitName"))


def fetch_on(sock: ssl.SSLSocket, host: str) -> bytes:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"hello" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_sni_choice_reload_in_place_and_old_protocols_refused(pki: Path) -> None:
    config = TLSConfig.from_flags([str(pki / "a.test-v1.pem"), str(pki / "b.test-v1.pem")],
                                  [str(pki / "a.test-v1.key"), str(pki / "b.test-v1.key")])
    store = CertStore(config)
    assert store.names() == ["*.a.test", "*.b.test", "a.test", "b.test"]
    live = pki / "live"
    live.mkdir(exist_ok=True)

    async def main() -> None:
        server = HTTPServer(tornado.web.Application([(r"/", Hello)]), ssl_options=store.context)
        lsock = socket.create_server(("127.0.0.1", 0))
        lsock.setblocking(False)
        server.add_sockets([lsock])
        port = lsock.getsockname()[1]
        ca = pki / "ca.pem"

        def connect(sni: str | None, ctx: ssl.SSLContext | None = None) -> ssl.SSLSocket:
            c = ctx or client_ctx(ca)
            if sni is None:
                c.check_hostname = False
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            return c.wrap_socket(raw, server_hostname=sni)

        def check() -> dict[str, object]:
            out: dict[str, object] = {}
            with connect("a.test") as s:
                out["a"] = unit_of(s), s.version(), s.selected_alpn_protocol()
                assert b"hello https" in fetch_on(s, "a.test")
            with connect("www.b.test") as s:
                out["b"] = unit_of(s)
            with connect(None) as s:
                out["none"] = unit_of(s)
            with pytest.raises(ssl.SSLError):
                connect("a.test", client_ctx(ca, ssl.TLSVersion.TLSv1_1)).close()
            kept = connect("b.test")
            assert b"hello" in fetch_on(kept, "b.test")
            out["kept"] = kept
            return out

        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, check)
        assert first["a"] == ("v1", "TLSv1.3", "http/1.1")
        assert first["b"] == "v1" and first["none"] == "v1"
        # Swap b.test's files for v2 and reload: the open connection keeps working.
        shutil.copy(pki / "b.test-v2.pem", pki / "b.test-v1.pem")
        shutil.copy(pki / "b.test-v2.key", pki / "b.test-v1.key")
        store.reload()
        kept = first["kept"]
        assert isinstance(kept, ssl.SSLSocket)
        second = await loop.run_in_executor(None, check)
        assert b"hello" in await loop.run_in_executor(None, fetch_on, kept, "b.test")
        kept.close()
        assert second["b"] == "v2" and second["a"][0] == "v1"  # type: ignore[index]
        assert store.reloads == 1
        # A broken file on reload keeps the old certificates in service.
        (pki / "b.test-v1.key").write_text("not a key\n")
        with pytest.raises(TLSError, match="cannot load"):
            store.reload()
        third = await loop.run_in_executor(None, check)
        assert third["b"] == "v2"
        for s in (second["kept"], third["kept"]):
            assert isinstance(s, ssl.SSLSocket)
            s.close()
        server.stop()
        await server.close_all_connections()

    try:
        asyncio.run(main())
    finally:
        shutil.copy(pki / "b.test-v2.key", pki / "b.test-v1.key")


def test_config_errors_name_the_flag(pki: Path) -> None:
    with pytest.raises(TLSError, match="pairs"):
        TLSConfig.from_flags(["a", "b"], ["a"])
    with pytest.raises(TLSError, match="at least one"):
        TLSConfig.from_flags([], [])
    with pytest.raises(TLSError, match="cannot load"):
        CertStore(TLSConfig((("/nonexistent.pem", "/nonexistent.key"),)))
    assert cert_names("/nonexistent.pem") == []
    assert cert_names(str(pki / "a.test-v2.pem")) == ["a.test", "*.a.test"]


def _req(scheme: str, host: str, target: str = "/x?y=1") -> Request:
    return Request("POST", target, Headers(), b"", scheme=scheme, host=host, client="192.0.2.9")


def test_redirect_and_hsts_per_host() -> None:
    policy = HttpsPolicy({"a.test": HostPolicy(redirect=True, hsts_max_age=600,
                                               include_subdomains=True),
                          "*": HostPolicy(hsts_max_age=60)}, https_port=8443)
    r = policy.redirect("a.test:8080", "/x?y=1")
    assert r is not None and r.status == 308
    assert r.headers.get("location") == "https://a.test:8443/x?y=1"
    assert policy.redirect("A.Test", "/.well-known/acme-challenge/t") is None
    assert policy.redirect("other.test", "/x") is None
    assert policy.redirect("", "/x") is None  # HTTP/1.0 without a Host: nowhere to send it
    assert policy.hsts("a.test") == "max-age=600; includeSubDomains"
    assert policy.hsts("other.test:8443") == "max-age=60"
    assert HttpsPolicy({"a.test": HostPolicy(redirect=True)}).hsts("a.test") is None


def test_upstream_says_https() -> None:
    out = upstream_headers(_req("https", "a.test"), "n1")
    assert out.get("X-Forwarded-Proto") == "https"
    assert "proto=https" in (out.get("Forwarded") or "")


@given(st.text(max_size=60))
def test_hostname_never_fails(authority: str) -> None:
    name = hostname(authority)
    assert len(name) <= len(authority)
