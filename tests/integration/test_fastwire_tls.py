"""The fast wire over TLS (the --https listener on httptools/uvloop), on real loopback
connections with a CA the test makes itself (the openssl helpers of test_tls).

One `CertStore.context` serves; clients verify against the test CA and name a host by
SNI. Checked: SNI choice and an in-place reload that keeps open connections; bad
handshakes closed without a log line, an exception-handler call or a leftover
connection or task; https in the request and the forwarding headers; the client
address in the access log; drain; the hostile-HTTP corpus and slowloris over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from integration.test_hostile_http import CASES, MAX_BODY, MAX_HEADER, TIMEOUT, Twin
from integration.test_tls import client_ctx
from testkit.pki import make_ca, make_leaf

from node.accesslog import AccessLog
from node.fastwire import FastHTTPServer, WireLimits, new_event_loop
from node.front import Front, FrontLimits
from node.hitcache import HitCache
from node.http import Headers, Request, Response
from node.proxyheaders import upstream_headers
from node.tls import CertStore, TLSConfig

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
              pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA, both sites' first certificates and b.test's replacement."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    for host, tag in (("a.test", "v1"), ("b.test", "v1"), ("b.test", "v2")):
        make_leaf(d, host, tag)
    return d


def store_for(pki: Path, *hosts: str) -> CertStore:
    """A CertStore over `live/HOST.pem` copies of the v1 pairs (a reload re-reads them)."""
    live = pki / "live"
    live.mkdir(exist_ok=True)
    pairs = []
    for host in hosts:
        for ext in ("pem", "key"):
            shutil.copy(pki / f"{host}-v1.{ext}", live / f"{host}.{ext}")
        pairs.append((str(live / f"{host}.pem"), str(live / f"{host}.key")))
    return CertStore(TLSConfig(tuple(pairs)))


class Trouble(logging.Handler):
    """Every record at WARNING or above, or carrying a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.exc_info:
            self.records.append(record)


@dataclass
class Site:
    """A fast-wire TLS listener serving Front(scheme="https") over a Twin."""

    fast: FastHTTPServer
    front: Front
    port: int
    ca: Path
    twin: Twin
    errors: list[dict[str, Any]] = field(default_factory=list)  # the loop's exception handler

    def ctx(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        return client_ctx(self.ca, maximum)

    async def open(self, sni: str = "a.test", **kw: Any) -> tuple[asyncio.StreamReader,
                                                                  asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx(),
                                             server_hostname=sni, **kw)


def run_site(pki: Path, scenario: Callable[[Site], Awaitable[None]], *,
             handle: Callable[[Request], Awaitable[Response]] | None = None,
             access: AccessLog | None = None) -> Trouble:
    """Serve on uvloop (as the node does), run `scenario` within 60 s, then stop and
    check nothing is left: no connection, no task; the log records it caught."""
    trouble = Trouble()
    root = logging.getLogger()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        twin = Twin()
        limits = FrontLimits(max_header_size=MAX_HEADER, max_body_size=MAX_BODY,
                             idle_timeout=TIMEOUT, body_timeout=TIMEOUT)
        front = Front(handle or twin.handle, limits=limits, scheme="https")
        front.access_log = access
        store = store_for(pki, "a.test", "b.test")
        fast = FastHTTPServer(front, ssl_context=store.context, limits=WireLimits(
            max_header_size=MAX_HEADER, max_body_size=MAX_BODY, header_timeout=TIMEOUT,
            idle_timeout=TIMEOUT, body_timeout=TIMEOUT))
        front.adopt(fast)
        site = Site(fast, front, await fast.listen("127.0.0.1", 0), pki / "ca.pem", twin,
                    errors)
        site.store = store  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(scenario(site), 60)
        finally:
            await front.drain(5.0)
        assert fast.connections == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
        assert errors == [], errors

    root.addHandler(trouble)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
    finally:
        root.removeHandler(trouble)
    return trouble


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> tuple[int | None, bytes]:
    """Send `request`, read until the server closes: (status or None, everything read)."""
    writer.write(request)
    await writer.drain()
    got = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):  # ended without close_notify
        got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return status, got


