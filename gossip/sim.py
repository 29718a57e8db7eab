"""A simulator: N membership cores over a simulated network, one process, one seed.

The network has latency (+ jitter), independent loss per delivery, partitions and
crashes; the clock is manual and all randomness flows from one ``random.Random``,
so a failing run replays exactly from its seed. Published messages go to the
publisher's current subscribers (the cores' own Subscribe/Unsubscribe actions),
``SendTo`` goes to one member's peer socket. Every message is encoded with the real
codec (its size is the bandwidth figure) and decoded back before delivery.

``python -m gossip.sim --nodes 1000`` prints the figures of ``scenario()``: time
for a join to reach every node, time for a crash to be seen dead by every node,
false suspicions per node-hour at the given loss, inbound bytes per node per second.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from gossip.config import GossipConfig
from gossip.load import ServiceLoad
from gossip.membership import (
    Action,
    MemberChanged,
    Membership,
    Publish,
    SelfInfo,
    SendTo,
    Subscribe,
    Unsubscribe,
)
from gossip.messages import Addresses, Beat, MemberRecord, Message, Snapshot, decode, encode
from gossip.overlay import ring_key

JOIN_RETRY = 0.25  # seconds before a joiner resends its snapshot request (agent: 0.25 s)


@dataclass(frozen=True, slots=True)
class NetConfig:
    latency: float = 0.002  # one-way, seconds
    jitter: float = 0.001  # uniform extra delay 0..jitter
    loss: float = 0.0  # probability each delivery (PUB or peer) is dropped
    tick: float = 0.05  # how often each core's tick() runs
    # CPU stalls, as a loaded machine has: each node freezes now and then for up to
    # `stall` seconds (no ticks; what arrives meanwhile is handled in one batch after).
    stall: float = 0.0
    stall_every: float = 1.0  # mean seconds between a node's stalls (when stall > 0)
    # Each node's timer runs at its own phase inside the tick, as real agents' do
    # (issue 4: in lockstep every observer's probe timed out in the same tick, which
    # hid that a suspicion heard first silenced the others' confirmations).
    phased: bool = True


@dataclass(slots=True)
class _Node:
    core: Membership
    up: bool = True
    busy_until: float = 0.0  # stalled (not ticking, not reading) until then
    bytes_in: int = 0
    msgs_in: int = 0


def addresses(node_id: str) -> Addresses:
    return Addresses(f"http://{node_id}:8080", f"tcp://{node_id}:7946", f"tcp://{node_id}:7947")


def sample_load(rng: random.Random, services: int = 3) -> dict[str, ServiceLoad]:
    """A plausible load report, so beats have their real size."""
    out = {}
    for i in range(services):
        slots = rng.randint(8, 256)
        busy = rng.randint(0, slots)
        out[f"service-{i}"] = ServiceLoad(rng.randint(1, 32), slots, busy, rng.randint(0, 16),
                                          rng.uniform(1, 500), rng.uniform(0, 5000),
                                          rng.uniform(0, 100), rng.uniform(0, 100))
    return out


@dataclass(slots=True)
class Sim:
    """The world: nodes, subscriptions, messages in flight, and observers of state changes."""

    seed: int
    config: GossipConfig = field(default_factory=GossipConfig.lan)
    net: NetConfig = field(default_factory=NetConfig)
    now: float = 0.0
    rng: random.Random = field(init=False)
    nodes: dict[str, _Node] = field(default_factory=dict)
    subs: dict[str, set[str]] = field(default_factory=dict)  # gossip address -> subscribers
    by_peer: dict[str, str] = field(default_factory=dict)  # peer address -> node id
    groups: dict[str, int] = field(default_factory=dict)  # partition group per node
    queue: list[tuple[float, int, str, Message]] = field(default_factory=list)
    watchers: list[Callable[[float, str, MemberChanged], None]] = field(default_factory=list)
    sent: int = 0
    beat_bytes: int = 0  # encoded size of every beat published (for the mean beat size)
    beats: int = 0
    _order: list[str] | None = None  # node ids in tick order within a step
    joining: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (seed, retry at)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- world changes --------------------------------------------------------

    def add(self, node_id: str, dc: str = "dc1", incarnation: int = 0) -> Membership:
        info = SelfInfo(node_id, dc, addresses(node_id), incarnation)
        core = Membership(info, self.config, random.Random(self.rng.getrandbits(64)))
        old = self.nodes.get(node_id)
        if old is not None:  # a restart: its old SUB connections die with the process
            for subscribers in self.subs.values():
                subscribers.discard(node_id)
        self.nodes[node_id] = _Node(core)
        self.by_peer[info.addresses.peer] = node_id
        return core

    def bootstrap(self, n: int, dcs: int = 1) -> None:
        """``n`` nodes that already know each other (as if all joined long ago)."""
        ids = [f"n{i:04d}" for i in range(n)]
        for i, nid in enumerate(ids):
            self.add(nid, f"dc{i % dcs + 1}")
        rows = tuple(MemberRecord(nid, 0, self.nodes[nid].core.me.dc, addresses(nid), "alive")
                     for nid in ids)
        for nid in ids:
            core = self.nodes[nid].core
            core.set_load(sample_load(self.rng))
            self._act(nid, core.on_snapshot(Snapshot("sim", 0, rows), self.now))

    def join(self, node_id: str, seed_id: str, dc: str = "dc1", incarnation: int = 0) -> None:
        """Start ``node_id`` and send its snapshot request to ``seed_id``'s peer socket."""
        core = self.add(node_id, dc, incarnation)
        self._send(node_id, seed_id, core.snapshot_request())
        self.joining[node_id] = (seed_id, self.now + JOIN_RETRY)

    def _retry_joins(self) -> None:
        """Resend a lost snapshot request, as the agent does (else a joiner that never
        joined would count as a node that never sees a crash)."""
        for nid, (seed_id, at) in list(self.joining.items()):
            node = self.nodes.get(nid)
            if node is None or not node.up or len(node.core.members()) > 1:
                del self.joining[nid]
            elif self.now >= at:
                self.joining[nid] = (seed_id, self.now + JOIN_RETRY)
                self._send(nid, seed_id, node.core.snapshot_request())

    def crash(self, node_id: str) -> None:
        self.nodes[node_id].up = False

    def leave(self, node_id: str) -> None:
        self._act(node_id, self.nodes[node_id].core.leave(self.now))

    def partition(self, *groups: set[str]) -> None:
        self.groups = {nid: g for g, members in enumerate(groups) for nid in members}

    def heal(self) -> None:
        self.groups = {}

    # -- the loop -------------------------------------------------------------

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Advance the clock; stop early (True) when ``until()`` holds after a tick round."""
        end = self.now + seconds
        tick = self.net.tick
        while self.now < end:
            start = self.now
            step = min(start + tick, end)
            for nid in self._tick_order():
                # phase in (0, tick]: a node's tick falls inside this step, never before it
                at = min(step, start + tick - self._phase(nid)) if self.net.phased else step
                self._drain(at)
                node = self.nodes.get(nid)
                self.now = max(self.now, at)
                if node is not None and node.up and node.busy_until <= at:
                    self._act(nid, node.core.tick(at))
                    if self.net.stall and self.rng.random() < tick / self.net.stall_every:
                        node.busy_until = at + self.rng.uniform(0, self.net.stall)
            self._drain(step)
            self.now = step
            if self.joining:
                self._retry_joins()
            if until is not None and until():
                return True
        return until is not None and until()

    def _phase(self, node_id: str) -> float:
        """A node's fixed timer phase in ``[0, tick)``, from its id (no draw on the rng)."""
        return ring_key(node_id) / 2**64 * self.net.tick

    def _tick_order(self) -> list[str]:
        if self._order is None or len(self._order) != len(self.nodes):
            ids = list(self.nodes)
            self._order = (sorted(ids, key=lambda nid: -self._phase(nid)) if self.net.phased
                           else ids)
        return self._order

    def _drain(self, until: float) -> None:
        """Deliver every queued message due by ``until``, in time order."""
        while self.queue and self.queue[0][0] <= until:
            t, _, dst, msg = heapq.heappop(self.queue)
            node = self.nodes.get(dst)
            if node is not None and node.busy_until > t:  # read when the stall ends
                self.sent += 1
                heapq.heappush(self.queue, (node.busy_until, self.sent, dst, msg))
                continue
            self.now = max(self.now, t)
            if node is not None and node.up:
                self._act(dst, node.core.on_message(msg, t))

    def _act(self, src: str, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Publish):
                data = encode(a.msg)
                msg = decode(data)
                if isinstance(msg, Beat):
                    self.beat_bytes += len(data)
                    self.beats += 1
                # In a fixed order: each delivery draws from the one rng (loss), and a set
                # of names iterates in an order PYTHONHASHSEED picks — the same seed gave
                # another run in every process (a 40-node death in 1.9 s or 3.1 s).
                for dst in sorted(self.subs.get(self.nodes[src].core.me.addresses.gossip, ())):
                    self._deliver(src, dst, msg, len(data))
            elif isinstance(a, SendTo):
                peer = self.by_peer.get(a.address)
                if peer is not None:
                    self._send(src, peer, a.msg)
            elif isinstance(a, Subscribe):
                self.subs.setdefault(a.address, set()).add(src)
            elif isinstance(a, Unsubscribe):
                self.subs.get(a.address, set()).discard(src)
            elif isinstance(a, MemberChanged):
                for w in self.watchers:
                    w(self.now, src, a)

    def _send(self, src: str, dst: str, msg: Message) -> None:
        data = encode(msg)
        self._deliver(src, dst, decode(data), len(data))

    def _deliver(self, src: str, dst: str, msg: Message, size: int) -> None:
        node = self.nodes.get(dst)
        if node is None or not node.up or not self.nodes[src].up:
            return
        if self.groups and self.groups.get(src, -1) != self.groups.get(dst, -1):
            return
        if self.net.loss and self.rng.random() < self.net.loss:
            return
        node.bytes_in += size
        node.msgs_in += 1
        self.sent += 1
        t = self.now + self.net.latency + self.rng.uniform(0, self.net.jitter)
        heapq.heappush(self.queue, (t, self.sent, dst, msg))

    # -- observation ----------------------------------------------------------

    def up_ids(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.up]

    def state_of(self, observer: str, member: str) -> str | None:
        v = self.nodes[observer].core.member(member)
        return None if v is None else v.state

    def all_see(self, member: str, states: tuple[str, ...], incarnation: int = 0) -> bool:
        """Every up node other than ``member`` lists it in one of ``states``."""
        for nid in self.up_ids():
            if nid == member:
                continue
            v = self.nodes[nid].core.member(member)
            if v is None or v.state not in states or v.incarnation < incarnation:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Report:
    nodes: int
    loss: float
    join_s: float | None  # join request sent -> every node lists the joiner alive
    suspect_s: float | None  # crash -> every node lists it suspect or dead
    dead_s: float | None  # crash -> every node lists it dead
    false_suspicions: int  # suspicions of up members raised during the steady run
    false_deaths: int  # up members declared dead by anyone during the steady run
    node_hours: float
    kbit_in_mean: float  # inbound gossip per node, steady state
    kbit_in_max: float
    beat_bytes: float  # mean encoded beat
    trials: int = 1  # joins and crashes measured; the times are the worst of them

    def lines(self) -> list[str]:
        def s(v: float | None) -> str:
            return "never" if v is None else f"{v:.2f} s"
        fph = self.false_suspicions / self.node_hours if self.node_hours else 0.0
        return [
            f"nodes {self.nodes}, loss {self.loss:.1%}",
            f"join seen by every node       {s(self.join_s)}   (target <= 2 s)",
            f"crash suspected by every node {s(self.suspect_s)}",
            f"crash dead at every node      {s(self.dead_s)}   (target <= 3 s)",
            f"false suspicions              {self.false_suspicions} in {self.node_hours:.1f} "
            f"node-hours = {fph:.3f}/node-hour (target 0); false deaths {self.false_deaths}",
            f"inbound gossip per node       mean {self.kbit_in_mean:.1f} kbit/s, max "
            f"{self.kbit_in_max:.1f} kbit/s   (target <= 328 kbit/s)",
            f"mean beat {self.beat_bytes:.0f} B; every node following every other would take "
            f"{self.beat_bytes * 8 * (self.nodes - 1) / 1000:.0f} kbit/s per node; "
            f"worst of {self.trials} join(s) and crash(es)",
        ]


