"""Issue 5's overflow scenario across two datacenters in network namespaces.

    east ns: origin (100 ms) <- east-1: 1 worker x concurrency 4
    west ns: origin (100 ms) <- west-1, west-2: 4 workers x concurrency 4 each
             east and west 40 ms apart each way, 1% loss (testkit.netns)

Every process runs inside its datacenter's namespace; each datacenter has its
own origin, as real datacenters have their own backends, so what crosses the
WAN is only the forward between nodes (ZeroMQ over the delaying relay). West
joins through east-1's peer socket.

The test process is outside both namespaces and cannot reach their loopbacks,
so `NetnsCaller` runs callables on a dedicated thread that has entered a
namespace (setns(2) applies to the calling thread only): admin polls and the
load client (`overflowsite.run_load`) run there, on real sockets inside east.
Used by tests/e2e/test_overflow_netns.py and `bench_overflow --netns`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from testkit.meshnodes import MeshNode, unique_port, worker
from testkit.netns import Datacenter, TwoDatacenters
from testkit.overflowsite import EAST_SLOTS, Summary, run_load
from testkit.procs import Proc, wait_until

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000  # linux/sched.h


def _enter(netns: str) -> None:
    """Move the calling thread into network namespace `netns` (made by `ip netns add`)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsCaller:
    """Runs callables on one thread living inside a network namespace."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"in-{netns}",
                                        initializer=_enter, initargs=(netns,))

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 300.0) -> T:
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class NetnsOverflowSite:
    """The scenario's processes, each in its datacenter; `stop()` ends them by PID."""

    def __init__(self, topo: TwoDatacenters, tmp: Path, *, west: bool = True,
                 preset: str | None = "wan", delay_ms: int = 100,
                 east_extra: Sequence[str] = ()) -> None:
        self.topo = topo
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.nodes: list[MeshNode] = []
        self.callers = {dc.name: NetnsCaller(dc.netns) for dc in (topo.east, topo.west)}
        self.path = f"/bytes/512?delay={delay_ms}&nocache=1"
        try:
            self._start(west, preset, east_extra)
        except BaseException:
            self.stop()
            raise

    def _origin(self, dc: Datacenter) -> str:
        port = unique_port()
        self.procs.append(Proc([*dc.prefix(), sys.executable, str(ROOT / "bench" / "origin.py"),
                                "--port", str(port)], self.tmp / f"origin-{dc.name}.log"))
        return f"http://127.0.0.1:{port}"

    def _start(self, west: bool, preset: str | None, east_extra: Sequence[str]) -> None:
        east_dc, west_dc = self.topo.east, self.topo.west
        common = ["--cache", "off"]
        self.east = MeshNode(self.tmp, "east-1", dc="east", host=east_dc.address, preset=preset,
                             extra=[*common, *east_extra], prefix=east_dc.prefix())
        self.west = [MeshNode(self.tmp, f"west-{i}", dc="west", seed=self.east.peer,
                              host=west_dc.address, preset=preset, extra=common,
                              prefix=west_dc.prefix()) for i in (1, 2)] if west else []
        self.nodes = [self.east, *self.west]
        upstream = {"east": self._origin(east_dc)}
        if west:
            upstream["west"] = self._origin(west_dc)
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            wait_until(lambda n=n: self.admin(n, "health"), timeout=60,  # type: ignore[misc]
                       interval=0.1, what=f"{n.name}'s admin listener")
        self.procs.append(worker(self.tmp, self.east, upstream["east"], concurrency=EAST_SLOTS,
                                 prefix=east_dc.prefix()))
        for n in self.west:
            for i in range(4):
                self.procs.append(worker(self.tmp, n, upstream["west"], concurrency=4,
                                         tag=f"-{i}", prefix=west_dc.prefix()))
        for n, count in ((self.east, 1), *((w, 4) for w in self.west)):
            wait_until(lambda n=n, count=count: self.admin(n, "workers_of") >= count,  # type: ignore[misc]
                       timeout=60, interval=0.1, what=f"{count} worker(s) on {n.name}")
        if west:
            wait_until(self.east_sees_west_room, timeout=90, interval=0.2,
                       what="east to see both west nodes alive with 16 slots each")

    def admin(self, node: MeshNode, what: str) -> Any:
        """`node.<what>()` (health, mesh, workers_of ...) called inside the node's namespace."""
        return self.callers[node.dc].call(getattr(node, what), timeout=30)

    @property
    def url(self) -> str:
        return f"http://{self.east.host}:{self.east.http}{self.path}"

    @property
    def sample_url(self) -> str:
        return f"http://127.0.0.1:{self.east.admin}/_scale0/health"

    def east_sees_west_room(self) -> bool:
        rows = {r["id"]: r for r in self.admin(self.east, "mesh")["nodes"]}
        return all(rows.get(w.name, {}).get("state") == "alive"
                   and rows[w.name]["services"].get("default", {}).get("slots") == 16
                   for w in self.west)

    def load(self, *, concurrency: int, count: int, max_s: float, **kw: Any) -> Summary:
        """`run_load` against east-1, from a client inside the east namespace."""
        def go() -> Summary:
            return asyncio.run(run_load(self.url, concurrency=concurrency, count=count,
                                        max_s=max_s, **kw))
        return self.callers["east"].call(go, timeout=max_s + 120)

    def logs(self) -> str:
        parts = [n.log_tail(2000) for n in self.nodes]
        parts += [f"--- {p.log_path.name}\n{p.output()[-1000:]}" for p in self.procs]
        return "\n".join(parts)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        for p in reversed(self.procs):
            p.stop()
        for c in self.callers.values():
            c.close()