async def one_response(reader: asyncio.StreamReader) -> bytes:
    """One Content-Length-framed answer from a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def ou_of(writer: asyncio.StreamWriter) -> str:
    cert = writer.get_extra_info("peercert")
    return str(next(v for rdn in cert["subject"] for k, v in rdn
                    if k == "organizationalUnitName"))


CLOSE = b"Connection: close\r\n\r\n"


def test_sni_choice_and_a_reload_that_keeps_open_connections(pki: Path) -> None:
    async def scenario(site: Site) -> None:
        store: CertStore = site.store  # type: ignore[attr-defined]
        reader, kept = await site.open("b.test")
        kept.write(b"GET /one HTTP/1.1\r\nHost: b.test\r\n\r\n")
        assert b"200 OK" in await one_response(reader)
        seen = {}
        for sni in ("a.test", "www.b.test"):
            r, w = await site.open(sni)
            ssl_object = w.get_extra_info("ssl_object")
            seen[sni] = (ou_of(w), ssl_object.version(), ssl_object.selected_alpn_protocol())
            w.close()
        assert seen == {"a.test": ("v1", "TLSv1.3", "http/1.1"),
                        "www.b.test": ("v1", "TLSv1.3", "http/1.1")}
        live = site.ca.parent / "live"
        for ext in ("pem", "key"):
            shutil.copy(site.ca.parent / f"b.test-v2.{ext}", live / f"b.test.{ext}")
        store.reload()
        r, w = await site.open("b.test")
        assert ou_of(w) == "v2"  # a new handshake gets the new certificate
        status, _ = await exchange(r, w, b"GET / HTTP/1.1\r\nHost: b.test\r\n" + CLOSE)
        assert status == 200
        r, w = await site.open("a.test")
        assert ou_of(w) == "v1"
        w.close()
        kept.write(b"GET /two HTTP/1.1\r\nHost: b.test\r\n\r\n")  # the open one lives on
        assert b"200 OK" in await one_response(reader)
        assert ou_of(kept) == "v1"
        kept.close()
        assert [r.path for r in site.twin.seen] == ["/one", "/", "/two"]

    assert run_site(pki, scenario).records == []


def test_bad_handshakes_are_closed_quietly_and_leave_nothing(pki: Path) -> None:
    async def scenario(site: Site) -> None:
        # plaintext HTTP to the TLS port: closed without an answer
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        status, got = await exchange(reader, writer, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert (status, got) == (None, b"")
        # a client offering only TLS 1.0/1.1: refused in the handshake
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await asyncio.open_connection("127.0.0.1", site.port, ssl=site.ctx(old),
                                              server_hostname="a.test")
        # an SNI name we have no certificate for: the default one is offered, and a
        # verifying client refuses it
        with pytest.raises(ssl.SSLCertVerificationError):
            await site.open("c.test")
        # a client that connects and never says hello: cut after the header timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # none of it reached the delegate or stayed open; a good client is served
        assert site.twin.seen == [] and site.fast.connections == 0
        r, w = await site.open("a.test")
        assert (await exchange(r, w, b"GET /ok HTTP/1.1\r\nHost: a.test\r\n" + CLOSE))[0] == 200

    trouble = run_site(pki, scenario)
    assert [(r.name, r.getMessage()) for r in trouble.records] == []


def test_https_in_the_request_forwarding_headers_and_access_log(pki: Path) -> None:
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.fastwire_tls.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)
    seen: list[Request] = []

    async def handle(request: Request) -> Response:
        seen.append(request)
        up = upstream_headers(request, "n1")
        body = f"{up.get('X-Forwarded-Proto')}|{up.get('Forwarded')}".encode()
        return Response(200, Headers([("Content-Type", "text/plain")]), body)

    async def scenario(site: Site) -> None:
        r, w = await site.open("a.test")
        status, got = await exchange(r, w, b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\n" + CLOSE)
        assert status == 200
        proto, forwarded = got.split(b"\r\n\r\n", 1)[1].decode().split("|")
        assert proto == "https" and "proto=https" in forwarded and "for=127.0.0.1" in forwarded

    try:
        run_site(pki, scenario, handle=handle, access=AccessLog(logger=logger))
    finally:
        logger.removeHandler(handler)
    request = seen[0]
    assert (request.scheme, request.client, request.host) == ("https", "127.0.0.1", "a.test")
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "/p?q=1" in lines[0], lines


def test_drain_closes_tls_connections_like_plain_ones(pki: Path) -> None:
    release = asyncio.Event()

    async def handle(request: Request) -> Response:
        if request.path == "/slow":
            await release.wait()
        return Response(200, Headers([("Content-Type", "text/plain")]), b"done")

    async def scenario(site: Site) -> None:
        # A TCP connection whose handshake ends only after the drain began. Accepted
        # before the connections below are (the kernel's queue is in order).
        late = socket.create_connection(("127.0.0.1", site.port), timeout=10)
        idle_r, idle_w = await site.open("a.test")
        idle_w.write(b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert b"200 OK" in await one_response(idle_r)
        busy_r, busy_w = await site.open("a.test")
        busy_w.write(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await busy_w.drain()
        deadline = asyncio.get_running_loop().time() + 10
        while site.front.in_flight == 0:  # polled: the slow request has reached Front
            assert asyncio.get_running_loop().time() < deadline, "the slow request never came"
            await asyncio.sleep(0.01)
        drain = asyncio.ensure_future(site.front.drain(10.0))
        assert await asyncio.wait_for(idle_r.read(), 10) == b""  # idle: closed at once
        late_r, late_w = await asyncio.open_connection(sock=late, ssl=site.ctx(),
                                                       server_hostname="a.test")
        # closed as soon as it has shaken hands: its request is not served
        assert await exchange(late_r, late_w, b"GET /late HTTP/1.1\r\nHost: a.test\r\n\r\n") \
            == (None, b"")
        release.set()
        answer = await asyncio.wait_for(busy_r.read(), 10)  # busy: answered, then closed
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
        assert await drain is True
        for w in (idle_w, busy_w, late_w):
            w.close()

    assert run_site(pki, scenario, handle=handle).records == []


def test_the_prepared_answers_shortcut_is_asked_over_tls_too(pki: Path) -> None:
    """Prepared https answers carry the https front's fields (test_prepared_tls); the
    connection's scheme keys them, so the TLS listener asks the same shortcut."""
    async def main() -> None:
        front = Front(Twin().handle, scheme="https")
        front.shortcut = hits = HitCache("test")
        tls = FastHTTPServer(front, ssl_context=store_for(pki, "a.test").context)
        assert tls.shortcut is hits and FastHTTPServer(front).shortcut is hits
        front.draining = True  # every answer says close: none prepared
        assert tls.shortcut is None

    asyncio.run(main())


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_request_over_tls_is_refused_as_on_plain_http(pki: Path, case: str) -> None:
    data, _, want = CASES[case]  # the fast wire's answer over plain http

    async def scenario(site: Site) -> None:
        status, got = await exchange(*await site.open("a.test"), data)
        assert status == want, (case, got[:300])
        if want != 200:
            assert all(r.path != "/" or not isinstance(r.body, bytes) for r in site.twin.seen)
        r, w = await site.open("a.test")
        status, got = await exchange(r, w, b"GET /fine HTTP/1.1\r\nHost: a.test\r\n" + CLOSE)
        assert status == 200 and got.endswith(b"ok "), got

    run_site(pki, scenario)


def test_slowloris_over_tls_is_cut_while_others_are_served(pki: Path) -> None:
    async def scenario(site: Site) -> None:
        reader, writer = await site.open("a.test")
        loop = asyncio.get_running_loop()
        cut: asyncio.Future[bytes] = loop.create_future()

        async def watch() -> None:
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                cut.set_result(await reader.read())
            if not cut.done():
                cut.set_result(b"")
        watcher = asyncio.ensure_future(watch())
        head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: " + b"s" * 200
        sent = 0
        for byte in head:  # one TLS record a byte, until the server gives up (bounded)
            if cut.done():
                break
            writer.write(bytes([byte]))
            sent += 1
            r, w = await site.open("a.test")
            assert (await exchange(r, w, b"GET /x HTTP/1.1\r\nHost: a.test\r\n" + CLOSE))[0] \
                == 200  # others are served meanwhile
            await asyncio.wait({cut}, timeout=0.05)  # pace the dribble, not a sync point
        assert cut.done(), "the dribbling client was never cut"
        assert cut.result() == b"" and sent < len(head)
        await watcher
        writer.close()

    run_site(pki, scenario)
