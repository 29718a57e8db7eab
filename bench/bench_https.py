"""`--https` on the fast wire vs on Tornado's HTTPServer, plain http and nginx as references.

In one invocation, wrk -t1 -c50 (keep-alive: a handshake per connection, not per
request) against:
1. the wire layers alone (bench_wire's servers: Front with an in-memory 1 KiB answer,
   the node's TLS settings from node.tls), fast and Tornado, over https and http;
2. `scale0 node --http-server fast` and `tornado`, each with `--https` (one self-signed
   P-256 certificate made by the openssl command line), `--cache memory`, an
   HTTP-upstream worker to the bench origin and `--static` files: a
   cached 1 KiB object (on the fast wire a prepared hit over https as over http, the
   https one with the HSTS field the policy asks for: none here; on Tornado the whole
   request path) and the files: a 1 KiB text page (gzipped on the fly for clients that
   accept it, so prepared per Accept-Encoding choice: wrk sends none) and a 1 KiB image
   (prepared for every client, node/statichits.py);
3. nginx serving the same file over TLS with the same certificate, if installed.
Prints req/s, p50/p99, server CPU µs per request and the ratios.

    python -m bench.bench_https [--seconds 5]
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bench_wire import measure as wire_measure
from bench.procs import Procs, free_port
from bench.tools import HEADER, Nginx, have

TARGETS = {"hit": "/bytes/1024", "static": "/s/page.txt", "image": "/s/logo.png"}


def certificate(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (wrk does not verify)."""
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def ready(url: str) -> None:
    """Poll until `url` answers 200 (over TLS: any certificate, the benchmark made it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    end = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2, context=ctx).read()
            return
        except OSError:  # HTTPError too: 503 until the worker is in
            if time.monotonic() > end:
                raise
            time.sleep(0.05)  # poll a real condition, bounded


def measure(name: str, url: str, pid: int, seconds: int) -> float:
    """req/s of `url` once it answers (bench_wire's row: warm-up, wrk, CPU µs of `pid`)."""
    ready(url)
    return wire_measure(name, url, pid, seconds)[1]


def nginx_https(cert: Path, key: Path, public: Path, seconds: int) -> float | None:
    """nginx serving the static file over TLS with the same certificate, if installed."""
    if not have("nginx"):
        return None
    port = free_port()
    nginx = Nginx(f"server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; "
                  f"ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; "
                  f"location /s/ {{ alias {public}/; }} }}")
    nginx.start()
    try:
        url = f"https://127.0.0.1:{port}{TARGETS['static']}"
        ready(url)  # its worker exists from here on
        pids = nginx.worker_pids()
        assert nginx.proc is not None
        return measure("nginx, https, static", url, pids[0] if pids else nginx.proc.pid,
                       seconds)
    finally:
        nginx.stop()


def run(seconds: int) -> dict[str, float]:
    if not (have("wrk") and have("openssl")):
        print("bench_https needs wrk and openssl: nothing to measure")
        return {}
    work = Path(tempfile.mkdtemp(prefix="scale0-bench-https-"))
    work.chmod(0o755)  # nginx's workers read the page as another user
    procs = Procs()
    rates: dict[str, float] = {}
    try:
        cert, key = certificate(work)
        public = work / "public"
        public.mkdir(mode=0o755)
        for name in ("page.txt", "logo.png"):
            (public / name).write_bytes(b"x" * 1024)
            (public / name).chmod(0o644)
        _, origin = procs.origin()
        print(HEADER)
        for wire in ("fast", "tornado"):  # the wire and Front alone: an in-memory 1 KiB answer
            for scheme in ("https", "http"):
                port = free_port()
                tls = ["--tls-cert", str(cert), "--tls-key", str(key)] if scheme == "https" else []
                proc = procs.start([sys.executable, "-m", "bench.bench_wire", "--serve", wire,
                                    "--port", str(port), *tls])
                rates[f"{wire} {scheme} wire"] = measure(
                    f"{wire} wire alone, {scheme}", f"{scheme}://127.0.0.1:{port}/", proc.pid,
                    seconds)
        for wire in ("fast", "tornado"):
            https = free_port()
            node, http, workers = procs.node(
                "--http-server", wire, "--https", f"127.0.0.1:{https}",
                "--tls-cert", str(cert), "--tls-key", str(key),
                "--cache", "memory", "--static", f"/s={public}")
            procs.worker(workers, "--upstream", f"http://127.0.0.1:{origin}")
            for target, path in TARGETS.items():
                rates[f"{wire} https {target}"] = measure(
                    f"{wire} wire, https, {target}", f"https://127.0.0.1:{https}{path}",
                    node.pid, seconds)
                if wire == "fast":
                    rates[f"fast http {target}"] = measure(
                        f"fast wire, http, {target}", f"http://127.0.0.1:{http}{path}",
                        node.pid, seconds)
        nginx = nginx_https(cert, key, public, seconds)
        if nginx is not None:
            rates["nginx https static"] = nginx
    except subprocess.CalledProcessError as exc:
        print(f"a tool failed: {exc}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for target in ("wire", *TARGETS):
        for a, b in (("fast https", "tornado https"), ("fast https", "fast http"),
                     ("fast https", "nginx https")):
            x, y = rates.get(f"{a} {target}"), rates.get(f"{b} {target}")
            if x and y:
                print(f"{target}: {a} / {b} = {x / y:.2f}x")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    run(args.seconds)


if __name__ == "__main__":
    main()
