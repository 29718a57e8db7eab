"""LAN discovery over mDNS/DNS-SD: announce our peer socket, report the others' as seeds.

`--discover mdns` makes each node register `<id>._scale0._tcp.local.` whose TXT
properties carry its peer endpoint, id and dc, and browse the same type. Every
other node found is handed to `on_found(peer_endpoint)`; the agent treats it as
one more seed, so a LAN mesh forms with no seed configured. Discovery is only an
introduction: after the first snapshot, membership comes from gossip, and a node
that vanishes from mDNS is not thereby dead (the failure detector decides that).

TXT records are untrusted input: values are bounded and must be `tcp://` endpoints,
anything else is ignored and counted in `ignored`. Uses zeroconf's asyncio API;
the zeroconf engine runs its own sockets on the same event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger("scale0.gossip.discovery")

SERVICE_TYPE = "_scale0._tcp.local."
RESOLVE_MS = 3000
_ENDPOINT = re.compile(r"tcp://[A-Za-z0-9.\-\[\]:]{1,253}:[0-9]{1,5}")


def _label(node_id: str) -> str:
    """A DNS-SD instance label from a node id (at most 63 bytes, printable)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in node_id)
    return (cleaned or "node")[:63]


def _txt(props: dict[bytes, bytes | None], key: bytes) -> str:
    raw = props.get(key) or b""
    return raw[:256].decode("utf-8", "replace")


class MdnsDiscovery:
    """Announce one node and report every other node of `_scale0._tcp` on the LAN.

    `on_found` is called on the event loop with a peer endpoint (`tcp://host:port`),
    possibly several times for the same peer (re-announcements); it must not block.
    `peer_endpoint` must be the advertised one (no wildcard host)."""

    def __init__(self, node_id: str, dc: str, peer_endpoint: str,
                 on_found: Callable[[str], None], interfaces: list[str] | None = None) -> None:
        host, _, port = peer_endpoint.removeprefix("tcp://").rpartition(":")
        if not host or host in ("*", "0.0.0.0") or not port.isdigit():
            raise ValueError(f"mDNS needs a concrete peer endpoint, not {peer_endpoint!r}: "
                             "set --advertise HOST")
        self.node_id, self.dc, self.peer_endpoint = node_id, dc, peer_endpoint
        self._host, self._port = host.strip("[]"), int(port)
        self._on_found = on_found
        self._interfaces = interfaces
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.found: dict[str, str] = {}  # node id -> peer endpoint, as last announced
        self.ignored = 0

    def _addresses(self) -> list[bytes]:
        try:
            return [ipaddress.ip_address(self._host).packed]
        except ValueError:  # a host name: announce what it resolves to
            infos = socket.getaddrinfo(self._host, None, socket.AF_INET)
            return [socket.inet_aton(str(info[4][0])) for info in infos[:4]]

    async def start(self) -> None:
        """Register our service and start browsing; raises OSError if mDNS cannot bind."""
        if self._interfaces is not None:
            self._azc = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        else:
            self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        label = _label(self.node_id)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=self._port,
            addresses=self._addresses(), server=f"{label}.local.",
            properties={"id": self.node_id, "dc": self.dc, "peer": self.peer_endpoint},
        )
        # allow_name_change: two nodes with one id on a LAN is a misconfiguration the
        # membership layer reports; discovery should not refuse to start over it.
        await self._azc.async_register_service(self._info, allow_name_change=True)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE_TYPE,
                                             handlers=[self._on_change])

    async def stop(self) -> None:
        """Stop browsing, unregister (peers see the goodbye), close the mDNS sockets."""
        for task in self._tasks:
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._azc is not None:
            if self._info is not None:
                await self._azc.async_unregister_service(self._info)
            await self._azc.async_close()
        self._browser = self._azc = self._info = None

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_MS):
            return
        props = info.properties or {}
        node_id, endpoint = _txt(props, b"id"), _txt(props, b"peer")
        if not _ENDPOINT.fullmatch(endpoint):
            addresses = info.parsed_addresses(IPVersion.V4Only)
            if not addresses or not info.port:
                self.ignored += 1
                log.info("ignoring mDNS service %r: no usable peer endpoint", name[:80])
                return
            endpoint = f"tcp://{addresses[0]}:{info.port}"
        if node_id == self.node_id or endpoint == self.peer_endpoint:
            return
        if self.found.get(node_id) != endpoint:
            log.info("mDNS found node %r at %s", node_id[:64], endpoint)
        self.found[node_id] = endpoint
        self._on_found(endpoint)
