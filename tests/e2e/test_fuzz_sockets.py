"""Hostile frames against a running `scale0 node`: it keeps serving, bounded, unchanged.

The node is a real process with a real worker. The test throws mutated,
truncated, oversized and deeply nested frames at its workers ROUTER and its
gossip peer ROUTER (>= 10^5 messages each, bounded in count and time), then
checks that a client still gets its answer from the worker, that the node's
resident memory grew by less than a generous bound, that the membership it
reports is the one it had, and that it counted what it dropped.

The gossip PUB/SUB side is fuzzed in tests/e2e/test_fuzz_gossip_sub.py: the node
only subscribes to publishers it learned as members, so that test joins as one
first (tests/testkit/hostilemember.py).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from testkit.procs import Proc, free_port, scale0_bin, wait_until

from gossip.messages import Ping, ResendRequest
from gossip.messages import encode as gossip_encode
from node.protocol import Disconnect, Heartbeat, Ready, Reply
from node.protocol import encode as worker_encode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

APPS = Path(__file__).parent / "apps"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}
PER_SOCKET = 100_000
BUDGET = 25.0  # seconds of sending per socket, at most
RSS_BOUND_KIB = 96 * 1024


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert m is not None
    return int(m.group(1))


class Node:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.http, self.admin = free_port(), free_port()
        self.workers = f"tcp://127.0.0.1:{free_port()}"
        self.peer = f"tcp://127.0.0.1:{free_port()}"
        self.procs: list[Proc] = []
        self.node = self._start("node", [
            scale0_bin(), "node", "--id", "fuzzed", "--http", f"127.0.0.1:{self.http}",
            "--admin", f"127.0.0.1:{self.admin}", "--workers", self.workers, "--cache", "memory",
            "--gossip", f"tcp://127.0.0.1:{free_port()}", "--peer", self.peer])
        wait_until(lambda: self.admin_json("/_scale0/health"), timeout=30, what="the node")
        self._start("worker", [scale0_bin(), "worker", "--node", self.workers, "--service",
                               "default", "--concurrency", "4", "--app", "pyapp:handle"])
        wait_until(lambda: self.admin_json("/_scale0/health")["workers"]
                   .get("default", {}).get("workers"), timeout=30, what="the worker")

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(args, self.tmp / f"{name}.log", env=ENV)
        self.procs.append(proc)
        return proc

    def admin_text(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def admin_json(self, path: str) -> dict[str, Any]:
        return dict(json.loads(self.admin_text(path)))

    def members(self) -> list[tuple[str, str]]:
        rows = self.admin_json("/_scale0/mesh")["nodes"]
        return sorted((n["id"], n.get("state", "")) for n in rows)

    def get(self) -> tuple[int, bytes]:
        if not self.node.alive():  # pytest does not show a module fixture's logs: say why
            raise AssertionError(f"the node exited with {self.node.popen.returncode}:\n"
                                 f"{self.node.output()[-4000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=30)
        try:
            conn.request("GET", "/fuzz-check", headers={"Host": "app.test"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("fuzz"))
    try:
        yield n
    except BaseException:
        for p in n.procs:
            print(p.output()[-3000:])
        raise
    finally:
        n.stop()


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    """One mutation: flip, insert, delete, truncate, duplicate, or replace with noise."""
    b = bytearray(frame)
    op = rng.randrange(7)
    if op == 0 and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        b[rng.randint(0, len(b)):rng.randint(0, len(b))] = rng.randbytes(rng.randint(1, 8))
    elif op == 2 and b:
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    elif op == 3:
        del b[rng.randint(0, len(b)):]
    elif op == 4:
        b += b[: rng.randint(0, len(b))]
    elif op == 5 and b:
        b[rng.randrange(len(b))] = rng.choice([0x00, 0x7F, 0x80, 0xC1, 0xDC, 0xDD, 0xDE, 0xDF,
                                               0xFF, 0xC4, 0xC6, 0xDB])
    else:
        b = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(b)


NESTED = [b"\x91" * 100_000 + b"\xc0", b"\x81\xa1k" * 50_000 + b"\xc0",
          b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"]


def _messages(rng: random.Random, seeds: list[list[bytes]], n: int) -> Iterator[list[bytes]]:
    for i in range(n):
        frames = list(rng.choice(seeds))
        kind = i % 10
        if kind == 9:
            frames[rng.randrange(len(frames))] = rng.choice(NESTED)
        elif kind == 8:
            frames = frames[: rng.randint(0, len(frames))] or [b""]
        elif kind == 7:
            frames = frames + [rng.randbytes(rng.randint(0, 32)) for _ in range(rng.randint(1, 40))]
        else:
            j = rng.randrange(len(frames))
            frames[j] = _mutate(rng, frames[j])
        yield frames


def _blast(endpoint: str, seeds: list[list[bytes]], seed: int) -> tuple[int, float]:
    """Send up to PER_SOCKET hostile messages from a few DEALERs; (sent, seconds)."""
    ctx = zmq.Context()
    socks = []
    for _ in range(4):
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.sndtimeo = 2000  # blocks at the HWM (the node's pace), never forever
        s.sndhwm = 1000
        s.connect(endpoint)
        socks.append(s)
    rng = random.Random(seed)
    sent, started = 0, time.monotonic()
    try:
        for frames in _messages(rng, seeds, PER_SOCKET):
            if time.monotonic() - started > BUDGET:
                break
            try:
                socks[sent % 4].send_multipart(frames)
            except zmq.Again:
                continue  # the node is slower than us: that frame is simply not sent
            sent += 1
            while socks[sent % 4].poll(0):  # answers (DISCONNECT, err replies): read, ignore
                socks[sent % 4].recv_multipart()
        return sent, time.monotonic() - started
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


def _oversized(endpoint: str, size: int) -> None:
    """One frame past the socket's MAXMSGSIZE: the node must cut us off, not allocate it."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 2000
    s.connect(endpoint)
    s.send(b"\x00" * size)
    s.close()
    ctx.term()


