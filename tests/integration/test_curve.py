"""CurveZMQ on real sockets: only listed keys reach the broker, the peer ROUTER and the PUB.

Every "gets nothing" is observed, not assumed: the stranger's own socket monitor
reports its handshake failed, and a listed client connecting in the same window
gets through, so the silence is the gate's doing and not a slow start.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from gossip.transport import PeerReply, PeerRequest, PeerTimeout, Transport, TransportConfig
from node.broker import Broker, BrokerConfig
from node.curve import AUTHORIZED, CurveError, CurveKeys, Gatekeeper, keygen
from node.http import Headers, Request, Response
from node.protocol import Ready, encode
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(60)
FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 45))


async def until(cond: Callable[[], Any], what: str, limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def keyring(tmp: Path) -> tuple[Path, dict[str, Path]]:
    """A node KEYDIR listing w1 and p1; worker-style KEYDIRs for w1, p1 and a stranger."""
    node = tmp / "node"
    keygen(node, "node")
    (node / AUTHORIZED).mkdir()
    dirs = {}
    for name in ("w1", "p1", "stranger"):
        d = tmp / name
        public, _ = keygen(d, name)
        shutil.copy(node / "node.key", d / "node.key")
        if name != "stranger":
            shutil.copy(public, node / AUTHORIZED / public.name)
        dirs[name] = d
    return node, dirs


def watch(sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
    return sock.get_monitor_socket(FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)


async def handshake(monitor: zmq.Socket[bytes], limit: float = 10.0) -> int:
    """The first handshake event on `monitor` (polled with a deadline)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if monitor.poll(0):
            return int(recv_monitor_message(monitor)["event"])
        await asyncio.sleep(0.002)
    raise AssertionError("no handshake event")


async def echo(request: Request) -> Response:
    return Response(200, Headers([("x", "y")]), b"served")


def test_only_a_listed_worker_joins(tmp_path: Path) -> None:
    node_dir, dirs = keyring(tmp_path)
    keys = CurveKeys.load(node_dir)
    gate = Gatekeeper(keys)
    gate.start()

    async def main() -> None:
        broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.1,
                                     secure=keys.secure), "n1")
        await broker.start()
        ctx: zmq.Context[Any] = zmq.Context.instance()
        plain = ctx.socket(zmq.DEALER)
        stranger = ctx.socket(zmq.DEALER)
        CurveKeys.load(dirs["stranger"]).secure(stranger, broker.bound_endpoint)
        monitors = [watch(plain), watch(stranger)]
        good = Worker(broker.bound_endpoint, ["www"], 2, echo, name="good",
                      heartbeat_interval=0.1, secure=CurveKeys.load(dirs["w1"]).secure)
        bad = Worker(broker.bound_endpoint, ["www"], 2, echo, name="bad",
                     heartbeat_interval=0.1, secure=CurveKeys.load(dirs["stranger"]).secure)
        tasks = [asyncio.create_task(good.run()), asyncio.create_task(bad.run())]
        try:
            ready = encode(Ready(("www",), 4, "plain", 1))
            for sock in (plain, stranger):
                sock.linger = 0
                sock.connect(broker.bound_endpoint)
                # The handshake runs on connecting, READY or not; on a loaded machine it can
                # fail before this send and take the socket's pipe with it (EAGAIN). The
                # events below are what counts.
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(ready, zmq.NOBLOCK)
            events = [await handshake(m) for m in monitors]
            assert events == [zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH]
            await until(lambda: broker.pool.workers, "the listed worker joined")
            resp = await broker.dispatch("www", Request("GET", "/", Headers(), b"", host="a"))
            assert resp.body == b"served"
            await until(lambda: gate.denied >= 3, "the stranger worker denied too")
            names = {w.name for w in broker.pool.workers.values()}
            assert names == {"good"}
            assert broker.stats["workers_joined"] == 1
            assert broker.stats["malformed"] == 0 and broker.stats["unknown_worker"] == 0
        finally:
            good.kill()
            bad.kill()
            for t in tasks:
                t.cancel()
            for m in monitors:
                m.close(0)
            plain.close(0)
            stranger.close(0)
            await broker.close()

    try:
        run(main())
    finally:
        gate.stop()


