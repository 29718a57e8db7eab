"""The first whole slice with real processes on loopback: origin, node, workers.

Every process is started by the test (`Proc`), reached over real sockets, and
killed by its own PID at the end. Synchronisation is by polling real
conditions (the node's health JSON, a port accepting) with deadlines.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e

APPS = Path(__file__).parent / "apps"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}


class Site:
    """An origin, one node and its workers; `stop()` ends them all."""

    def __init__(self, tmp: Path, routes: tuple[str, ...] = (), grace: float = 20.0,
                 extra: str = "") -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.origin_port = free_port()
        self.http = free_port()
        self.admin = free_port()
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.origin = self.start("origin", ["python", "-m", "origin", str(self.origin_port)])
        config = tmp / "node.toml"
        config.write_text(f"[limits]\ndrain_grace = {grace}\n"
                          "[cache]\nstore = 'files:./never-used'\nmax_object_size = 1048576\n"
                          + extra)
        args = [scale0_bin(), "node", "--config", str(config), "--id", "e2e",
                "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{self.admin}",
                "--workers", self.endpoint, "--cache", "memory",
                "--gossip", f"tcp://127.0.0.1:{free_port()}",
                "--peer", f"tcp://127.0.0.1:{free_port()}"]
        for route in routes:
            args += ["--route", route]
        self.node = self.start("node", args)
        wait_until(self.health, timeout=20, what="the node's admin listener")
        wait_until(lambda: _connects(self.origin_port), timeout=20, what="the origin")

    def start(self, name: str, args: list[str]) -> Proc:
        if args[0] == "python":
            args = [str(Path(scale0_bin()).with_name("python")), *args[1:]]
        proc = Proc(args, self.tmp / f"{name}-{len(self.procs)}.log", env=ENV)
        self.procs.append(proc)
        return proc

    def worker(self, service: str, *source: str, concurrency: int = 4) -> Proc:
        return self.start(f"worker-{service}", [
            scale0_bin(), "worker", "--node", self.endpoint, "--service", service,
            "--concurrency", str(concurrency), *source])

    def upstream_worker(self, service: str = "default") -> Proc:
        return self.worker(service, "--upstream", f"http://127.0.0.1:{self.origin_port}")

    def health(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        try:
            conn.request("GET", "/_scale0/health")
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def workers(self, service: str) -> int:
        return int(self.health()["workers"].get(service, {}).get("workers", 0))

    def wait_workers(self, service: str, count: int) -> None:
        wait_until(lambda: self.workers(service) >= count, timeout=20,
                   what=f"{count} worker(s) for {service}")

    def get(self, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.msg, resp.read()
        finally:
            conn.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextlib.contextmanager
def running(site: Site) -> Iterator[Site]:
    """`site`, its processes' logs printed if the block fails, stopped after it."""
    try:
        yield site
    except BaseException:
        print(site.logs())
        raise
    finally:
        site.stop()


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running(Site(tmp_path_factory.mktemp("site"), routes=("*/py=py", "*/wsgi=wsgi"))) as s:
        s.upstream_worker()
        s.upstream_worker()
        s.worker("py", "--app", "pyapp:handle")
        s.worker("wsgi", "--wsgi", "wsgiapp:app")
        s.wait_workers("default", 2)
        s.wait_workers("py", 1)
        s.wait_workers("wsgi", 1)
        yield s


def test_http_upstream_workers_proxy_with_correct_headers(site: Site) -> None:
    status, headers, body = site.get("/echo/x?q=1", headers={
        "X-Request-Id": "e2e-1", "Connection": "keep-alive, X-Drop", "X-Drop": "1",
        "X-Keep": "k"})
    assert status == 200, site.logs()
    doc = json.loads(body)
    seen = {k.lower(): v for k, v in doc["headers"]}
    assert doc["method"] == "GET" and doc["uri"] == "/echo/x?q=1"
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
    assert seen["via"] == "1.1 e2e" and seen["x-request-id"] == "e2e-1"
    assert seen["forwarded"].startswith("for=127.0.0.1;proto=http")
    assert "x-drop" not in seen and seen["x-keep"] == "k"
    assert headers["X-Request-Id"] == "e2e-1" and "1.1 e2e" in headers["Via"]
    status, headers, body = site.get("/cookies")
    assert status == 200 and headers.get_all("Set-Cookie") == ["a=1; Path=/",
                                                               "b=2; Path=/; HttpOnly"]


