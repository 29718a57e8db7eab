"""Several GossipAgents in one process on loopback ports: join, converge, LEAVE, crash, restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gossip.agent import AgentConfig, GossipAgent, advertised, unreachable_advert
from gossip.config import GossipConfig
from gossip.load import ServiceLoad
from gossip.membership import MemberView, SelfInfo
from gossip.messages import Addresses
from gossip.transport import PeerRefused, Transport, TransportConfig

LOOPBACK = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def until(check: Callable[[], object], what: str | Callable[[], str], within: float = 15.0,
                between: Callable[[], object] | None = None) -> None:
    """Poll a real condition with a deadline (generous: CI machines are slow)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            detail = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out waiting for {detail}")
        if between is not None:
            between()
        await asyncio.sleep(0.02)


def agent(name: str, seeds: tuple[str, ...] = (), dc: str = "east",
          load: dict[str, ServiceLoad] | None = None) -> GossipAgent:
    config = AgentConfig(gossip=GossipConfig.local(), transport=LOOPBACK, seeds=seeds)
    info = SelfInfo(name, dc, Addresses(http="127.0.0.1:8080", gossip="", peer=""))
    return GossipAgent(config, info, lambda: dict(load or {}))


def states(a: GossipAgent) -> dict[str, str]:
    return {v.id: v.state for v in a.members()}


def view(a: GossipAgent, member: str) -> MemberView | None:
    return next((v for v in a.members() if v.id == member), None)


def test_join_converge_leave_crash_restart() -> None:
    async def main() -> None:
        load = {"www": ServiceLoad(workers=2, slots=8, in_flight=3)}
        seed = agent("n0", load=load)
        await seed.start()
        endpoint = seed.self_info.addresses.peer
        others = [agent(f"n{i}", seeds=(endpoint,)) for i in range(1, 6)]
        changes: list[MemberView] = []
        others[0].on_change(changes.append)
        for a in others:
            await a.start()
        mesh = [seed, *others]
        names = {f"n{i}" for i in range(6)}
        await until(lambda: all(set(states(a)) == names
                                and set(states(a).values()) == {"alive"} for a in mesh),
                    "6 agents to list each other alive")
        assert all(a.joined.is_set() for a in others)
        assert any(v.id == "n5" and v.state == "alive" for v in changes)
        # The seed's load reached the others through its beats.
        await until(lambda: dict(view(others[3], "n0").load).get("www") == load["www"],  # type: ignore[union-attr]
                    "the seed's load in a peer's view")

        # A clean stop: LEAVE reaches everyone.
        leaver = others.pop()
        await leaver.stop()
        mesh.remove(leaver)
        await until(lambda: all(states(a).get("n5") == "left" for a in mesh),
                    lambda: f"n5 to be left: {[states(a) for a in mesh]}")

        # A crash (no word), then a restart: back with a higher incarnation, via another seed.
        crashed = others.pop()
        old = crashed.self_info.incarnation
        await crashed.abort()
        mesh.remove(crashed)
        reborn = agent("n4", seeds=(others[1].self_info.addresses.peer,))
        await reborn.start()
        mesh.append(reborn)
        assert reborn.self_info.incarnation > old

        def reborn_everywhere() -> bool:
            views = [view(a, "n4") for a in mesh]
            return all(v is not None and v.state == "alive"
                       and v.incarnation == reborn.self_info.incarnation for v in views)

        await until(reborn_everywhere, lambda: f"n4 alive again: {[states(a) for a in mesh]}")
        # The seed beats at a random point of its interval: wait for one each way.
        await until(lambda: seed.stats()["in"].get("Beat", 0) > 0
                    and seed.stats()["out"].get("Beat", 0) > 0, lambda: f"{seed.stats()}")
        for a in mesh:
            await a.abort()

    run(main())


