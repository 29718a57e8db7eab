"""Reliable envelopes of a member killed -9 and restarted at once, same id and ports, reach
the others (QA: purges from a node back within ~1 s were answered {"purged": 1} and
dropped by every peer, silently, until its new numbers caught up with the old life's)."""

from __future__ import annotations

import asyncio
import errno

import zmq
from integration.test_gossip_agents import agent, run, states, until

from gossip.agent import AgentConfig, GossipAgent
from gossip.config import GossipConfig
from gossip.membership import SelfInfo
from gossip.messages import Addresses
from gossip.transport import TransportConfig


async def restart(name: str, ports: dict[str, str], seed: str) -> GossipAgent:
    """The same id on the same ports, as soon as they can be bound again (ZeroMQ closes a
    socket in its I/O thread: the port may be busy for a moment after `abort()`)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 5.0
    while True:
        reborn = GossipAgent(
            AgentConfig(gossip=GossipConfig.local(), seeds=(seed,),
                        transport=TransportConfig(gossip=ports["gossip"], peer=ports["peer"])),
            SelfInfo(name, "east", Addresses("127.0.0.1:8080", "", "")), dict)
        try:
            await reborn.start()
            return reborn
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or loop.time() > end:
                raise
            await asyncio.sleep(0.05)


def test_purges_of_a_member_restarted_after_a_crash_reach_the_others() -> None:
    async def main() -> None:
        a = agent("a")
        await a.start()
        got: list[tuple[str, bytes]] = []
        a.on_reliable("purge", lambda sender, payload: got.append((sender, payload)))
        b = agent("b", seeds=(a.self_info.addresses.peer,))
        await b.start()
        reborn: GossipAgent | None = None
        try:
            await until(lambda: states(a).get("b") == "alive" and states(b).get("a") == "alive"
                        and a.membership is not None and a.membership.follows("b"),
                        "a and b to list (and follow) each other")
            for i in range(12):  # the old life got well ahead: a expects its 13th next
                b.publish_reliable("purge", b"old-%d" % i)
            old = [("b", b"old-%d" % i) for i in range(12)]
            await until(lambda: got == old, lambda: f"a to get b's purges: {got}")

            ports = b.bound_endpoints
            await b.abort()  # kill -9: no LEAVE
            reborn = await restart("b", ports, a.self_info.addresses.peer)
            assert reborn.self_info.incarnation > b.self_info.incarnation
            for i in range(3):  # at once, as `curl -X PURGE` right after the restart did
                reborn.publish_reliable("purge", b"new-%d" % i)
            new = [("b", b"new-%d" % i) for i in range(3)]
            await until(lambda: got == old + new,
                        lambda: f"a to get the new life's purges: {got[12:]} "
                                f"drops {a.stats()['dropped']}", within=10)
            reborn.publish_reliable("purge", b"new-3")
            await until(lambda: got[-1] == ("b", b"new-3"), "the next one too")
            await asyncio.sleep(0.5)  # resends still in flight deliver nothing twice
            assert got == [*old, *new, ("b", b"new-3")]
            view = a.membership.member("b") if a.membership is not None else None
            assert view is not None and view.incarnation >= reborn.self_info.incarnation
        finally:
            for x in (reborn, a):
                if x is not None:
                    await x.abort()

    run(main())
