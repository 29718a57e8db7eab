"""Secret query values never reach a real node's access log, and the operator's list rules.

Two `scale0 node` processes serve a static folder, each with an access log file: one
with the default names (text lines), one whose file lists `password` but whose
`--access-log-redact user,token` flag replaces that list (JSON lines). Each request is
sent twice: the first is answered through the pipeline, the repeat by the fast wire's
prepared static answer, which writes its own line. Processes are killed by their PIDs;
synchronisation is by polling the log files with deadlines.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.procs import Gone, Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e

QUERY = "user=bob&password=hunter2;lang=en&token=t0k&page=2"


class Node:
    def __init__(self, tmp: Path, name: str, toml: str, *flags: str) -> None:
        self.log = tmp / f"{name}-access.log"
        config = tmp / f"{name}.toml"
        config.write_text(f'access_log_file = "{self.log}"\nstatic = ["/s={tmp / "public"}"]\n'
                          + toml)
        self.http, self.admin = free_port(), free_port()
        self.proc = Proc([scale0_bin(), "node", "--config", str(config), "--id", name,
                          "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{self.admin}",
                          "--workers", f"tcp://127.0.0.1:{free_port()}",
                          "--gossip", f"tcp://127.0.0.1:{free_port()}",
                          "--peer", f"tcp://127.0.0.1:{free_port()}", "--cache", "memory",
                          "--gossip-preset", "local", *flags], tmp / f"{name}.log")

    def get(self, path: str, admin: bool = False) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin if admin else self.http,
                                          timeout=10)
        try:
            conn.request("GET", path, headers={"Host": "www.test"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def ready(self) -> bool:
        if not self.proc.alive():
            raise Gone(self.proc.output())
        return self.get("/_scale0/ready", admin=True) == 200

    def lines(self, count: int) -> list[str] | None:
        """The access lines once there are `count` (written every second)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return lines if len(lines) >= count else None


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("redact")
    (tmp / "public").mkdir()
    (tmp / "public" / "page.txt").write_text("a static page\n")
    started: list[Node] = []
    try:
        started.append(Node(tmp, "defaults", ""))
        started.append(Node(tmp, "flagged", 'log_format = "json"\n'
                                            'access_log_redact = ["password"]\n',
                            "--access-log-redact", "user,token"))
        for node in started:
            wait_until(node.ready, timeout=30, what=f"{node.log.stem} to be ready")
        yield started[0], started[1]
    finally:
        for node in started:
            node.proc.stop()


def test_the_default_names_hide_password_and_keep_the_rest(nodes: tuple[Node, Node]) -> None:
    node = nodes[0]
    for _ in range(2):
        assert node.get(f"/s/page.txt?{QUERY}") == 200
    assert node.get("/s/missing.txt?password=hunter2&x=1") == 404
    lines = wait_until(lambda: node.lines(3), timeout=15, what="three access lines")
    shown = "user=bob&password=***;lang=en&token=***&page=2"
    assert [line.split('"')[1] for line in lines] == [
        f"GET /s/page.txt?{shown}", f"GET /s/page.txt?{shown}",
        "GET /s/missing.txt?password=***&x=1"]
    assert " 200 " in lines[0] and " 404 " in lines[2]
    assert "hunter2" not in node.log.read_text() and "t0k" not in node.log.read_text()


def test_the_flag_replaces_the_list(nodes: tuple[Node, Node]) -> None:
    node = nodes[1]
    for _ in range(2):
        assert node.get(f"/s/page.txt?{QUERY}") == 200
    lines = wait_until(lambda: node.lines(2), timeout=15, what="two access lines")
    records = [json.loads(line) for line in lines]
    # user and token from the flag; password, listed only in the file, is shown
    assert [r["target"] for r in records] == [
        "/s/page.txt?user=***&password=hunter2;lang=en&token=***&page=2"] * 2
    assert [r["status"] for r in records] == [200, 200]