def scenario(n: int, *, seed: int = 1, loss: float = 0.01, steady: float = 30.0, dcs: int = 1,
             config: GossipConfig | None = None, net: NetConfig | None = None,
             trials: int = 1) -> Report:
    """Bootstrap ``n`` nodes, run steady at ``loss``, then ``trials`` joins and crashes."""
    sim = Sim(seed, config or GossipConfig.lan(), replace(net or NetConfig(), loss=loss))
    sim.bootstrap(n, dcs)
    sim.run(5.0)  # subscriptions settle, beat phases spread, jitter history fills
    suspicions: list[tuple[str, str]] = []

    def watch(now: float, observer: str, ch: MemberChanged) -> None:
        if ch.view.state in ("suspect", "dead") and sim.nodes[ch.view.id].up:
            suspicions.append((ch.view.state, ch.view.id))

    sim.watchers.append(watch)
    for node in sim.nodes.values():
        node.bytes_in = 0
    start = sim.now
    sim.run(steady)
    rates = [node.bytes_in * 8 / 1000 / (sim.now - start) for node in sim.nodes.values()]
    originated = sum(node.core.stats["suspected"] for node in sim.nodes.values())
    false_deaths = len({m for st, m in suspicions if st == "dead"})
    sim.watchers.clear()

    worst: dict[str, float | None] = {"join": 0.0, "suspect": 0.0, "dead": 0.0}

    first: dict[tuple[str, str, str], float] = {}  # (member, category, observer) -> time

    def record(now: float, observer: str, ch: MemberChanged) -> None:
        cats = {"alive": ("alive",), "suspect": ("down",), "dead": ("down", "dead")}
        for cat in cats.get(ch.view.state, ()):
            first.setdefault((ch.view.id, cat, observer), now)

    def took(key: str, member: str, cat: str, t0: float, ok: bool) -> None:
        """Worst over trials of: the last node's first sight of ``member`` in ``cat``."""
        prev = worst[key]
        times = [t for (m, c, _), t in first.items() if m == member and c == cat]
        worst[key] = None if prev is None or not ok else max(prev, max(times) - t0)

    sim.watchers.append(record)
    beat_bytes = sim.beat_bytes / max(1, sim.beats)
    for i in range(trials):
        joiner = f"joiner{i}"
        t0 = sim.now
        sim.join(joiner, sim.rng.choice(sim.up_ids()), "dc1")
        ok = sim.run(10.0, partial(sim.all_see, joiner, ("alive",)))
        took("join", joiner, "alive", t0, ok)
        sim.run(3.0)  # the joiner gets followed; then crash someone, at a random beat phase
        victim = sim.rng.choice(sim.up_ids())
        sim.run(sim.rng.uniform(0, 1))
        t0 = sim.now
        sim.crash(victim)
        ok = sim.run(10.0, partial(sim.all_see, victim, ("suspect", "dead")))
        took("suspect", victim, "down", t0, ok)
        ok = sim.run(10.0, partial(sim.all_see, victim, ("dead",)))
        took("dead", victim, "dead", t0, ok)
        first.clear()
    return Report(n, loss, worst["join"], worst["suspect"], worst["dead"], originated,
                  false_deaths, n * steady / 3600, statistics.mean(rates), max(rates),
                  beat_bytes, trials)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gossip.sim", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.01)
    p.add_argument("--steady", type=float, default=30.0, help="simulated seconds of steady state")
    p.add_argument("--dcs", type=int, default=1)
    p.add_argument("--latency", type=float, default=0.002)
    p.add_argument("--trials", type=int, default=1, help="joins and crashes to measure")
    args = p.parse_args(argv)
    rep = scenario(args.nodes, seed=args.seed, loss=args.loss, steady=args.steady, dcs=args.dcs,
                   net=NetConfig(latency=args.latency), trials=args.trials)
    print("\n".join(rep.lines()))


if __name__ == "__main__":
    main()
