"""`scale0 node --https` with two sites chosen by SNI, certificates swapped by SIGHUP
without dropping an open connection, http → https redirect and HSTS from the config."""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest
from testkit.pki import make_ca, make_leaf
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]


def _peer_ou(port: int, host: str, ca: Path) -> str:
    """The OU of the certificate the node presents for SNI name `host`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        subject = dict(x[0] for x in tls.getpeercert()["subject"])
        return str(subject["organizationalUnitName"])


def test_sni_reload_redirect_and_hsts(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    live = {}
    for host in ("a.test", "b.test"):  # the files the node reads; replaced before SIGHUP
        cert, key = make_leaf(tmp_path, host, "v1")
        live[host] = (tmp_path / f"{host}.pem", tmp_path / f"{host}.key")
        shutil.copy(cert, live[host][0])
        shutil.copy(key, live[host][1])
    http_port, https_port, admin = free_port(), free_port(), free_port()
    public = tmp_path / "public"
    public.mkdir()
    (public / "page.txt").write_text("a static page\n")
    config = tmp_path / "node.toml"
    config.write_text(
        f'tls_cert = ["{live["a.test"][0]}", "{live["b.test"][0]}"]\n'
        f'tls_key = ["{live["a.test"][1]}", "{live["b.test"][1]}"]\n'
        '[https_hosts."a.test"]\nredirect = true\nhsts_max_age = 600\n')
    node = Proc([scale0_bin(), "node", "--config", str(config), "--id", "tls",
                 "--http", f"127.0.0.1:{http_port}", "--https", f"127.0.0.1:{https_port}",
                 "--admin", f"127.0.0.1:{admin}", "--workers", f"tcp://127.0.0.1:{free_port()}",
                 "--gossip", f"tcp://127.0.0.1:{free_port()}",
                 "--peer", f"tcp://127.0.0.1:{free_port()}", "--cache", "off",
                 "--app", "node.demo:demo_app", "--static", f"/s={public}"],
                tmp_path / "node.log")
    try:
        wait_until(lambda: _peer_ou(https_port, "a.test", ca) or not node.alive(), timeout=30,
                   what="the https listener")
        assert node.alive(), node.output()
        wait_until(lambda: f" https=127.0.0.1:{https_port} " in node.output(), timeout=10,
                   what="the https listener in the ready line")
        assert _peer_ou(https_port, "a.test", ca) == "v1"
        assert _peer_ou(https_port, "b.test", ca) == "v1"
        # plain http for a.test is redirected; https answers carry HSTS
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        plain.request("GET", "/page?x=1", headers={"Host": "a.test"})
        resp = plain.getresponse()
        resp.read()
        assert resp.status == 308
        assert resp.getheader("Location") == f"https://a.test:{https_port}/page?x=1"
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False  # dialled by address: no SNI, the first site answers
        kept = http.client.HTTPSConnection("127.0.0.1", https_port, timeout=5, context=ctx)
        kept.request("GET", "/inapp", headers={"Host": "a.test"})
        r = kept.getresponse()
        assert r.status == 200 and b"in-node" in r.read()
        kept.request("GET", "/s/page.txt", headers={"Host": "a.test"})
        r = kept.getresponse()
        assert r.read() == b"a static page\n"
        assert r.getheader("Strict-Transport-Security") == "max-age=600"
        # new certificates, SIGHUP: new handshakes get them, the open connection lives on
        for host in ("a.test", "b.test"):
            cert, key = make_leaf(tmp_path, host, "v2")
            shutil.copy(cert, live[host][0])
            shutil.copy(key, live[host][1])
        node.signal(signal.SIGHUP)
        wait_until(lambda: _peer_ou(https_port, "a.test", ca) == "v2", timeout=10,
                   what="the reloaded certificate")
        assert _peer_ou(https_port, "b.test", ca) == "v2"
        kept.request("GET", "/inapp", headers={"Host": "a.test"})
        r = kept.getresponse()
        assert r.status == 200 and b"in-node" in r.read()
        kept.close()
    finally:
        node.stop()
