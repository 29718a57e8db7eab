"""`scale0 node --https` on each wire layer (`--http-server fast`, the default, and
`tornado`): which one serves, plaintext refused, TLS 1.1 refused with the
protocol_version alert, the client address in the access log, and a SIGTERM drain that
closes an open TLS connection and exits 0 without a traceback in the node's log."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import pytest
from testkit.pki import make_ca, make_leaf
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
              pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")]


def _tls(port: int, ca: Path, ctx: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    ctx = ctx or ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="a.test")


def _handshakes(port: int, ca: Path) -> bool:
    with _tls(port, ca):
        return True


def _plaintext(port: int) -> bytes:
    """What a plain http request to the TLS port gets back (b"" for a close or a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        try:
            return plain.recv(65536)
        except ConnectionResetError:
            return b""


def _answer(sock: ssl.SSLSocket, request: bytes) -> bytes:
    """Send `request`; read until the answer's body ends (Content-Length) or the close."""
    sock.sendall(request)
    data = b""
    for _ in range(1000):  # bounded: each turn reads at least one byte or stops
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


@pytest.mark.parametrize("wire", ["fast", "tornado"])
def test_https_on_each_wire_logs_the_client_and_drains(tmp_path: Path, wire: str) -> None:
    make_ca(tmp_path)
    cert, key = make_leaf(tmp_path, "a.test", "v1")
    ca = tmp_path / "ca.pem"
    public = tmp_path / "public"
    public.mkdir()
    (public / "page.txt").write_text("a static page\n")
    https = free_port()
    node = Proc([scale0_bin(), "node", "--id", "tls", "--http-server", wire,
                 "--http", f"127.0.0.1:{free_port()}", "--https", f"127.0.0.1:{https}",
                 "--tls-cert", cert, "--tls-key", key,
                 "--admin", f"127.0.0.1:{free_port()}",
                 "--workers", f"tcp://127.0.0.1:{free_port()}",
                 "--gossip", f"tcp://127.0.0.1:{free_port()}",
                 "--peer", f"tcp://127.0.0.1:{free_port()}", "--cache", "off",
                 "--static", f"/s={public}"], tmp_path / "node.log")
    try:
        wait_until(lambda: _handshakes(https, ca) or not node.alive(), timeout=30,
                   what="the https listener")
        assert node.alive(), node.output()
        with _tls(https, ca) as s:
            # Tornado lets a comma in Host through; llhttp's wire refuses it (both documented
            # in tests/integration/test_hostile_http.py): which wire answered
            got = _answer(s, b"GET /s/page.txt HTTP/1.1\r\nHost: a.test,b.test\r\n"
                             b"Connection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 400 " if wire == "fast" else b"HTTP/1.1 200 "), got
        assert not _plaintext(https).startswith(b"HTTP/")  # not TLS: closed, never served
        # A TLS 1.1 client (its own security level lowered, else the local OpenSSL would
        # refuse to offer 1.1 and fail before sending anything) is told why: the alert.
        old = ssl.create_default_context(cafile=str(ca))
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError) as refused:
            _tls(https, ca, old).close()
        assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
        kept = _tls(https, ca)
        got = _answer(kept, b"GET /s/page.txt?from=kept HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"a static page\n"), got
        wait_until(lambda: any("127.0.0.1" in line and "/s/page.txt?from=kept" in line
                               for line in node.output().splitlines()),
                   timeout=10, what="the access line with the client address")
        code = node.terminate(30.0)  # the open connection is idle: closed at once
        assert code == 0, node.output()
        assert kept.recv(1) == b""
        kept.close()
        log = node.output()
        assert "Traceback" not in log
        if wire == "fast":  # Tornado warns "SSL Error on N" for each bad handshake
            assert " WARNING " not in log and " ERROR " not in log, log
    finally:
        node.stop()