def test_only_a_listed_peer_gets_replies_and_gossip(tmp_path: Path) -> None:
    node_dir, dirs = keyring(tmp_path)
    keys = CurveKeys.load(node_dir)
    gate = Gatekeeper(keys)
    gate.start()

    async def answer(req: PeerRequest) -> PeerReply:
        return PeerReply({"you": "in"})

    async def main() -> None:
        node = Transport(TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*",
                                         secure=keys.secure))
        node.register_handler("hello", answer)
        node.start()
        peers = {name: Transport(TransportConfig(
            gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*", request_timeout=1.0,
            secure=CurveKeys.load(dirs[name]).secure)) for name in ("p1", "stranger")}
        heard: dict[str, int] = {"p1": 0, "stranger": 0}
        def counter(name: str) -> Callable[[list[bytes]], None]:
            def count(frames: list[bytes]) -> None:
                heard[name] += 1
            return count

        for name, t in peers.items():
            t.on_topic(b"g", counter(name))
            t.start()
            t.follow(node.gossip_endpoint)
        try:
            reply = await peers["p1"].request(node.peer_endpoint, "hello")
            assert reply.meta == {"you": "in"}
            with pytest.raises(PeerTimeout):
                await peers["stranger"].request(node.peer_endpoint, "hello")
            end = time.monotonic() + 10
            while heard["p1"] < 20 and time.monotonic() < end:
                node.publish(b"g", b"beat")
                await asyncio.sleep(0.01)
            assert heard["p1"] >= 20
            assert heard["stranger"] == 0
            assert node.stats.inbound["req:hello"] == 1
            assert gate.denied >= 2  # the stranger's DEALER and SUB
        finally:
            for t in (*peers.values(), node):
                t.close()

    try:
        run(main())
    finally:
        gate.stop()


def test_a_removed_key_is_refused_after_reload(tmp_path: Path) -> None:
    node_dir, dirs = keyring(tmp_path)
    keys = CurveKeys.load(node_dir)
    gate = Gatekeeper(keys)
    gate.start()
    ctx: zmq.Context[Any] = zmq.Context.instance()
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    keys.secure(server)
    endpoint = f"tcp://127.0.0.1:{server.bind_to_random_port('tcp://127.0.0.1')}"
    w1 = CurveKeys.load(dirs["w1"])

    async def attempt() -> tuple[int, float]:
        client = ctx.socket(zmq.DEALER)
        client.linger = 0
        w1.secure(client, endpoint)
        monitor = watch(client)
        started = time.monotonic()
        try:
            client.connect(endpoint)
            event = await handshake(monitor)
            return event, time.monotonic() - started
        finally:
            client.disable_monitor()
            monitor.close(0)
            client.close(0)

    try:
        assert run_value(attempt())[0] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        (node_dir / AUTHORIZED / "w1.key").unlink()
        assert gate.reload() == 1
        event, took = run_value(attempt())
        assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        print(f"\nunauthorised connection dropped after {took * 1000:.2f} ms")
        shutil.copy(dirs["w1"] / "w1.key", node_dir / AUTHORIZED / "w1.key")
        gate.reload()
        assert run_value(attempt())[0] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        server.close(0)
        gate.stop()


def run_value(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_refuses_to_start_without_a_running_authenticator(tmp_path: Path) -> None:
    node_dir, _ = keyring(tmp_path)
    gate = Gatekeeper(CurveKeys.load(node_dir))
    with pytest.raises(CurveError, match="not running"):
        gate.self_test()
    gate.start()
    try:
        took = gate.self_test()
        assert took < 5.0 and gate.denied == 2  # start()'s own self-test, then ours
    finally:
        gate.stop()
    assert not gate.running
