"""The cache and coalescing with real processes: a node, an upstream worker, a counting origin.

The origin is a real HTTP server in this test process (a thread) that takes
300 ms per answer and counts what reaches it. 200 concurrent identical GETs for
a cacheable URL reach it exactly once; for a `private` URL all 200 reach it and
several are in flight at the same moment — nobody waits behind anybody.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from testkit.origin import CountingOrigin
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = pytest.mark.e2e

N = 200


def _answer(path: str) -> tuple[str, bytes]:
    cc = "private, max-age=60" if path.startswith("/private") else "max-age=60"
    return cc, f"answer for {path}".encode()


class Node:
    def __init__(self, tmp: Path, origin_port: int) -> None:
        self.http, self.admin = free_port(), free_port()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.procs = [
            Proc(
                [
                    scale0_bin(),
                    "node",
                    "--id",
                    "c1",
                    "--http",
                    f"127.0.0.1:{self.http}",
                    "--admin",
                    f"127.0.0.1:{self.admin}",
                    "--workers",
                    endpoint,
                    "--gossip",  # free ports, never the defaults another process may hold
                    f"tcp://127.0.0.1:{free_port()}",
                    "--peer",
                    f"tcp://127.0.0.1:{free_port()}",
                    "--cache",
                    "memory",
                ],
                tmp / "node.log",
            ),
        ]
        wait_until(self.health, timeout=20, what="the node's admin listener")
        for i in range(2):
            self.procs.append(
                Proc(
                    [
                        scale0_bin(),
                        "worker",
                        "--node",
                        endpoint,
                        "--service",
                        "default",
                        "--concurrency",
                        "128",
                        "--upstream",
                        f"http://127.0.0.1:{origin_port}",
                    ],
                    tmp / f"worker{i}.log",
                )
            )
        wait_until(
            lambda: int(self.health()["workers"].get("default", {}).get("workers", 0)) >= 2,
            timeout=20,
            what="two workers",
        )

    def health(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        try:
            conn.request("GET", "/_scale0/health")
            return dict(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=60)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.getheader("X-Cache") or "", resp.read()
        finally:
            conn.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, CountingOrigin]]:
    origin = CountingOrigin(_answer)
    node = Node(tmp_path_factory.mktemp("cache-e2e"), origin.port)
    try:
        yield node, origin
    except BaseException:
        print(node.logs())
        raise
    finally:
        node.stop()
        origin.close()


def burst(node: Node, path: str) -> list[tuple[int, str, bytes]]:
    barrier = threading.Barrier(N)

    def one(_: int) -> tuple[int, str, bytes]:
        barrier.wait(timeout=30)  # start together
        return node.get(path)

    with ThreadPoolExecutor(max_workers=N) as pool:
        return list(pool.map(one, range(N)))


def test_200_concurrent_gets_reach_the_origin_once(mesh: tuple[Node, CountingOrigin]) -> None:
    node, origin = mesh
    results = burst(node, "/shared")
    assert all(status == 200 and body == b"answer for /shared" for status, _, body in results), (
        node.logs()
    )
    assert origin.counts["/shared"] == 1, node.logs()
    kinds = Counter(x for _, x, _ in results)
    assert kinds["MISS"] == 1 and kinds["COALESCED"] + kinds["HIT"] == N - 1, kinds
    assert node.get("/shared")[1] == "HIT"


def test_private_answers_are_not_serialised(mesh: tuple[Node, CountingOrigin]) -> None:
    node, origin = mesh
    results = burst(node, "/private")
    assert all(status == 200 for status, _, _ in results), node.logs()
    assert origin.counts["/private"] == N
    # Released waiters fetch in parallel: many were at the origin at the same moment.
    assert origin.max_in_flight["/private"] >= 10, origin.max_in_flight