def test_join_retries_until_the_seed_appears(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        holder = agent("placeholder")
        await holder.start()
        endpoint = holder.self_info.addresses.peer
        await holder.abort()  # the port is free again; nobody answers there yet
        joiner = GossipAgent(
            AgentConfig(gossip=GossipConfig.local(), transport=LOOPBACK,
                        seeds=("tcp://127.0.0.1:1", endpoint), join_warn_after=0.3),
            SelfInfo("late-joiner", "east", Addresses("127.0.0.1:8080", "", "")), dict)
        await joiner.start()
        await until(lambda: joiner.stats()["dropped"].get("send:PeerTimeout", 0) >= 2,
                    "a few failed join attempts")
        # Alone because no seed answers: said once, loudly, naming the seeds.
        await until(lambda: any("not in a mesh yet" in r.getMessage() for r in caplog.records),
                    "a warning that no seed answers")
        warnings = [r for r in caplog.records if "not in a mesh yet" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
        assert endpoint in warnings[0].getMessage()
        seed = GossipAgent(
            AgentConfig(gossip=GossipConfig.local(),
                        transport=TransportConfig(gossip="tcp://127.0.0.1:*", peer=endpoint)),
            SelfInfo("seed", "east", Addresses("", "", "")), dict)
        await seed.start()
        await until(joiner.joined.is_set, "the joiner to get a snapshot")
        await until(lambda: set(states(seed)) == {"seed", "late-joiner"}, "the seed to list it")
        await joiner.abort()
        await seed.abort()

    run(main())


def test_garbage_gossip_is_dropped_and_counted() -> None:
    async def main() -> None:
        b = agent("b")
        await b.start()
        rogue = Transport(LOOPBACK)
        rogue.start()
        b.transport.follow(rogue.gossip_endpoint)
        await until(lambda: b.stats()["dropped"].get("sub:decode", 0) >= 1, "a SUB decode drop",
                    between=lambda: rogue.publish(b"g", b"\x01not msgpack"))
        with pytest.raises(PeerRefused, match="not a gossip message"):
            await rogue.request(b.self_info.addresses.peer, "gossip", body=(b"junk",))
        assert b.stats()["dropped"]["peer:decode"] == 1
        assert states(b) == {"b": "alive"}  # and it still works
        rogue.close()
        await b.abort()

    run(main())


def test_advertise_replaces_only_wildcards() -> None:
    assert advertised("tcp://0.0.0.0:7946", "10.1.2.3") == "tcp://10.1.2.3:7946"
    assert advertised("tcp://*:7947", "node.example") == "tcp://node.example:7947"
    assert advertised("0.0.0.0:8080", "10.1.2.3") == "10.1.2.3:8080"
    assert advertised("tcp://127.0.0.1:7946", "10.1.2.3") == "tcp://127.0.0.1:7946"
    assert advertised("tcp://*:7946", None).startswith("tcp://")


def test_a_crash_is_detected_by_every_other_agent() -> None:
    """Under CPU load too: observers vouch for a member only on first-hand word (issue 4)."""
    async def main() -> None:
        seed = agent("c0")
        await seed.start()
        mesh = [seed] + [agent(f"c{i}", seeds=(seed.self_info.addresses.peer,)) for i in (1, 2, 3)]
        for a in mesh[1:]:
            await a.start()
        await until(lambda: all(len(states(a)) == 4 for a in mesh), "4 agents to converge")
        crashed = mesh.pop()
        await crashed.abort()
        await until(lambda: all(states(a).get("c3") == "dead" for a in mesh),
                    lambda: f"c3 to be dead: {[states(a) for a in mesh]}", within=8)
        for a in mesh:
            await a.abort()

    run(main())


def test_mdns_warns_when_a_wildcard_bind_can_only_be_announced_as_loopback() -> None:
    """No default route (a LAN without a gateway): the address found is loopback, which
    mDNS announces to hosts that cannot dial it. Said once at start, naming the fix."""
    why = unreachable_advert("tcp://*:7947", "tcp://127.0.0.1:7947", "mdns")
    assert why is not None and "--advertise" in why and "tcp://127.0.0.1:7947" in why
    assert unreachable_advert("tcp://0.0.0.0:7947", "tcp://[::1]:7947", "mdns") is not None
    # A real address, an explicit loopback bind (a local mesh) or no mDNS: nothing to say.
    assert unreachable_advert("tcp://*:7947", "tcp://10.0.0.5:7947", "mdns") is None
    assert unreachable_advert("tcp://127.0.0.1:7947", "tcp://127.0.0.1:7947", "mdns") is None
    assert unreachable_advert("tcp://*:7947", "tcp://127.0.0.1:7947", None) is None
