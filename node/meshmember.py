"""This node's part in the mesh: gossip membership, the load table, overflow, forwarding.

Wires the pieces that live in gossip/ and mesh/ to this node's broker and
pipeline. Order matters and is the caller's: construct (binds nothing), build
the pipeline with `dispatcher`, then `await start(pipeline.handle)` (binds the
gossip and peer sockets, joins through the seeds, starts serving forwarded
requests). `stop()` says LEAVE and closes.

The load table follows the membership: a change (join, suspect, dead, left)
is applied at once — a dead or departed peer, or one whose process changed (a
restart: `MemberView.life`), also releases the requests we forwarded to it — and
the per-service load that rides on every beat is folded in a few times per gossip
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from gossip.agent import AgentConfig, GossipAgent, primary_ip
from gossip.config import GossipConfig
from gossip.load import ServiceLoad
from gossip.membership import MemberView, SelfInfo
from gossip.messages import Addresses
from gossip.transport import TransportConfig
from mesh.loadtable import LoadTable
from mesh.routing import OverflowPolicy
from node.broker import Broker
from node.http import Request, Response
from node.overflow import ForwardedServer, OverflowDispatcher

log = logging.getLogger("scale0.mesh")

PRESETS: dict[str, Callable[[], GossipConfig]] = {
    "lan": GossipConfig.lan,
    "wan": GossipConfig.wan,
    "local": GossipConfig.local,
}

WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


def http_advertised(host: str, port: int, advertise: str = "",
                    primary: Callable[[], str] = primary_ip) -> str:
    """The HOST:PORT other nodes and `scale0 mesh` are told for `--http HOST:PORT`.

    The same host the gossip and peer sockets advertise: `--advertise` if given, else
    for a wildcard bind (`:8080`, `0.0.0.0:8080`) this host's primary address, as
    `gossip.agent.advertised` does; a specific bind host is kept. (Not "localhost": a
    peer's table would show an address that names the peer itself.)"""
    if advertise:
        host = advertise
    elif host in WILDCARD_HOSTS:
        host = primary()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6, in the form parse_hostport reads back
    return f"{host}:{port}"


class MeshMember:
    def __init__(
        self,
        *,
        node_id: str,
        dc: str,
        broker: Broker,
        gossip_endpoint: str,
        peer_endpoint: str,
        http_address: str,
        workers_endpoint: str,
        seeds: list[str],
        advertise: str = "",
        discover: str = "",
        preset: str = "lan",
        policies: dict[str, OverflowPolicy] | None = None,
        secure: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown gossip preset {preset!r} (known: {', '.join(PRESETS)})")
        self.node_id = node_id
        self.dc = dc
        self.broker = broker
        self.clock = clock
        self.table = LoadTable(node_id)
        config = AgentConfig(
            gossip=PRESETS[preset](),
            transport=TransportConfig(gossip=gossip_endpoint, peer=peer_endpoint, secure=secure),
            seeds=tuple(seeds),
            advertise=advertise or None,
            discover=discover or None,
        )
        info = SelfInfo(
            node_id, dc, Addresses(http=http_address, gossip="", peer="", workers=workers_endpoint)
        )
        self.agent = GossipAgent(config, info, self._loads, clock=clock)
        self.dispatcher = OverflowDispatcher(
            broker,
            self.table,
            self.agent.transport,
            node_id=node_id,
            dc=dc,
            policies=policies,
            clock=clock,
        )
        self.forwarded: ForwardedServer | None = None
        self._sync_task: asyncio.Task[None] | None = None

    def _loads(self) -> dict[str, ServiceLoad]:
        """What our beats say: the broker's load plus forwarding rates."""
        now = self.clock()
        fwd_in = self.forwarded.meter.rate(now) if self.forwarded else 0.0
        fwd_out = self.dispatcher.forwarded_out.rate(now)
        return {
            name: replace(load, fwd_in_rps=fwd_in, fwd_out_rps=fwd_out)
            for name, load in self.broker.service_loads().items()
        }

    async def start(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self.forwarded = ForwardedServer(handle, node_id=self.node_id, dc=self.dc,
                                         owns_life=self.agent.owns_life)
        self.agent.transport.register_handler("http", self.forwarded)
        self.agent.on_change(self._on_change)
        await self.agent.start()
        self.table.sync(self.agent.members(), self.clock())
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    def _on_change(self, view: MemberView) -> None:
        self.table.apply_member(view, self.clock())
        if view.id == self.node_id:
            return
        if view.state in ("dead", "left"):
            self.dispatcher.peer_down(view.id)
        else:
            self.dispatcher.peer_life(view.id, view.life)

    async def _sync_loop(self) -> None:
        interval = max(0.05, self.agent.config.gossip.interval / 4)
        while True:
            await asyncio.sleep(interval)  # a refresh period, not a synchronisation
            try:
                before = self.table.version
                self.table.sync(self.agent.members(), self.clock())
                if self.table.version != before:
                    self.dispatcher.room_may_have_changed()
            except Exception:  # a bad row must not stop the refresh
                log.exception("load table refresh failed")

    def serving(self) -> int:
        """Requests from peers this node is answering now (forwarded misses, fetches)."""
        return self.agent.transport.serving

    def forward_counts(self) -> dict[str, int]:
        """Requests since start: "out" sent to a peer (each attempt, as the rate on our
        beats counts them), "in" forwarded to us and run through our pipeline."""
        served = self.forwarded.received if self.forwarded is not None else 0
        return {"in": served, "out": self.dispatcher.sent}

    def mesh_json(self) -> dict[str, Any]:
        return self.table.to_json(self.clock())

    @property
    def endpoints(self) -> dict[str, str]:
        return self.agent.bound_endpoints

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.agent.stop()