def test_bodies_and_extension_methods_reach_the_origin(site: Site) -> None:
    payload = os.urandom(300_000)
    for method in ("POST", "PUT", "PROPFIND"):
        status, _, body = site.get("/echo", method=method, body=payload)
        assert status == 200, body
        doc = json.loads(body)
        assert doc["method"] == method and doc["body_len"] == len(payload)
    status, _, body = site.get("/big?kib=512")
    assert status == 200 and len(body) == 512 * 1024
    status, _headers, body = site.get("/echo", method="HEAD")
    assert status == 200 and body == b""


def test_python_api_worker(site: Site) -> None:
    status, headers, body = site.get("/py/thing?a=b", method="POST", body=b"12345")
    assert status == 200, body
    doc = json.loads(body)
    assert doc == {"api": "python", "method": "POST", "target": "/py/thing?a=b", "body_len": 5,
                   "via": "1.1 e2e", "xff": "127.0.0.1"}
    assert headers.get_all("Set-Cookie") == ["p=1", "q=2"]


def test_wsgi_worker(site: Site) -> None:
    status, headers, body = site.get("/wsgi/app?x=1", method="PUT", body=b"abc")
    assert status == 200, body
    doc = json.loads(body)
    assert (doc["api"], doc["method"], doc["path"], doc["query"], doc["body_len"]) == (
        "wsgi", "PUT", "/wsgi/app", "x=1", 3)
    assert headers.get_all("Set-Cookie") == ["w=1", "v=2"]


def test_a_long_header_value_or_target_that_the_front_takes_reaches_the_origin(
        site: Site) -> None:
    """A 20 KiB cookie or query string fits the default 32 KiB head the front accepts: the
    worker takes it too (it dropped any string over 16 KiB, and the client waited for the
    deadline, then got a 504)."""
    cookie = "c=" + "x" * 20_000
    status, _, body = site.get("/echo/long", headers={"Cookie": cookie})
    assert status == 200, body
    assert ["Cookie", cookie] in json.loads(body)["headers"]
    target = "/echo/long?q=" + "y" * 20_000
    status, _, body = site.get(target)
    assert status == 200 and json.loads(body)["uri"] == target, body[:200]
    many = {f"X-Many-{i}": "v" for i in range(300)}  # more than the 256 fields it took
    status, _, body = site.get("/echo/many", headers=many)
    assert status == 200, body
    assert sum(name.startswith("X-Many-") for name, _ in json.loads(body)["headers"]) == 300


def test_python_and_wsgi_answers_are_dated(site: Site) -> None:
    """RFC 9110 §6.6.1: the origin dates its answers, as gunicorn did for a Flask app
    behind nginx; `--app` and `--wsgi` workers are that origin."""
    for path in ("/py/dated", "/wsgi/dated"):
        before = time.time()
        status, headers, _ = site.get(path)
        assert status == 200
        date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        assert before - 1 <= date <= time.time() + 1, (path, headers["Date"])


def test_random_frames_at_the_worker_socket_do_not_hurt(site: Site) -> None:
    rng = random.Random(int(os.environ.get("SCALE0_E2E_SEED", "1234")))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(site.endpoint)
    try:
        for _ in range(300):
            frames = [rng.randbytes(rng.choice([0, 1, 5, 40, 2000]))
                      for _ in range(rng.randint(1, 4))]
            sock.send_multipart(frames)
    finally:
        sock.close()
    with socket.create_connection(("127.0.0.1", int(site.endpoint.rsplit(":", 1)[1]))) as raw:
        raw.sendall(rng.randbytes(4096))  # not even ZMTP
    for _ in range(20):
        status, _, _ = site.get("/hello")
        assert status == 200, site.logs()
    assert site.node.alive()


