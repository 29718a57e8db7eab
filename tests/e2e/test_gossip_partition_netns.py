"""A partition between two datacenters, cut and healed, with real nodes (brief H13).

Two real `scale0 node`s per datacenter (testkit.netns, no added delay or loss so
the `local` preset's timings hold across the relay). Once all four list all four
alive, the router drops every packet between east and west (iptables DROP, both
ways, in INPUT for the relay and FORWARD). Each side must then list the other
side's nodes dead — and its load table must stop routing to them — within the
detection bound plus slack; its own side stays alive. Then the cut is healed:
within a bounded time both sides list all four alive again (no permanent split
brain: the dead are still followed for `dead_follow`, told they are dead when
they speak, and refute). The admin listeners live on each namespace's loopback,
so every poll runs a small reader inside the namespace.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode
from testkit.netns import Datacenter, TwoDatacenters, two_datacenters, unavailable_reason
from testkit.procs import wait_until

from gossip.agent import AgentConfig
from gossip.config import GossipConfig

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PRESET = "local"
CFG = GossipConfig.local()
SLACK = 3.0  # four nodes, a relay, and a python reader per poll on two shared cores
CONVERGE_S = 30.0
CUT_S = 3.0  # the partition lasts this long once both sides saw each other dead
DEAD_S = CFG.detection_bound() + SLACK
# After the heal: TCP and ZeroMQ reconnect (backoff <= 2 s, heartbeats), the dead
# side's beats are answered with Dead, it refutes, the news floods; a digest
# mismatch fetches a snapshot after `digest_grace`. Past `dead_retention` each side
# forgot the other: a node whose seed is lost asks it again within 1.25 x
# `rejoin_beats` intervals (AgentConfig), then the same repair runs.
HEAL_S = (1.25 * AgentConfig().rejoin_beats * CFG.interval + 2.0 + CFG.window_max
          + CFG.digest_grace + CFG.snapshot_cooldown + SLACK)

READER = r"""
import http.client, json, sys
out = {}
for port in json.loads(sys.argv[1]):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        conn.request("GET", "/_scale0/mesh")
        out[port] = {r["id"]: r["state"] for r in json.loads(conn.getresponse().read())["nodes"]}
        conn.close()
    except (OSError, ValueError, KeyError) as exc:
        out[port] = {"error": repr(exc)}
print(json.dumps(out))
"""

CUT = [["INPUT", "-i", "re"], ["INPUT", "-i", "rw"], ["FORWARD", "-i", "re"],
       ["FORWARD", "-i", "rw"]]


class Split:
    def __init__(self, topo: TwoDatacenters, tmp: Path) -> None:
        self.topo = topo

        def node(dc: Datacenter, i: int, seed: str | None) -> MeshNode:
            return MeshNode(tmp, f"{dc.name}-{i}", dc=dc.name, seed=seed, host=dc.address,
                            preset=PRESET, extra=["--cache", "off"], prefix=dc.prefix())

        first = node(topo.east, 1, None)  # everyone's seed: west knows east only through it
        self.nodes = [first, node(topo.east, 2, first.peer), node(topo.west, 1, first.peer),
                      node(topo.west, 2, first.peer)]

    def dcs(self) -> tuple[Datacenter, Datacenter]:
        return self.topo.east, self.topo.west

    def in_dc(self, name: str) -> list[MeshNode]:
        return [n for n in self.nodes if n.dc == name]

    def views(self, dc: Datacenter) -> list[dict[str, str]]:
        ports = json.dumps([n.admin for n in self.in_dc(dc.name)])
        done = self.topo.run(dc, [sys.executable, "-c", READER, ports], timeout=20)
        return list(json.loads(done.stdout).values())

    def sees(self, dc: Datacenter, want: dict[str, str]) -> bool:
        """Every node of `dc` lists each id of `want` in its state."""
        return all(all(v.get(i) == s for i, s in want.items()) for v in self.views(dc))

    def cut(self, on: bool) -> None:
        for rule in CUT:
            self.topo.run(self.topo.router, ["iptables", "-I" if on else "-D", *rule[:1],
                                             *rule[1:], "-j", "DROP"])

    def all_alive(self) -> bool:
        everyone = {n.name: "alive" for n in self.nodes}
        return all(self.sees(dc, everyone) for dc in self.dcs())

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def logs(self) -> str:
        return "\n".join(n.log_tail(2000) for n in self.nodes)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with two_datacenters(delay_s=0.0, loss=0.0, log_dir=tmp_path) as topo:
        s = Split(topo, tmp_path)
        try:
            for n in s.nodes:
                n.start()
            yield s
        except BaseException:
            print(s.logs())
            raise
        finally:
            s.stop()


@pytest.mark.parametrize("hold_s", [CUT_S, CFG.dead_retention + 2.0],
                         ids=["short", "past-retention"])
def test_a_healed_partition_is_one_mesh_again(split: Split, hold_s: float) -> None:
    wait_until(split.all_alive, timeout=CONVERGE_S, interval=0.2, what="four alive everywhere")
    east, west = split.dcs()
    split.cut(True)
    cut_at = time.monotonic()
    for here, there in ((east, west), (west, east)):
        want = {n.name: "dead" for n in split.in_dc(there.name)}
        want |= {n.name: "alive" for n in split.in_dc(here.name)}
        wait_until(lambda h=here, w=want: split.sees(h, w), timeout=DEAD_S, interval=0.1,
                   what=f"{here.name} lists {there.name} dead and itself alive")
    print(f"\npartition: both sides dead to each other after {time.monotonic() - cut_at:.2f}s")
    # The cut holds a while longer: nobody comes back through a dropped link.
    hold_until = time.monotonic() + hold_s
    while time.monotonic() < hold_until:
        for here, there in ((east, west), (west, east)):
            gone = split.views(here)
            assert all(v.get(n.name, "dead") == "dead" for v in gone
                       for n in split.in_dc(there.name)), gone
    split.cut(False)
    healed = time.monotonic()
    try:
        wait_until(split.all_alive, timeout=HEAL_S, interval=0.1,
                   what="one mesh again after the heal")
    except AssertionError:
        print({dc.name: split.views(dc) for dc in split.dcs()})
        raise
    print(f"healed: all alive everywhere after {time.monotonic() - healed:.2f}s "
          f"(bound {HEAL_S:.2f})")
