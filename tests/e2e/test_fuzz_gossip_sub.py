"""A hostile member's PUB against a running `scale0 node`: the SUB side, fuzzed.

tests/e2e/test_fuzz_sockets.py throws hostile frames at the workers and peer
ROUTERs; a node only SUBscribes to publishers it learned as members, so here the
attacker joins first, exactly as a node does (testkit/hostilemember.py: a
SnapshotRequest to the node's peer socket, beats, Acks to its pings), waits for
the node's SUB to subscribe, then publishes >= 10^5 hostile messages (bounded
in count and time): random bytes, mutated beats and news, wrong topics, extra
frames, oversized frames, deep msgpack nesting, huge counts, news about other
nodes with absurd incarnations, beats and datacenter summaries with absurd load
figures, cache put/purge messages with bad payloads, forged senders.

Then: the node still serves through its worker, its RSS grew less than a
generous bound, its admin mesh JSON holds no absurd load figure and no more
members than the rules allow (`GossipConfig.max_members`), its own incarnation
is still encodable, and it counted what it dropped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq
from e2e.test_fuzz_sockets import NESTED, Node, _drops, _mutate, _rss_kib
from testkit.hostilemember import HostileMember
from testkit.procs import wait_until

from gossip.config import GossipConfig
from gossip.load import MAX_COUNT, MAX_FIGURE, ServiceLoad
from gossip.messages import (
    MAX_INT,
    Addresses,
    Alive,
    Beat,
    DcSummary,
    Dead,
    Left,
    News,
    Push,
    Reliable,
    Suspect,
    decode,
    encode,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

COUNT = 100_000
BUDGET = 60.0  # seconds of publishing, at most
RSS_BOUND_KIB = 128 * 1024
NOWHERE = Addresses("", "tcp://127.0.0.1:9", "tcp://127.0.0.1:9", "")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The node under attack and its worker (logs in the fixture's tmp dir)."""
    fuzzed = Node(tmp_path_factory.mktemp("fuzzsub"))
    try:
        yield fuzzed
    finally:
        fuzzed.stop()


def _absurd_load(rng: random.Random) -> list[Any]:
    """A load row the codec accepts or not: 10^18 slots, 2**64-1 in flight, NaN, -1, 3e38."""
    big = rng.choice([10**18, MAX_INT, 2**31, -1, 0])
    fig = rng.choice([3.0e38, float("nan"), float("inf"), -5.0, 1e12, 0.5])
    return [rng.choice(["default", "x" * 300, "", "svc"]), big, big, rng.choice([big, 0]),
            rng.choice([big, 0]), fig, fig, fig, fig]


def _raw(type_id: int, sender: str, seq: int, *fields: Any) -> bytes:
    """A message packed by hand, so fields the dataclasses would never hold reach the wire."""
    return b"\x01" + msgpack.packb([type_id, sender, seq, *fields], use_bin_type=True,
                                   use_single_float=True)