def test_kill_9_a_worker_during_a_stream_of_gets(tmp_path: Path) -> None:
    with running(Site(tmp_path)) as s:
        first = s.upstream_worker()
        s.upstream_worker()
        s.wait_workers("default", 2)
        failures: list[str] = []
        done = 0
        lock = threading.Lock()
        killed = threading.Event()

        def client() -> None:
            nonlocal done
            conn = http.client.HTTPConnection("127.0.0.1", s.http, timeout=30)
            for i in range(400):  # bounded in count; each GET bounded by the timeout
                try:
                    conn.request("GET", f"/slow?ms=5&i={i}")
                    resp = conn.getresponse()
                    if resp.read() != b"slow done" or resp.status != 200:
                        failures.append(f"{i}: {resp.status}")
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(f"{i}: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", s.http, timeout=30)
                with lock:
                    done += 1
                if done >= 150 and not killed.is_set():
                    killed.wait(30)  # let the kill land while GETs are in flight
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: done >= 100, timeout=30, what="GETs flowing")
        first.kill9()
        killed.set()
        for t in threads:
            t.join(60)
        assert not failures, failures[:5]
        assert done == 1600


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    with running(Site(tmp_path, grace=20.0)) as s:
        s.upstream_worker()
        s.wait_workers("default", 1)
        assert _status(s.admin, "/_scale0/ready") == 200
        results: list[tuple[int, bytes]] = []

        def slow(i: int) -> None:
            status, _, body = s.get(f"/slow?ms=2000&i={i}")  # distinct: no coalescing
            results.append((status, body))

        threads = [threading.Thread(target=slow, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: s.health()["workers"]["default"]["in_flight"] == 3, timeout=20,
                   what="three requests in flight")
        s.node.signal(signal.SIGTERM)
        wait_until(lambda: _status(s.admin, "/_scale0/ready") == 503, timeout=10,
                   what="readiness to turn 503 while draining")
        wait_until(lambda: not _connects(s.http), timeout=10, what="the listener to close")
        assert len(results) < 3  # the slow requests were still in flight
        for t in threads:
            t.join(30)
        assert results == [(200, b"slow done")] * 3
        assert s.node.popen.wait(20) == 0
        assert "stopped" in s.node.output()


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Site]:
    """A node of its own, no worker yet; a request may wait 1 s for one."""
    with running(Site(tmp_path, extra="[workers]\ndefault_timeout = 1.0\n")) as s:
        yield s


def test_default_service_whose_last_worker_left_still_serves_its_cache(bare: Site) -> None:
    """The quick start's `--service default` worker restarted (a deploy, a crash): what is
    cached is still served, and a miss is a 503 to retry — not a 404 "no 'default'
    service" for every URL until the app is back."""
    # A node with no `default` service at all says so (404) once its start-up window,
    # where it waits for the workers a restart lost, is over.
    wait_until(lambda: bare.get("/probe")[0] == 404, timeout=30, what="the start-up window")
    worker = bare.worker("default", "--app", "migrateapps:handle")
    bare.wait_workers("default", 1)
    gzip = {"Accept-Encoding": "gzip"}  # the answer varies on it: no prepared fast-wire hit
    status, headers, body = bare.get("/page", headers=gzip)
    assert (status, headers["X-Cache"], body) == (200, "MISS", b"cached /page\n")
    assert bare.get("/page", headers=gzip)[1]["X-Cache"] == "HIT"

    assert worker.terminate() == 0
    wait_until(lambda: bare.workers("default") == 0, timeout=20, what="the worker gone")
    status, headers, body = bare.get("/page", headers=gzip)
    assert (status, headers["X-Cache"], body) == (200, "HIT", b"cached /page\n"), body
    began = time.monotonic()
    status, headers, body = bare.get("/not-cached")
    assert status == 503 and headers["Retry-After"], (status, body)
    # ... within `[workers] default_timeout` (1 s here), not the built-in 30 s.
    assert time.monotonic() - began < 10

    bare.worker("default", "--app", "migrateapps:handle")
    bare.wait_workers("default", 1)
    assert bare.get("/not-cached")[0] == 200


def test_wsgi_streamed_answer_reaches_the_client_while_the_app_is_still_producing(
        bare: Site, tmp_path: Path) -> None:
    """PEP 3333: a server must not delay a block the app yielded. A Flask view that
    streams (server-sent events, progress) is seen chunk by chunk, as under gunicorn."""
    bare.worker("default", "--wsgi", "migrateapps:stream_app")
    bare.wait_workers("default", 1)
    gate = tmp_path / "next-event"
    with socket.create_connection(("127.0.0.1", bare.http), timeout=10) as sock:
        sock.sendall(f"GET /events?gate={gate} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        got = b""
        while b"first\n" not in got:  # the socket's timeout bounds this: 10 s
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 "), got
        assert b"second" not in got
        gate.touch()  # the app's next event: only now does it yield the rest
        while not got.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
    assert b"second\n" in got


def test_a_flask_304_without_last_modified_revalidates_the_entry(bare: Site) -> None:
    """Werkzeug drops Last-Modified from 304s: the 304 to the cache's If-Modified-Since
    still refreshes the stored answer (one origin request, not a 304 then a full GET)."""
    bare.worker("default", "--wsgi", "migrateapps:lm_app")
    bare.wait_workers("default", 1)
    status, headers, body = bare.get("/report")
    assert (status, headers["X-Cache"], body) == (200, "MISS", b"full answer 1\n")
    status, headers, body = bare.get("/report")
    assert (status, headers["X-Cache"], body) == (200, "REVALIDATED", b"full answer 1\n")
    assert headers["X-Served"] == "2"  # the 304's own fields refreshed the entry

