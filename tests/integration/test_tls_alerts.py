"""A client offering only TLS 1.0/1.1 is told why it is refused: the `protocol_version`
alert (RFC 5246 E.1), on every wire the https listener can run on (the fast wire on
uvloop and on asyncio's loop, whose TLS layer drops what OpenSSL left to send when a
handshake fails, and Tornado's), then the connection is closed; nothing is left over
and the next good client is served.

Real loopback connections and `CertStore.context`, with the test CA of testkit.pki.
The old client lowers its own OpenSSL security level (`@SECLEVEL=0`): at the default
level the local OpenSSL refuses to offer TLS 1.1 at all and would fail before sending
anything, which would prove nothing about the server.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit.pki import make_ca, make_leaf

from node.fastwire import FastHTTPServer, WireLimits, new_event_loop
from node.front import Front, FrontLimits, bound_port
from node.http import Headers, Request, Response
from node.tls import CertStore, TLSConfig

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
              pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")]

TIMEOUT = 1.0  # the header timeout, which bounds a TLS handshake on the fast wire
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": new_event_loop, "asyncio": asyncio.new_event_loop}
WIRES = [("fast", "uvloop"), ("fast", "asyncio"), ("tornado", "asyncio")]
ALERT_PROTOCOL_VERSION = b"\x02\x46"  # level fatal (2), description protocol_version (70)


def old_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def old_hello() -> bytes:
    """The bytes of a TLS 1.1 ClientHello, to send from a raw socket."""
    out = ssl.MemoryBIO()
    conn = old_client().wrap_bio(ssl.MemoryBIO(), out, server_hostname="a.test")
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and hello[5:6] == b"\x01"  # handshake record, ClientHello
    return hello


def refusal(port: int) -> str:
    """The reason the old client's handshake fails with."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with old_client().wrap_socket(raw, server_hostname="a.test"):
            return "handshake done"
    except ssl.SSLError as exc:
        return str(exc.reason)
    except OSError as exc:  # a reset or an EOF outside the TLS layer
        return repr(exc)
    finally:
        raw.close()


def silent(port: int) -> bytes:
    """Send an old ClientHello from a raw socket that never closes its side; everything
    the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(old_hello())
        got = b""
        while chunk := raw.recv(4096):
            got += chunk
        return got


def served(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="a.test") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        return got


async def hello(_request: Request) -> Response:
    return Response(200, Headers([("Content-Type", "text/plain")]), b"hello\n")


@pytest.mark.parametrize(("wire", "loop"), WIRES)
def test_an_old_client_gets_the_protocol_version_alert(tmp_path: Path, wire: str, loop: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    make_ca(tmp_path)
    store = CertStore(TLSConfig((make_leaf(tmp_path, "a.test", "v1"),)))
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        running = asyncio.get_running_loop()
        running.set_exception_handler(lambda _loop, context: errors.append(context))
        front = Front(hello, limits=FrontLimits(header_timeout=TIMEOUT), scheme="https")
        if wire == "fast":
            fast = FastHTTPServer(front, ssl_context=store.context,
                                  limits=WireLimits(header_timeout=TIMEOUT))
            port = await fast.listen("127.0.0.1", 0)
        else:
            port = bound_port(front.listen(0, "127.0.0.1", ssl_options=store.context))
        for _ in range(3):
            assert await running.run_in_executor(None, refusal, port) \
                == "TLSV1_ALERT_PROTOCOL_VERSION"
        # The alert, in a record of its own, and then the close, also to a client that
        # never closes its side (on the fast wire the handshake timeout ends it).
        got = await running.run_in_executor(None, silent, port)
        assert got[:1] == b"\x15" and got[3:5] == b"\x00\x02", got  # one 2-byte alert
        assert got[5:] == ALERT_PROTOCOL_VERSION, got
        # The refused clients never reached the front; a good client is served.
        got = await running.run_in_executor(None, served, port, tmp_path / "ca.pem")
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"hello\n"), got
        assert await front.drain(5.0)
        if wire == "fast":
            assert fast.connections == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()

    with caplog.at_level(logging.DEBUG), asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())
    assert errors == []
    if wire == "fast":  # (Tornado warns "SSL Error on N" for each refused handshake)
        assert [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING or r.exc_info] == []
