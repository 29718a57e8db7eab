"""A refused CurveZMQ client leaves a trace in the node's log: one WARNING naming its
address and public key, however often it retries, and a bounded number of lines under a
flood of keys. Real ZAP thread, real broker, real SDK worker on loopback."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from node.broker import Broker, BrokerConfig
from node.curve import AUTHORIZED, CurveKeys, Gatekeeper, RefusalLog, keygen, secure_server
from node.http import Headers, Request, Response
from node.worker.sdk import Worker

pytestmark = pytest.mark.timeout(60)
LINE = "refused a CurveZMQ handshake"


async def until(cond: Callable[[], Any], what: str, limit: float = 15.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def echo(request: Request) -> Response:
    return Response(200, Headers([("x", "y")]), b"served")


def worker_dir(tmp: Path, node: Path, name: str, listed: bool) -> Path:
    d = tmp / name
    public, _ = keygen(d, name)
    shutil.copy(node / "node.key", d / "node.key")
    if listed:
        shutil.copy(public, node / AUTHORIZED / public.name)
    return d


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scale0.curve" and LINE in r.getMessage()]


def with_gate(tmp: Path, gate_log: RefusalLog | None,
              body: Callable[[CurveKeys, Gatekeeper], Awaitable[None]]) -> None:
    node = tmp / "node"
    keygen(node, "node")
    (node / AUTHORIZED).mkdir()
    keys = CurveKeys.load(node)
    gate = Gatekeeper(keys, refusals=gate_log)
    gate.start()  # its self-test's refusal is expected: it must not be logged
    try:
        asyncio.run(asyncio.wait_for(body(keys, gate), 45))
    finally:
        gate.stop()


def test_an_unlisted_worker_is_named_once_however_often_it_retries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scale0.curve")

    async def main(keys: CurveKeys, gate: Gatekeeper) -> None:
        assert keys.keydir is not None
        good_dir = worker_dir(tmp_path, keys.keydir, "good", listed=True)
        keys.reload()
        bad_dir = worker_dir(tmp_path, keys.keydir, "bad", listed=False)
        bad_key = CurveKeys.load(bad_dir).own.public.decode()
        assert gate.denied == 1 and refusals(caplog) == []  # the self-test, unlogged
        broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.1,
                                     secure=keys.secure), "n1")
        await broker.start()
        workers = [Worker(broker.bound_endpoint, ["www"], 1, echo, name=name,
                          heartbeat_interval=0.1, secure=CurveKeys.load(d).secure)
                   for name, d in (("good", good_dir), ("bad", bad_dir))]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await until(lambda: broker.pool.workers, "the listed worker joined")
            # libzmq does not retry a refused handshake; the worker reconnects on silence.
            await until(lambda: gate.denied >= 1 + 4, "the unlisted worker retrying")
            lines = refusals(caplog)
            assert len(lines) == 1, lines
            assert bad_key in lines[0] and "127.0.0.1" in lines[0]
            assert str(keys.keydir / AUTHORIZED) in lines[0]
            assert all("good" not in r.getMessage() for r in caplog.records)
        finally:
            for w in workers:
                w.kill()
            for t in tasks:
                t.cancel()
            await broker.close()

    with_gate(tmp_path, None, main)


def test_a_flood_of_keys_gets_a_bounded_number_of_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scale0.curve")
    strangers, rounds = 12, 3

    async def main(keys: CurveKeys, gate: Gatekeeper) -> None:
        assert keys.keydir is not None
        ctx: zmq.Context[Any] = zmq.Context.instance()
        server = ctx.socket(zmq.ROUTER)
        secure_server(server, keys.own)
        server.linger = 0
        endpoint = f"tcp://127.0.0.1:{server.bind_to_random_port('tcp://127.0.0.1')}"
        dirs = [worker_dir(tmp_path, keys.keydir, f"s{i}", listed=False)
                for i in range(strangers)]
        try:
            for n in range(rounds):
                for d in dirs:  # each knocks, is refused, comes back with the same key
                    sock = ctx.socket(zmq.DEALER)
                    sock.linger = 0
                    CurveKeys.load(d).secure(sock, endpoint)
                    sock.connect(endpoint)
                    seen = gate.denied
                    await until(lambda seen=seen: gate.denied > seen, "a refusal")
                    sock.close(0)
                assert len(refusals(caplog)) == 3, (n, refusals(caplog))  # the burst
            assert gate.denied == 1 + strangers * rounds
            assert gate.refusals.unlogged == strangers * rounds - 3
        finally:
            server.close(0)

    with_gate(tmp_path, RefusalLog(interval=60.0, burst=3), main)