class Forge:
    """Hostile messages, from valid ones the attacker could legitimately send."""

    def __init__(self, attacker: HostileMember, target: str, seed: int) -> None:
        self.a, self.target = attacker, target
        self.rng = random.Random(seed)
        self.ghosts = 0
        a = attacker
        load = (("default", ServiceLoad(4, 4, 1, 0, 2.5, 10.0, 0.0, 0.0)),)
        self.valid = [
            encode(Beat(a.id, 5, a.incarnation, a.dc, a.addresses, load, 7, 2, 0,
                        (Suspect(target, 1, a.id),))),
            encode(Push(a.id, 6, (Alive("ghost", 1, a.dc, NOWHERE), Dead(target, 2, a.id)))),
            encode(Reliable(a.id, 7, 1, "cache-purge", b"\x81\xa1v\x01")),
            encode(DcSummary(a.id, 8, "far", 3, load)),
        ]
        self.kinds: list[Callable[[], list[bytes]]] = [
            self.noise, self.mutated, self.mutated, self.wrong_topic, self.extra_frames,
            self.nested, self.absurd_news, self.absurd_load, self.cache, self.forged,
            self.ghost, self.reliable,
        ]

    def next(self, i: int) -> list[bytes]:
        return self.kinds[i % len(self.kinds)]()

    def noise(self) -> list[bytes]:
        return [b"g", self.rng.randbytes(self.rng.randint(0, 200))]

    def mutated(self) -> list[bytes]:
        return [b"g", _mutate(self.rng, self.rng.choice(self.valid))]

    def wrong_topic(self) -> list[bytes]:  # prefix-matches a subscription, names no handler
        topic = self.rng.choice([b"gg", b"g\x00", b"c", b"c:", b"c:other", b"c*x", b"ga" * 100])
        return [topic, self.rng.choice(self.valid)]

    def extra_frames(self) -> list[bytes]:
        return [b"g", *(self.rng.choice(self.valid) for _ in range(self.rng.randint(0, 5)))]

    def nested(self) -> list[bytes]:
        return [b"g", b"\x01" + self.rng.choice(NESTED)]

    def absurd_news(self) -> list[bytes]:
        inc = self.rng.choice([MAX_INT, MAX_INT - 1, 2**63, 2**53 + 1])
        news: News = self.rng.choice([
            Dead(self.target, inc, self.a.id), Suspect(self.target, inc, self.a.id),
            Left(self.target, inc), Alive(self.target, inc, "evil", self.a.addresses),
            Alive(self.a.id, inc, self.a.dc, self.a.addresses),
        ])
        return [b"g", encode(Push(self.a.id, self.a.next_seq(), (news,)))]

    def absurd_load(self) -> list[bytes]:
        a = self.a
        rows = [_absurd_load(self.rng) for _ in range(self.rng.randint(1, 3))]
        if self.rng.random() < 0.5:
            frame = _raw(1, a.id, a.next_seq(), a.incarnation, a.dc, ["", a.gossip, a.peer, ""],
                         rows, 0, 1, 0, [])
        else:
            frame = _raw(7, a.id, a.next_seq(), self.rng.choice(["far", a.dc]),
                         self.rng.choice([3, MAX_INT]), rows)
        return [b"g", frame]

    def cache(self) -> list[bytes]:
        topic = self.rng.choice([b"c*", b"c:default\0"])
        bad = [msgpack.packb({"t": "put", "from": self.target, "svc": "default", "key": 1}),
               msgpack.packb({"t": "ann", "sz": -1, "key": "k" * 20_000}),
               msgpack.packb({"v": 1, "t": "put", "from": self.a.id, "svc": "default"}),
               self.rng.randbytes(32), b"\x01" + NESTED[0]]
        return [topic, *self.rng.sample(bad, self.rng.randint(1, 3))]

    def forged(self) -> list[bytes]:  # speaking as the target itself, or as nobody known
        sender = self.rng.choice([self.target, "nobody"])
        return [b"g", encode(Beat(sender, self.a.next_seq(), 1, "default", NOWHERE,
                                  (("default", ServiceLoad(0, 10**6)),)))]

    def ghost(self) -> list[bytes]:
        """A burst of invented members, in another datacenter: in ours they would crowd
        the attacker itself out of the node's follow set (docs/SECURITY.md), and then
        nothing more would reach the node to fuzz it."""
        news = []
        for _ in range(64):
            self.ghosts += 1
            news.append(Alive(f"ghost-{self.ghosts}", self.a.incarnation, "far", NOWHERE))
        return [b"g", encode(Push(self.a.id, self.a.next_seq(), tuple(news)))]

    def reliable(self) -> list[bytes]:
        kind = self.rng.choice(["leave", "cache-purge", "unknown-kind"])
        sender = self.rng.choice([self.target, "nobody", "ghost-1"])
        payload = self.rng.choice([b"", self.rng.randbytes(64), b"\x01" + NESTED[1][:1000]])
        return [b"g", encode(Reliable(sender, self.a.next_seq(), self.rng.randint(0, 5), kind,
                                      payload))]


def _publish(attacker: HostileMember, forge: Forge, seed: str) -> tuple[int, float]:
    """Publish up to COUNT hostile messages, paced by the node (XPUB_NODROP), beating.

    Counted only while the node is subscribed: a PUB with no subscriber drops silently."""
    attacker.pub.setsockopt(zmq.XPUB_NODROP, 1)
    sent, started, next_beat = 0, time.monotonic(), 0.0
    while sent < COUNT and time.monotonic() - started < BUDGET:
        now = time.monotonic()
        if now >= next_beat:
            attacker.beat()
            attacker.serve()
            next_beat = now + 0.05
        if attacker.subscribers < 1:
            # Unfollowed: a mutated beat of ours moved our address or incarnation in the
            # node's view. Introduce ourselves again, as a restarted node would.
            attacker.join(seed)
            attacker.wait_followed()
        elif attacker.send(forge.next(sent)):
            sent += 1
        else:
            attacker.pub.poll(20, zmq.POLLOUT)  # the node is slower: wait for room
    return sent, time.monotonic() - started


def _sane(row: dict[str, Any]) -> bool:
    if not 0 <= row["incarnation"] <= MAX_INT:
        return False
    for s in row["services"].values():
        counts = [s["workers"], s["slots"], s["in_flight"], s["queued"]]
        figures = [s["p50_ms"], s["rps"], s["fwd_in_rps"], s["fwd_out_rps"]]
        if not all(0 <= c <= MAX_COUNT for c in counts):
            return False
        if not all(0.0 <= f <= MAX_FIGURE for f in figures):  # NaN fails too
            return False
    return True


