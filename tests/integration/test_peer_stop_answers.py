"""A node that stops answers every peer request it took (real sockets on loopback).

QA: in a rolling restart a node forwarded a GET to a peer just as that peer stopped; the
peer had taken it and closed its sockets without a word, and the sender waited for
the reply until the request's 30 s deadline (the client gave up at 20 s). A stopping
agent now answers what it was serving (`INTERRUPTED`: it may have had effects) and
refuses, as "busy", what it had not started (`STOPPING`: the sender may go elsewhere).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gossip.agent import AgentConfig, GossipAgent
from gossip.config import GossipConfig
from gossip.membership import SelfInfo
from gossip.messages import Addresses
from gossip.transport import (
    INTERRUPTED,
    STOPPING,
    PeerRefused,
    PeerReply,
    PeerRequest,
    Transport,
    TransportConfig,
)

LOOPBACK = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*")


async def until(check: object, what: str, within: float = 10.0) -> None:
    """Poll a real condition with a deadline (never a bare sleep as synchronisation)."""
    assert callable(check)
    end = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def agent(name: str) -> GossipAgent:
    config = AgentConfig(gossip=GossipConfig.local(), transport=LOOPBACK)
    return GossipAgent(config, SelfInfo(name, "east", Addresses(http="", gossip="", peer="")),
                       dict)


async def test_a_stopping_agent_answers_what_it_was_serving() -> None:
    b = agent("b")
    entered = asyncio.Event()
    never = asyncio.Event()

    async def slow(_request: PeerRequest) -> PeerReply:
        entered.set()
        await never.wait()  # a forwarded request still running when the node stops
        return PeerReply()

    b.transport.register_handler("http", slow)
    await b.start()
    asker = Transport(LOOPBACK)
    asker.start()
    try:
        asking = asyncio.create_task(asker.request(b.transport.peer_endpoint, "http", {},
                                                   timeout=20))
        await until(entered.is_set, "b serving the request")
        started = time.monotonic()
        await b.stop()  # what SIGTERM does once the node's drain is over
        with pytest.raises(PeerRefused, match=INTERRUPTED):
            await asyncio.wait_for(asking, 20)
        # Not the asker's timeout: the answer came with the stop.
        assert time.monotonic() - started < 5
    finally:
        asker.close()
        await b.abort()


async def test_a_stopping_transport_refuses_as_busy_what_it_has_not_started() -> None:
    b = Transport(LOOPBACK)
    b.start()
    ran: list[str] = []

    async def handler(request: PeerRequest) -> PeerReply:
        ran.append(request.kind)
        return PeerReply()

    b.register_handler("http", handler)
    asker = Transport(LOOPBACK)
    asker.start()
    try:
        await asker.request(b.peer_endpoint, "http", {}, timeout=10)
        assert ran == ["http"]
        b.stop_serving()  # a node saying LEAVE: what arrives now is not run
        with pytest.raises(PeerRefused, match=STOPPING):
            await asker.request(b.peer_endpoint, "http", {}, timeout=10)
        assert "busy" in STOPPING  # senders take "busy" as "it did not run: go elsewhere"
        assert ran == ["http"]
    finally:
        asker.close()
        b.close(200)
