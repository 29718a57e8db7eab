"""A hostile mesh member on raw pyzmq sockets, for end-to-end tests of the SUB side.

A node only subscribes to publishers it learned as members, so an attacker must
join first, exactly as a node does (docs/GOSSIP.md "Join"): a `SnapshotRequest`
to a seed's peer ROUTER, then beats often enough not to be suspected, and `Ack`s
to the pings of its observers. After that its PUB may send whatever it likes.

The PUB is an XPUB so the test can wait for a real condition, the node's SUB
connecting and subscribing to topic `g`, instead of sleeping. Everything is
polled with deadlines; nothing here runs in a thread.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from gossip.messages import (
    Ack,
    Addresses,
    Alive,
    Beat,
    DecodeError,
    Message,
    Ping,
    Push,
    Snapshot,
    SnapshotRequest,
    decode,
    encode,
)
from node.freeport import free_port

VERSION = b"\x01"
EMPTY_META = b"\x80"  # msgpack {}


class HostileMember:
    """`join(seed)`, `wait_followed()`, then `beat()` / `send(frames)` / `serve()` at will."""

    def __init__(self, member_id: str = "mallory", dc: str = "default") -> None:
        self.id, self.dc = member_id, dc
        self.incarnation = time.time_ns() // 1_000_000
        self.seq = 0
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pub = self._sock(zmq.XPUB)
        self.gossip = f"tcp://127.0.0.1:{free_port()}"
        self.pub.bind(self.gossip)
        self.router = self._sock(zmq.ROUTER)
        self.peer = f"tcp://127.0.0.1:{free_port()}"
        self.router.bind(self.peer)
        self.addresses = Addresses("", self.gossip, self.peer, "")
        self.subscribers = 0
        self.pings = 0
        self.snapshot: Snapshot | None = None
        self._dealers: dict[str, zmq.Socket[bytes]] = {}
        self._rid = 0

    def _sock(self, kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(kind)
        s.linger = 0
        s.sndhwm = 1000  # with XPUB_NODROP, the subscriber paces the sender
        return s

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def alive(self) -> Alive:
        return Alive(self.id, self.incarnation, self.dc, self.addresses)

    # -- the peer protocol, as a DEALER -------------------------------------------
    def request(self, endpoint: str, msg: Message | bytes, timeout: float = 5.0
                ) -> list[Message] | None:
        """One `gossip` request to a node's peer ROUTER; its decoded answers, or None."""
        dealer = self._dealers.get(endpoint)
        if dealer is None:
            dealer = self._dealers[endpoint] = self._sock(zmq.DEALER)
            dealer.connect(endpoint)
        self._rid += 1
        rid = self._rid.to_bytes(8, "big")
        body = msg if isinstance(msg, bytes) else encode(msg)
        dealer.send_multipart([VERSION, b"gossip", rid, EMPTY_META, body])
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.serve()
            if dealer.poll(20):
                frames = dealer.recv_multipart()
                if frames[2] != rid:
                    continue
                if frames[1] != b"ok":
                    return None
                return [decode(f) for f in frames[4:]]
        return None

    def join(self, seed: str, timeout: float = 10.0) -> Snapshot:
        """Introduce ourselves to `seed` until it answers with a snapshot that lists us at
        our own incarnation and addresses (our own fuzz may have changed both there)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            answers = self.request(seed, SnapshotRequest(self.id, self.seq, self.alive()), 2.0)
            for a in answers or []:
                if not isinstance(a, Snapshot):
                    continue
                self.snapshot = a
                me = next((m for m in a.members if m.id == self.id), None)
                if me is None or me.incarnation <= self.incarnation:
                    return a
                self.incarnation = me.incarnation + 1  # outrank what it holds, then again
        raise AssertionError(f"{self.id} could not join through {seed}")

    # -- PUB ---------------------------------------------------------------------------
    def wait_followed(self, count: int = 1, timeout: float = 15.0) -> None:
        """Poll until `count` subscribers have subscribed to topic `g`, beating meanwhile."""
        end = time.monotonic() + timeout
        next_beat = 0.0
        while self.subscribers < count:
            if time.monotonic() > end:
                raise AssertionError(f"{self.id}: {self.subscribers}/{count} subscribers")
            if time.monotonic() >= next_beat:
                self.beat()
                next_beat = time.monotonic() + 0.05
            self.serve()
            if self.pub.poll(20):
                self._subscription(self.pub.recv())

    def _subscription(self, event: bytes) -> None:
        if event[:2] == b"\x01g":
            self.subscribers += 1
        elif event[:2] == b"\x00g":
            self.subscribers -= 1

    def beat(self, **fields: Any) -> None:
        """A valid beat: keeps this member alive in its followers' detectors."""
        kw: dict[str, Any] = {"incarnation": self.incarnation, "dc": self.dc,
                              "addresses": self.addresses}
        kw.update(fields)
        self.send([b"g", encode(Beat(self.id, self.next_seq(), **kw))])

    def send(self, frames: list[bytes]) -> bool:
        """Publish raw frames; False when the PUB's queue is full (the frame is dropped)."""
        try:
            self.pub.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # -- the peer ROUTER: answer pings, refute, hand out snapshots ---------------------
    def serve(self) -> None:
        """Answer whatever waits on the ROUTER and read subscription events (non-blocking)."""
        for _ in range(100):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) < 6:
                continue
            envelope, _, _, rid, _, body = frames[:6]
            answers = [encode(a) for a in self._answer(body)]
            self.router.send_multipart([envelope, VERSION, b"ok", rid, EMPTY_META, *answers])
        while self.pub.poll(0):
            self._subscription(self.pub.recv())

    def _answer(self, body: bytes) -> list[Message]:
        try:
            msg = decode(body)
        except DecodeError:
            return []
        if isinstance(msg, Ping):
            self.pings += 1
            return [Ack(self.id, self.seq, msg.nonce, self.id, self.incarnation)]
        if isinstance(msg, Push) and any(n.id == self.id and not isinstance(n, Alive)
                                         for n in msg.news):
            self.incarnation = max(n.incarnation for n in msg.news if n.id == self.id) + 1
            self.beat()
        return []

    def close(self) -> None:
        for s in [self.pub, self.router, *self._dealers.values()]:
            s.close(0)
        self.ctx.term()
