"""mDNS discovery on the LAN interface: two announcers find each other's peer endpoints."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import Callable

import pytest

from gossip.discovery import MdnsDiscovery


def _multicast_loops_back() -> str | None:
    """None if a multicast datagram we send comes back to us here, else why not."""
    group, port = "239.255.77.77", 0
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except OSError as exc:
        return f"no UDP sockets: {exc}"
    with rx, tx:
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", port))
            port = rx.getsockname()[1]
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"scale0-probe", (group, port))
        except OSError as exc:
            return f"multicast not permitted here: {exc}"
        ready, _, _ = select.select([rx], [], [], 2.0)  # a bounded wait for a real datagram
        if not ready:
            return "multicast datagrams do not loop back on this host"
    return None


async def _until(check: Callable[[], object], what: str, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _lan_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the route
        return str(s.getsockname()[0])


def test_two_nodes_find_each_other() -> None:
    why = _multicast_loops_back()
    if why:
        pytest.skip(why)
    ip = _lan_ip()

    async def main() -> None:
        seen_a: list[str] = []
        seen_b: list[str] = []
        a = MdnsDiscovery("disc-a", "east", f"tcp://{ip}:17001", seen_a.append)
        b = MdnsDiscovery("disc-b", "west", f"tcp://{ip}:17002", seen_b.append)
        await a.start()
        await b.start()
        try:
            await _until(lambda: f"tcp://{ip}:17002" in seen_a, "a to find b")
            await _until(lambda: f"tcp://{ip}:17001" in seen_b, "b to find a")
            assert f"tcp://{ip}:17001" not in seen_a  # never reports itself
            assert a.found.get("disc-b") == f"tcp://{ip}:17002"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_refuses_a_wildcard_endpoint() -> None:
    with pytest.raises(ValueError, match="--advertise"):
        MdnsDiscovery("x", "dc", "tcp://0.0.0.0:7947", lambda _: None)