def _worker_seeds() -> list[list[bytes]]:
    return [worker_encode(Ready(("default",), 4, "fuzz", 1)), worker_encode(Heartbeat()),
            worker_encode(Reply(12345, 200, (("a", "b"),), False, b"body")),
            worker_encode(Disconnect())]


def _peer_seeds() -> list[list[bytes]]:
    bodies = [gossip_encode(Ping("fuzzer", 1, 7, "fuzzed")),
              gossip_encode(ResendRequest("fuzzer", 2, 1, 5))]
    meta = b"\x80"  # msgpack {}
    seeds = [[b"\x01", b"gossip", b"\x00" * 7 + b"\x01", meta, body] for body in bodies]
    seeds.append([b"\x01", b"http", b"\x00" * 7 + b"\x02", b"\x81\xa1m\xa3GET", b""])
    seeds.append([b"\x01", b"cache-fill", b"\x00" * 7 + b"\x03", meta])
    return seeds


def _drops(metrics: str) -> int:
    return sum(int(float(v)) for v in
               re.findall(r"^scale0_frames_dropped_total\{[^}]*\} (\S+)$", metrics, re.M))


def test_hostile_frames_leave_the_node_serving(node: Node) -> None:
    status, body = node.get()
    assert status == 200 and b'"api": "python"' in body
    members_before = node.members()
    metrics_before = node.admin_text("/_scale0/metrics")
    rss_before = _rss_kib(node.node.pid)

    results = {}
    for name, endpoint, seeds, limit in (
            ("workers", node.workers, _worker_seeds(), 32 * 1024 * 1024),
            ("peer", node.peer, _peer_seeds(), 64 * 1024 * 1024)):
        sent, took = _blast(endpoint, seeds, seed=len(name))
        _oversized(endpoint, limit + 1)
        results[name] = (sent, took)
        status, body = node.get()  # still serving after each socket's barrage
        assert status == 200, body

    rss_after = _rss_kib(node.node.pid)
    for name, (sent, took) in results.items():
        print(f"\n{name}: {sent} hostile messages in {took:.1f}s ({sent / took:.0f}/s)")
    print(f"RSS {rss_before} KiB -> {rss_after} KiB ({(rss_after - rss_before) / 1024:+.1f} MiB)")
    assert all(sent >= PER_SOCKET for sent, _ in results.values()), results
    assert rss_after - rss_before < RSS_BOUND_KIB
    assert node.node.popen.poll() is None
    wait_until(lambda: node.get()[0] == 200, timeout=10, what="serving after the fuzz")
    assert node.members() == members_before
    metrics_after = node.admin_text("/_scale0/metrics")
    assert _drops(metrics_after) > _drops(metrics_before)