def test_hostile_publisher_leaves_the_node_serving(node: Node) -> None:
    status, body = node.get()
    assert status == 200, body
    attacker = HostileMember("mallory")
    try:
        attacker.join(node.peer)
        attacker.wait_followed()
        wait_until(lambda: "mallory" in dict(node.members()), timeout=10, what="mallory listed")
        drops_before = _drops(node.admin_text("/_scale0/metrics"))
        rss_before = _rss_kib(node.node.pid)
        forge = Forge(attacker, "fuzzed", seed=3)
        sent, took = _publish(attacker, forge, node.peer)
        print(f"\n{sent} hostile messages in {took:.1f}s ({sent / took:.0f}/s); "
              f"subscribed {attacker.subscribers}, mallory in the node's view: "
              f"{_row(node, attacker.id)}")
        # One last beat the codec accepts with absurd figures: the row shows them clamped.
        absurd = [["default", 10**18, MAX_INT, 0, 0, 3.0e38, 3.0e38, 0.0, 0.0]]
        # Newer than anything the fuzz got accepted in mallory's name (it forges
        # incarnations too): otherwise this beat is dropped as old, rightly.
        newer = max(attacker.incarnation, int(_row(node, attacker.id).get("incarnation", 0))) + 1
        frame = _raw(1, attacker.id, attacker.next_seq(), newer, attacker.dc,
                     ["", attacker.gossip, attacker.peer, ""], absurd, 0, 1, 0, [])
        wait_until(lambda: attacker.send([b"g", frame]), timeout=30, what="room to publish")
        clamped = (MAX_COUNT, MAX_COUNT, MAX_FIGURE)
        # Wait for exactly this beat's row: a fuzzed beat before it may also have had its
        # slots clamped, with other figures.
        wait_until(lambda: next((True for r in [_services(node, attacker.id).get("default")]
                                 if r and (r["slots"], r["workers"], r["p50_ms"]) == clamped),
                                None),
                   timeout=10, what="the absurd beat folded in, clamped")
        # Past the SUB's MAXMSGSIZE last: the node cuts the connection, it must not allocate.
        for size in (5 * 1024 * 1024, 64 * 1024 * 1024 + 1):
            attacker.pub.setsockopt(zmq.XPUB_NODROP, 0)
            attacker.send([b"g", b"\x01" + b"\x00" * size])
        assert sent >= COUNT
        wait_until(lambda: node.get()[0] == 200, timeout=15, what="serving after the fuzz")
        rss_after = _rss_kib(node.node.pid)
        grew = (rss_after - rss_before) / 1024
        print(f"RSS {rss_before} KiB -> {rss_after} KiB ({grew:+.1f} MiB)")
        assert rss_after - rss_before < RSS_BOUND_KIB
        assert node.node.popen.poll() is None

        mesh = node.admin_json("/_scale0/mesh")
        rows = {r["id"]: r for r in mesh["nodes"]}
        print(f"{len(rows)} members listed after {forge.ghosts} invented ones")
        assert len(rows) <= GossipConfig.lan().max_members
        bad = [r for r in rows.values() if not _sane(r)]
        assert not bad, bad[:3]
        me = rows["fuzzed"]
        assert me["state"] == "alive" and me["addresses"]["peer"] == node.peer
        # The node still beats: a refutation past 2**64-1 would leave it unencodable.
        assert _beats(attacker, "fuzzed") is not None
        drops = _drops(node.admin_text("/_scale0/metrics")) - drops_before
        print(f"drops counted: {drops}")
        assert drops >= sent // 4
    finally:
        attacker.close()


def _beats(attacker: HostileMember, member: str, timeout: float = 10.0) -> Beat | None:
    """The next beat `member` publishes, read on a plain SUB of its gossip endpoint."""
    assert attacker.snapshot is not None
    endpoint = next(m.addresses.gossip for m in attacker.snapshot.members if m.id == member)
    sub = attacker.ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"g")
    sub.connect(endpoint)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            attacker.serve()
            if sub.poll(50):
                frames = sub.recv_multipart()
                msg = decode(frames[1]) if len(frames) == 2 else None
                if isinstance(msg, Beat) and msg.sender == member:
                    return msg
        return None
    finally:
        sub.close(0)


def _row(node: Node, member: str) -> dict[str, Any]:
    for row in node.admin_json("/_scale0/mesh")["nodes"]:
        if row["id"] == member:
            return dict(row)
    return {}


def _services(node: Node, member: str) -> dict[str, Any]:
    return dict(_row(node, member).get("services", {}))
