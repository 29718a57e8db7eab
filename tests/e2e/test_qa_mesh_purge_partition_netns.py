"""A purge issued while the other datacenter is cut off reaches it once the link heals
(real nodes in network namespaces, testkit.netns).

One node per datacenter (`local` gossip preset, memory cache), each with its own worker
whose answers are cacheable for ten minutes. West caches /doc; the router then drops
everything between the datacenters for longer than `dead_retention`, so each side
declares the other dead and forgets it. East purges /doc meanwhile. README: "purges reach
every node reliably". Before, a member forgotten and heard again was read from its next
reliable envelope on (its stream started afresh), so the purge published during the cut
was never delivered: west served the purged answer from its cache for its whole max-age.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.netns import Datacenter, TwoDatacenters, two_datacenters, unavailable_reason
from testkit.procs import Proc, scale0_bin, wait_until
from testkit.workerlesspair import APPS

from gossip.config import GossipConfig

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.timeout(120)]

CFG = GossipConfig.local()
HOST = "www.example.test"
CUT = [["INPUT", "-i", "re"], ["INPUT", "-i", "rw"], ["FORWARD", "-i", "re"],
       ["FORWARD", "-i", "rw"]]

# Run inside a namespace: METHOD HOST PORT PATH HEADERS_JSON -> JSON {status, body}.
CLIENT = r"""
import http.client, json, sys
method, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
headers = json.loads(sys.argv[5])
body = headers.pop("_body", None)
conn = http.client.HTTPConnection(host, port, timeout=10)
conn.request(method, path, body=body, headers=headers)
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "body": resp.read().decode(errors="replace")}))
"""


class Pair:
    def __init__(self, topo: TwoDatacenters, tmp: Path) -> None:
        self.topo, self.tmp = topo, tmp
        self.east = MeshNode(tmp, "east-1", dc="east", host=topo.east.address, preset="local",
                             extra=["--cache", "memory"], prefix=topo.east.prefix())
        self.west = MeshNode(tmp, "west-1", dc="west", seed=self.east.peer,
                             host=topo.west.address, preset="local",
                             extra=["--cache", "memory"], prefix=topo.west.prefix())
        self.workers: list[Proc] = []

    def dc(self, node: MeshNode) -> Datacenter:
        return self.topo.east if node is self.east else self.topo.west

    def start(self) -> None:
        path = os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))
        for node in (self.east, self.west):
            node.start()
            self.workers.append(Proc(
                [*self.dc(node).prefix(), scale0_bin(), "worker", "--node", node.workers,
                 "--service", "default", "--concurrency", "4", "--app", "qa_cacheapp:handle"],
                self.tmp / f"worker-{node.name}.log", env={"PYTHONPATH": path}))

    def call(self, node: MeshNode, method: str, path: str, port: int | None = None,
             headers: dict[str, str] | None = None) -> dict[str, object]:
        where = (node.admin_host, port) if port else (node.host, node.http)
        args = [sys.executable, "-c", CLIENT, method, where[0], str(where[1]), path,
                json.dumps(headers or {})]
        return dict(json.loads(self.topo.run(self.dc(node), args, timeout=20).stdout))

    def cached(self, node: MeshNode, path: str) -> object:
        got = self.call(node, "GET", path, headers={"Host": HOST,
                                                    "Cache-Control": "only-if-cached"})
        return got["body"] if got["status"] == 200 else None

    def states(self, node: MeshNode) -> dict[str, str]:
        mesh = json.loads(str(self.call(node, "GET", "/_scale0/mesh", port=node.admin)["body"]))
        return {row["id"]: row["state"] for row in mesh["nodes"]}

    def cut(self, on: bool) -> None:
        for rule in CUT:
            self.topo.run(self.topo.router, ["iptables", "-I" if on else "-D", *rule[:1],
                                             *rule[1:], "-j", "DROP"])

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.west.stop()
        self.east.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with two_datacenters(delay_s=0.0, loss=0.0, log_dir=tmp_path) as topo:
        p = Pair(topo, tmp_path)
        try:
            p.start()
            yield p
        except BaseException:
            print(p.east.log_tail(), p.west.log_tail())
            raise
        finally:
            p.stop()


def test_a_purge_during_a_partition_reaches_the_other_side_after_the_heal(pair: Pair) -> None:
    east, west = pair.east, pair.west
    both = {"east-1": "alive", "west-1": "alive"}
    wait_until(lambda: pair.states(east) == both and pair.states(west) == both, timeout=30,
               interval=0.2, what="east and west alive to each other")
    wait_until(lambda: pair.call(west, "GET", "/doc", headers={"Host": HOST})["status"] == 200,
               timeout=20, interval=0.2, what="west's worker answering")
    cached = pair.cached(west, "/doc")
    assert cached, "west did not cache /doc"
    pair.cut(True)
    try:
        wait_until(lambda: "east-1" not in pair.states(west)
                   and "west-1" not in pair.states(east),
                   timeout=CFG.dead_retention + CFG.detection_bound() + 10, interval=0.2,
                   what="each side forgot the other (past dead_retention)")
        purged = pair.call(east, "POST", "/_scale0/purge", port=east.admin, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "_body": f"url=http%3A%2F%2F{HOST}%2Fdoc"})
        assert purged["status"] == 200, purged
    finally:
        pair.cut(False)
    wait_until(lambda: pair.states(east) == both and pair.states(west) == both, timeout=40,
               interval=0.2, what="one mesh again after the heal")
    healed = time.monotonic()
    wait_until(lambda: pair.cached(west, "/doc") is None, timeout=10, interval=0.2,
               what="the purge made during the cut to reach west")
    print(f"west dropped the purged entry {time.monotonic() - healed:.2f}s after the heal")
