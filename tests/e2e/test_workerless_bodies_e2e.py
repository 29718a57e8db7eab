"""Large bodies at a node with no worker of its own (real processes).

A has no worker; B has one (`countapp`, which records each request it starts). Found by
running them: an upload the front door streams (>= 64 KiB) was never forwarded, so at A
it waited in a local queue nobody serves and the client was cut off after 30 s; and an
answer too large for one peer message was refused by B as if B had failed, so A opened
B's breaker and asked again and again (the origin ran a 70 MiB GET eight times) until
the client gave up. Now the upload is read (up to the forward limit) and forwarded, a
larger one is a 413 at once, and a too-large answer is a 502 at once, run once, with B
still in rotation.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.procs import wait_until
from testkit.workerlesspair import workerless_pair

from node.overflow import MAX_FORWARD_BODY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Well inside the 30 s deadline: the old answers came at the deadline or never.
CLIENT_TIMEOUT = 15.0


def _call(node: MeshNode, method: str, path: str, body: bytes | None = None
          ) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.http, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers={"Host": "app.test"})
        resp = conn.getresponse()
        return resp.status, str(resp.getheader("X-Scale0-Node", "")), resp.read()
    finally:
        conn.close()


class Site:
    def __init__(self, a: MeshNode, count: Path) -> None:
        self.a, self.count = a, count

    def runs(self, target: str) -> int:
        return sum(line.split(" ")[1] == target for line in self.count.read_text().splitlines())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    count = tmp_path / "count.txt"
    count.write_text("")
    with workerless_pair(tmp_path, "countapp:handle", env={"COUNT_FILE": str(count)}) as (a, _, _):
        wait_until(lambda: _call(a, "GET", "/warm")[0] == 200, timeout=30, what="a forwarding")
        yield Site(a, count)


def test_a_streamed_upload_is_forwarded_once(site: Site) -> None:
    status, node, body = _call(site.a, "POST", "/up", b"u" * (10 << 20))
    assert (status, node[:2], body) == (200, "b;", b"done POST /up\n")
    assert site.count.read_text().count("POST /up 10485760\n") == 1


def test_an_upload_over_the_forward_limit_is_a_413_at_once(site: Site) -> None:
    status, node, body = _call(site.a, "POST", "/huge", b"h" * (MAX_FORWARD_BODY + 1))
    assert status == 413 and node.startswith("a;"), (status, body)
    assert b"no worker here serves 'default'" in body
    assert site.runs("/huge") == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_answer_too_large_to_forward_is_a_502_at_once_and_run_once(
        site: Site, method: str) -> None:
    target = f"/big-{method}?kib=70000"
    status, node, body = _call(site.a, method, target, b"p" if method == "POST" else None)
    assert status == 502 and node.startswith("a;"), (status, body[:200])
    assert b"larger than a forwarded answer may be" in body
    assert site.runs(target) == 1
    # B served it and is healthy: its breaker stayed shut, the next request goes there.
    after = [_call(site.a, "GET", f"/after/{i}")[:2] for i in range(6)]
    assert after == [(200, "b; dc=default")] * 6
