"""The operator's surface with real processes: static files, an in-node app, metrics,
SIGHUP reload under traffic, SIGTERM drain, --check-config and the JSON access log.

One node (`--config` file with [services.NAME] tables, a static mount, an in-node
app, a JSON access log in a file) and Python-API workers for two services, blue
and green, each answering with its own name. Every process is started here and
killed by its PID; synchronisation is by polling real conditions with deadlines.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e

APPS = Path(__file__).parent / "apps"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}
FINGERPRINTED = "app.3f9a1c2b.js"


def node_config(tmp: Path, reload_service: str, grace: float = 20.0) -> str:
    return f"""
id = "op"
route = ["reload.test={reload_service}"]
static = ["/static={tmp / 'public'}"]
app = "inapp_demo:routes"
log_format = "json"
access_log_file = "{tmp / 'access.log'}"
[limits]
drain_grace = {grace}
[cache]
store = "memory"
[services.blue]
routes = ["blue.test"]
[services.green]
routes = ["green.test"]
timeout = 15.0
"""


class Site:
    """One node and a worker each for blue and green."""

    def __init__(self, tmp: Path, grace: float = 20.0) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        public = tmp / "public"
        public.mkdir(exist_ok=True)
        (public / "index.html").write_text("<h1>hello</h1>\n" * 20)
        (public / FINGERPRINTED).write_text("console.log('fingerprinted');\n")
        (tmp / "secret.txt").write_text("not for clients\n")
        self.config = tmp / "node.toml"
        self.config.write_text(node_config(tmp, "blue", grace))
        self.http, self.admin = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.node = self.start("node", [
            scale0_bin(), "node", "--config", str(self.config),
            "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{self.admin}",
            "--workers", self.endpoint, "--gossip", f"tcp://127.0.0.1:{free_port()}",
            "--peer", f"tcp://127.0.0.1:{free_port()}", "--gossip-preset", "local"])
        for colour in ("blue", "green"):
            self.start(f"worker-{colour}", [
                scale0_bin(), "worker", "--node", self.endpoint, "--service", colour,
                "--concurrency", "8", "--app", f"svcapp:{colour}"])
        wait_until(lambda: self.status("/_scale0/ready", admin=True) == 200, timeout=20,
                   what="the node to be ready")
        wait_until(self.workers_ready, timeout=20, what="both workers")

    def start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(args, self.tmp / f"{name}.log", env=ENV, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def workers_ready(self) -> bool:
        status, _, body = self.get("/_scale0/health", admin=True)
        services = json.loads(body).get("workers", {}) if status == 200 else {}
        return all(services.get(c, {}).get("workers", 0) >= 1 for c in ("blue", "green"))

    def get(self, path: str, host: str = "blue.test", admin: bool = False,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin if admin else self.http,
                                          timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def status(self, path: str, admin: bool = False) -> int:
        return self.get(path, admin=admin)[0]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("operator"))
    try:
        yield s
    finally:
        s.stop()


def test_static_files(site: Site) -> None:
    status, headers, body = site.get("/static/index.html")
    assert status == 200 and body.startswith(b"<h1>hello</h1>")
    etag = headers["etag"]
    assert site.get("/static/index.html", headers={"If-None-Match": etag})[0] == 304
    status, headers, body = site.get("/static/index.html", headers={"Range": "bytes=0-3"})
    assert (status, body, headers["content-range"]) == (206, b"<h1>", f"bytes 0-3/{20 * 15}")
    _, headers, _ = site.get(f"/static/{FINGERPRINTED}")
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers[
        "cache-control"]
    _, headers, _ = site.get("/static/index.html")
    assert "immutable" not in headers["cache-control"]
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt",
                 "/static/%2E%2E%2Fsecret.txt", "/static/..%2fsecret.txt"):
        status, _, body = site.get(path)
        assert status == 404 and b"not for clients" not in body, path


def test_in_node_app(site: Site) -> None:
    status, _, body = site.get("/_app/hello?name=op")
    assert status == 200 and json.loads(body) == {"inapp": True, "name": "op"}


def test_metrics_count_the_hits_and_misses_we_caused(site: Site) -> None:
    def count(outcome: str) -> float:
        _, _, text = site.get("/_scale0/metrics", admin=True)
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith("scale0_requests_total{") and 'service="green"' in line \
                    and f'outcome="{outcome}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before_miss, before_hit = count("local"), count("hit")
    status, headers, _ = site.get("/cached?m=1", host="green.test")
    assert status == 200 and "miss" in headers["cache-status"].lower()
    for _ in range(3):
        status, _, body = site.get("/cached?m=1", host="green.test")
        assert status == 200 and json.loads(body)["service"] == "green"
    assert count("local") == before_miss + 1  # the miss, served by a local worker
    assert count("hit") == before_hit + 3


def test_sighup_reload_under_traffic_switches_the_route(site: Site) -> None:
    """A keep-alive client loop runs while reload.test moves from blue to green."""
    assert json.loads(site.get("/x", host="reload.test")[2])["service"] == "blue"
    seen: list[tuple[int, str]] = []
    sockets: set[int] = set()
    errors: list[BaseException] = []
    switched = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", site.http, timeout=10)
        try:
            for i in range(2000):  # bounded: stops early once green answers 50 times
                conn.request("GET", f"/r{i}", headers={"Host": "reload.test"})
                resp = conn.getresponse()
                body = resp.read()
                sockets.add(id(conn.sock))
                colour = json.loads(body)["service"] if resp.status == 200 else "?"
                seen.append((resp.status, colour))
                if sum(1 for _, c in seen if c == "green") >= 50:
                    return
                if len(seen) == 20:
                    switched.set()  # traffic is flowing: now reload
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            switched.set()
            conn.close()

    thread = threading.Thread(target=client)
    thread.start()
    assert switched.wait(20)
    site.config.write_text(node_config(site.tmp, "green"))
    site.node.signal(signal.SIGHUP)
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    assert all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:5]
    colours = [c for _, c in seen]
    first_green = colours.index("green")
    assert set(colours[:first_green]) == {"blue"} and set(colours[first_green:]) == {"green"}
    assert len(sockets) == 1, "the client's connection was never dropped"
    wait_until(lambda: "SIGHUP: reloaded" in site.node.output(), timeout=10, what="reload log")


def test_sighup_refuses_a_bad_config_and_keeps_the_old(site: Site) -> None:
    good = site.config.read_text()
    try:
        site.config.write_text(good + '\n[services.broken]\noverflow = "sideways"\n')
        site.node.signal(signal.SIGHUP)
        wait_until(lambda: "config refused" in site.node.output(), timeout=10,
                   what="the refusal in the log")
        # It names the file and the line, as --check-config does.
        line = len(good.splitlines()) + 3  # the blank line, the table, then the key
        assert f"{site.config}:{line}: " in site.node.output(), site.node.output()[-2000:]
        site.config.write_text(good.replace('id = "op"', 'id = "renamed"'))
        site.node.signal(signal.SIGHUP)
        wait_until(lambda: "needs a restart: id" in site.node.output(), timeout=10,
                   what="the restart notice")
        assert site.get("/_app/hello")[0] == 200 and site.node.alive()
    finally:
        site.config.write_text(good)


def test_json_access_log(site: Site) -> None:
    site.get("/static/index.html?al=1", headers={"Authorization": "Bearer s3cret"})

    def line() -> dict[str, Any] | None:
        for text in (site.tmp / "access.log").read_text().splitlines():
            rec = json.loads(text)
            if rec["target"] == "/static/index.html?al=1":
                return dict(rec)
        return None

    rec = wait_until(line, timeout=10, what="the access line")
    assert rec["status"] == 200 and rec["method"] == "GET" and rec["client"] == "127.0.0.1"
    assert rec["node"] == "op" and rec["request_id"] and rec["bytes"] == 20 * 15
    assert {"time", "duration_ms", "outcome", "worker"} <= set(rec)
    assert "s3cret" not in (site.tmp / "access.log").read_text()


def test_check_config(site: Site, tmp_path: Path) -> None:
    ok = subprocess.run([scale0_bin(), "node", "--check-config", str(site.config)],
                        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=60,
                        check=False)
    assert ok.returncode == 0 and ": ok" in ok.stdout, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\n\n[services.www]\nroutes = ["www.test"]\ntimeout = "soon"\n')
    out = subprocess.run([scale0_bin(), "node", "--check-config", str(bad)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith(f"{bad}:5: [services.www]: 'timeout' must be a number")


def test_sigterm_drains_a_slow_request(tmp_path: Path) -> None:
    s = Site(tmp_path, grace=20.0)
    try:
        result: list[tuple[int, bytes]] = []

        def slow() -> None:
            status, _, body = s.get("/slow?ms=3000", host="green.test")
            result.append((status, body))

        thread = threading.Thread(target=slow)
        thread.start()
        wait_until(lambda: _in_flight(s), timeout=10, what="the slow request to be in flight")
        s.node.signal(signal.SIGTERM)
        wait_until(lambda: s.status("/_scale0/ready", admin=True) == 503, timeout=10,
                   what="readiness to turn 503 while the slow request is in flight")
        thread.join(20)
        assert result and result[0][0] == 200 and json.loads(result[0][1])["service"] == "green"
        assert s.node.popen.wait(30) == 0
    finally:
        s.stop()


def _in_flight(s: Site) -> bool:
    _, _, body = s.get("/_scale0/health", admin=True)
    green = json.loads(body).get("workers", {}).get("green", {})
    return int(green.get("in_flight", 0)) >= 1
