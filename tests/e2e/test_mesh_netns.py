"""Two datacenters in network namespaces, 40 ms apart with 1% loss: no false deaths (issue 4).

Two real `scale0 node`s per datacenter (testkit.netns: east and west joined
through a router namespace whose relay delays every TCP chunk 40 ms each way
and whose iptables drop 1% of packets). West joins through east's first node.
Once all four list all four alive, a watcher inside each datacenter polls its
two nodes' `/_scale0/mesh` for a bounded run and records every row that is not
alive: there must be none. Then west-2 is killed (kill -9, no LEAVE) and every
other node, on both sides of the WAN, must list it dead within the wan preset's
`detection_bound()` plus slack (8.9 + 2 s; 26.5 s before issue 4's fix): proof
that the watchers would have seen a change, and the WAN detection figure. The
admin listeners live on each namespace's own loopback, which the test process
cannot reach, hence the watchers run inside.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode, gossip_preset_flag
from testkit.netns import TwoDatacenters, two_dcs

from gossip.config import GossipConfig

__all__ = ["two_dcs"]  # the fixture is used by name below

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

RUN_S = 20.0
CONVERGE_S = 60.0
PRESET = "wan" if gossip_preset_flag() else None  # None: the node's default (lan)
_CFG = GossipConfig.wan() if PRESET else GossipConfig.lan()
# The kill -9 at the end shows the watchers do see a node go (the test can fail):
# silence -> doubt -> probe -> suspect, the other observers confirm across the
# WAN, dead after suspicion_min; news crossing the lossy relay may wait for a
# TCP retransmit or two, hence the slack.
DEAD_S = _CFG.detection_bound() + 2.0

# Runs inside one namespace: phase 1 waits (bounded) until every node lists every
# id alive; phase 2 polls for RUN seconds and reports each non-alive sighting.
WATCHER = r"""
import http.client, json, sys, time
ports, ids, converge_s, run_s = json.loads(sys.argv[1]), set(json.loads(sys.argv[2])), \
    float(sys.argv[3]), float(sys.argv[4])

def view(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/_scale0/mesh")
        return {r["id"]: r["state"] for r in json.loads(conn.getresponse().read())["nodes"]}
    finally:
        conn.close()

def views():
    out = {}
    for port in ports:
        try:
            out[port] = view(port)
        except (OSError, ValueError, KeyError) as exc:
            out[port] = {"error": repr(exc)}
    return out

start = time.monotonic()
while True:
    seen = views()
    if all({i for i, s in v.items() if s == "alive"} == ids for v in seen.values()):
        break
    if time.monotonic() - start > converge_s:
        print(json.dumps({"converged": False, "last": {str(k): v for k, v in seen.items()}}))
        sys.exit(0)
    time.sleep(0.1)  # poll period of a watcher; no synchronisation rests on it
converged = time.monotonic() - start
bad, polls, end = [], 0, time.monotonic() + run_s
while time.monotonic() < end:
    for port, v in views().items():
        polls += 1
        odd = {i: s for i, s in v.items() if s != "alive"} | {i: "missing" for i in ids - set(v)}
        if odd:
            bad.append({"t": round(run_s - (end - time.monotonic()), 2), "port": port, "odd": odd})
    time.sleep(0.2)  # poll period of a watcher
print(json.dumps({"converged": True, "converge_s": converged, "polls": polls, "bad": bad[:20]}),
      flush=True)
# Phase 3: the test kills `victim` (argv 5); every other node here must list it dead.
# CLOCK_MONOTONIC is the host's in every network namespace: the test compares.
victim, start = sys.argv[5], time.monotonic()
while time.monotonic() - start < float(sys.argv[6]):
    seen = [v for v in views().values() if "error" not in v]
    if seen and all(v.get(victim) == "dead" for v in seen):
        print(json.dumps({"dead_at": time.monotonic()}), flush=True)
        sys.exit(0)
    time.sleep(0.05)  # poll period of a watcher
print(json.dumps({"dead_at": None, "last": {str(k): v for k, v in views().items()}}))
"""


class Dc2:
    def __init__(self, topo: TwoDatacenters, tmp: Path) -> None:
        self.topo = topo
        self.nodes: list[MeshNode] = []
        seed: str | None = None
        for dc in (topo.east, topo.west):
            for i in (1, 2):
                node = MeshNode(tmp, f"{dc.name}-{i}", dc=dc.name, seed=seed, host=dc.address,
                                preset=PRESET, extra=["--cache", "off"], prefix=dc.prefix())
                seed = seed or node.peer
                self.nodes.append(node)
        for node in self.nodes:
            node.start()

    def in_dc(self, name: str) -> list[MeshNode]:
        return [n for n in self.nodes if n.dc == name]

    def logs(self) -> str:
        return "\n".join(n.log_tail(2000) for n in self.nodes)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def dc2(two_dcs: TwoDatacenters, tmp_path: Path) -> Iterator[Dc2]:
    mesh = Dc2(two_dcs, tmp_path)
    try:
        yield mesh
    except BaseException:
        print(mesh.logs())
        raise
    finally:
        mesh.stop()


def test_no_false_death_across_a_40ms_lossy_wan(dc2: Dc2) -> None:
    ids = json.dumps([n.name for n in dc2.nodes])
    victim = dc2.in_dc("west")[1]
    watchers = {
        dc.name: dc2.topo.popen(
            dc,
            [sys.executable, "-c", WATCHER, json.dumps([n.admin for n in dc2.in_dc(dc.name)]),
             ids, str(CONVERGE_S), str(RUN_S), victim.name, str(DEAD_S + 20)],
            stdout=subprocess.PIPE,
        )
        for dc in (dc2.topo.east, dc2.topo.west)
    }
    reports, deaths = {}, {}
    try:
        for name, proc in watchers.items():
            assert proc.stdout is not None
            reports[name] = json.loads(proc.stdout.readline() or "{}")  # bounded: pytest timeout
        for name, report in reports.items():
            assert report.get("converged"), (name, report, dc2.logs())
        for name, report in reports.items():
            assert report["polls"] >= 2 * RUN_S, (name, report)  # it really watched, both nodes
            assert report["bad"] == [], (name, report)
        assert victim.proc is not None
        killed = time.monotonic()
        victim.proc.kill9()
        for name, proc in watchers.items():
            out, _ = proc.communicate(timeout=DEAD_S + 60)
            deaths[name] = json.loads(out)
    finally:
        for proc in watchers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for name, death in deaths.items():
        assert death["dead_at"] is not None, (name, death)
    took = {name: death["dead_at"] - killed for name, death in deaths.items()}
    print("\nnetns figures: " + ", ".join(
        f"{name}: converged in {r['converge_s']:.2f}s, {r['polls']} polls, 0 non-alive, "
        f"{victim.name} (kill -9) dead at both nodes after {took[name]:.2f}s"
        for name, r in reports.items()))
    for name, t in took.items():
        assert t <= DEAD_S, (name, took, DEAD_S)
