"""The membership core, pure: messages and clock ticks in, actions out ("decide, then act").

One ``Membership`` per node. The shell (gossip/agent.py) feeds it every decoded
message with ``on_message(msg, now)`` and calls ``tick(now)`` often (every
~interval/10), then performs the returned actions: publish on PUB, send over the
peer socket, (un)subscribe, tell the load table. No I/O, no clock, no threads here;
randomness comes from the ``rng`` passed in, so a simulator replays a run exactly.

Protocol in short (docs/GOSSIP.md has the why):

* Join: the shell sends ``snapshot_request()`` to a seed's peer socket; the seed
  answers with a ``Snapshot`` and pushes the joiner's ``Alive`` news at once.
* News (Alive/Suspect/Dead/Left) that changes our view is published immediately
  in a ``Push`` and repeated in the next ``retransmit`` beats, so it floods the
  follow graph (gossip/overlay.py) in a few hops. Precedence is SWIM's: higher
  incarnation wins; at equal incarnation dead/left > suspect > alive.
* Beats every interval carry incarnation, load, a membership digest and the last
  reliable sequence number; a digest that stays different fetches a snapshot.
* Failure detection: gossip/detector.py (doubt -> probe -> suspect -> dead).
  A member that hears itself suspected or declared dead refutes with a higher
  incarnation. LEAVE is a ``Reliable`` envelope plus ``Left`` news.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gossip.actions import (
    Action,
    Deliver,
    MemberChanged,
    MemberView,
    Publish,
    SendTo,
    Subscribe,
    Unsubscribe,
)
from gossip.config import GossipConfig
from gossip.detector import Detector
from gossip.load import ServiceLoad, clamp_report
from gossip.messages import (
    MAX_INT,
    Ack,
    Addresses,
    Alive,
    Beat,
    DcSummary,
    Dead,
    Left,
    LoadReport,
    MemberRecord,
    Message,
    News,
    Ping,
    Probe,
    Push,
    Reliable,
    ResendRequest,
    Snapshot,
    SnapshotRequest,
    Suspect,
)
from gossip.overlay import Overlay, ring_key
from gossip.reliable import Inbox, Outbox, later_process, life_of

__all__ = [
    "Action", "Deliver", "GossipConfig", "MemberChanged", "MemberView", "Membership", "Publish",
    "SelfInfo", "SendTo", "Subscribe", "Unsubscribe",
]

LIVE = ("alive", "suspect")
_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}


@dataclass(frozen=True, slots=True)
class SelfInfo:
    """Who this node is. ``incarnation`` should be higher on every restart (e.g. a clock)."""

    id: str
    dc: str
    addresses: Addresses
    incarnation: int = 0


@dataclass(slots=True)
class _Member:
    id: str
    dc: str
    addresses: Addresses
    incarnation: int
    state: str
    since: float
    last_heard: float | None = None
    load: LoadReport = ()
    life: int = 0  # MemberView.life

    def view(self) -> MemberView:
        return MemberView(self.id, self.dc, self.state, self.incarnation, self.addresses,
                          self.last_heard, self.load, self.life)


def _contrib(member_id: str, incarnation: int) -> int:
    h = hashlib.blake2b(f"{member_id}\0{incarnation}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


class Membership:
    """One node's view of the mesh and the decisions that keep it true. Not thread-safe."""

    def __init__(self, self_info: SelfInfo, config: GossipConfig, rng: random.Random) -> None:
        self.me = self_info
        self.config = config
        self.rng = rng
        self.incarnation = self_info.incarnation
        self.detector = Detector(config.detector())
        self._members: dict[str, _Member] = {}
        self._digest = 0
        self._live = 0
        self._seq = 0
        self._load: LoadReport = ()
        self._news: dict[str, tuple[News, int]] = {}  # member id -> (latest news, repeats left)
        self._fresh: list[News] = []  # learned during the current call; pushed at its end
        self._following: dict[str, str] = {}  # member id -> gossip address subscribed
        self._overlay: Overlay | None = None
        self._dirty = True
        self._next_beat: float | None = None
        self._mismatch: dict[str, float] = {}
        self._next_snapshot = 0.0
        self._zombie_told: dict[str, float] = {}
        # Our reliable numbers carry this life (gossip/reliable.py "Lives"): the incarnation
        # we started with, not the current one (a refutation is no new life).
        self._outbox = Outbox(config.reliable_keep, life=self_info.incarnation)
        self._inbox = Inbox(config.resend_give_up)
        self._left_repeats = -1  # >= 0 once leave() was called
        self._dc_summaries: dict[str, DcSummary] = {}
        self.stats = {"lost": 0, "snapshots": 0, "refuted": 0, "probes": 0, "suspected": 0}
        # What a listed member said that we did not believe (docs/SECURITY.md): counted
        # as drops by the shell. implausible: an incarnation past `max_incarnation_jump`;
        # member_cap: news of a member beyond `max_members`; unknown_sender: an
        # envelope or summary from no member we know; not_reporter: a DcSummary from a
        # member that is not its datacenter's reporter; load_clamped: load rows past
        # gossip/load.py's bounds, kept clamped (the beat still counts).
        self.refused = {"implausible": 0, "member_cap": 0, "unknown_sender": 0,
                        "not_reporter": 0, "load_clamped": 0}
        self._last_seq: dict[str, int] = {}
        self._set(self_info.id, self_info.dc, self_info.addresses, self.incarnation, "alive", 0.0)

    # -- public API -------------------------------------------------------------

    def set_load(self, load: Mapping[str, ServiceLoad]) -> None:
        """Our own per-service load, carried by the next beats."""
        self._load = tuple(sorted(load.items()))
        self._members[self.me.id].load = self._load

    def snapshot_request(self) -> SnapshotRequest:
        """The message a joining node sends to a seed's peer socket (retry is the shell's)."""
        return SnapshotRequest(self.me.id, self._seq, self._alive_self())

    def members(self) -> list[MemberView]:
        """Every member we know, ourselves included, sorted by (dc, id)."""
        return [m.view() for m in sorted(self._members.values(), key=lambda m: (m.dc, m.id))]

    def member(self, member_id: str) -> MemberView | None:
        m = self._members.get(member_id)
        return None if m is None else m.view()

    def digest(self) -> int:
        """Order-independent hash of (id, incarnation) over the live members."""
        return self._digest

    def publishers_to_follow(self) -> set[str]:
        """Member ids whose gossip endpoint we should be subscribed to right now."""
        return set(self._following)

    def follows(self, member_id: str) -> bool:
        """Whether we subscribe to ``member_id``'s PUB (its messages may come to us there)."""
        return member_id in self._following

    def owns_life(self, life: int) -> bool:
        """Whether ``life`` (a peer's ``MemberView.life`` of us) names this process, not an
        earlier one under our id: what it asked of that one died with it."""
        return self._outbox.owns(life)

    def reliable_dropped(self) -> dict[str, int]:
        """Reliable envelopes refused or never recovered, by reason (counted as drops by the
        shell): stale_life, duplicate, overflow (gossip/reliable.py) and skipped gaps."""
        return {**self._inbox.dropped, "skipped": self._inbox.skipped}

    def dc_summaries(self) -> dict[str, DcSummary]:
        """Latest summary heard from each other datacenter."""
        return dict(self._dc_summaries)

    def publish_reliable(self, kind: str, payload: bytes) -> list[Action]:
        """Publish an envelope every follower gets in order or notices missing (cache purges)."""
        return [Publish(self._outbox.next(self.me.id, self._next_seq(), kind, payload))]

    def leave(self, now: float) -> list[Action]:
        """Say goodbye: reliable LEAVE now, ``Left`` news repeated for a few intervals."""
        me = self._members[self.me.id]
        me.state = "left"
        self._left_repeats = self.config.leave_repeats
        self._next_beat = now + self.config.interval
        leave = self._outbox.next(self.me.id, self._next_seq(), "leave", b"")
        return [Publish(leave), Publish(Push(self.me.id, self._next_seq(),
                                             (Left(self.me.id, self.incarnation),)))]

    def on_snapshot(self, snapshot: Snapshot, now: float) -> list[Action]:
        """Merge a full member list (the answer to ``snapshot_request``)."""
        return self.on_message(snapshot, now)

    def on_message(self, msg: Message, now: float) -> list[Action]:
        """Digest one decoded message from PUB/SUB or the peer socket."""
        out: list[Action] = []
        if msg.sender == self.me.id or self._left_repeats >= 0:
            return out
        self._count_seq(msg)
        if isinstance(msg, Beat):
            self._on_beat(msg, now, out)
        elif isinstance(msg, Push):
            for n in msg.news:
                self._apply(n, now, out)
        elif isinstance(msg, SnapshotRequest):
            self._heard(msg.sender, now)
            self._apply(msg.me, now, out)
            out.append(SendTo(msg.sender, msg.me.addresses.peer, self._snapshot()))
        elif isinstance(msg, Snapshot):
            # Old news to everyone else: merged quietly, not pushed (the digest repairs).
            self.stats["snapshots"] += 1
            for rec in msg.members:
                self._merge_record(rec, msg.sender, now, out)
            self._fresh = [n for n in self._fresh if n.id == self.me.id]
        elif isinstance(msg, Reliable | DcSummary) and msg.sender not in self._members:
            self.refused["unknown_sender"] += 1  # no stream or summary kept for a stranger
        elif isinstance(msg, Reliable):
            self._heard(msg.sender, now)
            ready, gap = self._inbox.accept(msg, now)
            self._deliver(ready, now, out)
            self._ask_resend(msg.sender, gap, out)
        elif isinstance(msg, ResendRequest):
            self._reply(msg.sender, self._outbox.resend(msg.first, msg.last), out)
        elif isinstance(msg, DcSummary):
            self._heard(msg.sender, now)
            if self._overlay is None or self._overlay.reporter(msg.dc) != msg.sender:
                self.refused["not_reporter"] += 1  # one summary per dc we know, from its reporter
            elif msg.dc != self.me.dc:
                self._dc_summaries[msg.dc] = replace(msg, load=self._clamped(msg.load),
                                                     alive=min(msg.alive, len(self._members)))
        elif isinstance(msg, Ping):
            if msg.target == self.me.id:
                ack = Ack(self.me.id, self._seq, msg.nonce, self.me.id, self.incarnation)
                self._reply(msg.sender, [ack], out)
        elif isinstance(msg, Probe):
            silent = self.detector.silent_for(msg.target, now)
            target = self._members.get(msg.target)
            if (silent is not None and target is not None and target.state in LIVE
                    and not self.detector.in_doubt(msg.target)
                    and silent < self.detector.window(msg.target)):
                ack = Ack(self.me.id, self._seq, msg.nonce, msg.target, target.incarnation)
                self._reply(msg.sender, [ack], out)
        elif isinstance(msg, Ack) and msg.nonce == self.detector.nonce(msg.target):
            self.detector.acked(msg.target, now)
        self._flush(out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Time passed: beats, doubts, suspicions, follow changes, snapshots, cleanup."""
        out: list[Action] = []
        c = self.config
        if self._next_beat is None:
            self._next_beat = now + self.rng.uniform(0, c.interval)  # spread the beats
        if self._left_repeats >= 0:
            if self._left_repeats > 0 and now >= self._next_beat:
                self._left_repeats -= 1
                self._next_beat = now + c.interval
                out.append(Publish(Push(self.me.id, self._next_seq(),
                                        (Left(self.me.id, self.incarnation),))))
            return out
        to_probe, to_suspect = self.detector.due(now)
        for target in to_probe:
            self._probe(target, out)
        for target in to_suspect:
            m = self._members.get(target)
            if m is not None and m.state in LIVE:
                # Also when someone else's suspicion got here first: our own failed
                # probe is an independent confirmation (Lifeguard), and without it a
                # real mesh — whose observers tick at different phases, so the first
                # suspicion floods before the others' probes time out — would wait
                # the single-observer `suspicion_max` (issue 4: 5-6 s instead of 2).
                self.stats["suspected"] += 1
                self._apply(Suspect(target, m.incarnation, self.me.id), now, out)
        for target, inc in self.detector.expired(now):
            m = self._members.get(target)
            if m is not None and m.state == "suspect" and m.incarnation == inc:
                self._apply(Dead(target, inc, self.me.id), now, out)
        if self._dirty:
            self._refollow(now, out)
        if now >= self._next_beat:
            self._next_beat += c.interval
            if self._next_beat <= now:
                self._next_beat = now + c.interval
            out.append(Publish(self._beat()))
            summary = self._summary()
            if summary is not None:
                out.append(Publish(summary))
            self._reap(now, out)
        self._deliver(self._inbox.expire(now), now, out)
        self._flush(out)
        return out

    # -- internals --------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _alive_self(self) -> Alive:
        return Alive(self.me.id, self.incarnation, self.me.dc, self.me.addresses)

    def _count_seq(self, msg: Message) -> None:
        if isinstance(msg, Beat | Push | Reliable | DcSummary) and msg.sender in self._members:
            last = self._last_seq.get(msg.sender)
            if last is not None and msg.seq > last + 1:
                self.stats["lost"] += msg.seq - last - 1
            if last is None or msg.seq > last:
                self._last_seq[msg.sender] = msg.seq

    def _set(  # noqa: PLR0917 - one call shape for every state change
        self, mid: str, dc: str, addrs: Addresses, inc: int, state: str, now: float
    ) -> _Member:
        """Create or update a member, keeping the digest and live count in step."""
        m = self._members.get(mid)
        if m is not None and m.state in LIVE:
            self._digest ^= _contrib(mid, m.incarnation)
            self._live -= 1
        was_live = m is not None and m.state in LIVE
        if m is None:
            m = self._members[mid] = _Member(mid, dc, addrs, inc, state, now)
        if was_live != (state in LIVE) or m.dc != dc:
            self._dirty = True  # the follow graph changes with the live set
        if m.addresses != addrs and mid in self._following:
            self._dirty = True
        m.dc, m.addresses, m.incarnation = dc, addrs, inc
        if m.state != state:
            m.since = now
        m.state = state
        if state in LIVE:
            self._digest ^= _contrib(mid, inc)
            self._live += 1
        elif was_live:
            self.detector.clear(mid)
        return m

    def _apply(self, n: News, now: float, out: list[Action]) -> None:
        """Apply one news item with SWIM precedence; new information is relayed."""
        m = self._members.get(n.id)
        if not self._believable(n, m):
            return
        if n.id == self.me.id:
            self._about_me(n)
            return
        if isinstance(n, Alive):
            if m is None or n.incarnation > m.incarnation:
                was_dead = m is not None and m.state not in LIVE
                self._set(n.id, n.dc, n.addresses, n.incarnation, "alive", now)
                self.detector.clear(n.id)
                addr = self._following.get(n.id)  # a dead one too (`dead_follow`)
                if addr == n.addresses.gossip and (was_dead or self.detector.restarted(n.id, now)):
                    out += [Unsubscribe(addr), Subscribe(addr)]  # redial: ZeroMQ's backoff
                self._changed(n, out)
            return
        if m is None:
            return  # nothing to say about a member we do not know (its Alive will come)
        if isinstance(n, Suspect):
            if (m.state == "alive" and n.incarnation >= m.incarnation) or (
                    m.state == "suspect" and n.incarnation > m.incarnation):
                self._set(n.id, m.dc, m.addresses, n.incarnation, "suspect", now)
                self.detector.suspect(n.id, n.incarnation, n.by, now, self._possible(n.id))
                self._changed(n, out)
            elif m.state == "suspect" and n.incarnation == m.incarnation:
                if not self.detector.suspected(n.id):
                    return
                before = self.detector.timeout(n.id)
                self.detector.suspect(n.id, n.incarnation, n.by, now)
                if self.detector.timeout(n.id) < before:  # a new confirmation: pass it on
                    self._fresh.append(n)
            return
        state = "dead" if isinstance(n, Dead) else "left"
        if n.incarnation >= m.incarnation and _RANK[state] > _RANK[m.state]:
            self._set(n.id, m.dc, m.addresses, n.incarnation, state, now)
            self._changed(n, out)

    def _believable(self, n: News, m: _Member | None) -> bool:
        """Whether news may change our view at all: its incarnation is at most
        ``max_incarnation_jump`` past what we know of its subject (ourselves for a member
        we do not know), and it names no new member once we hold ``max_members``.

        Incarnations start at wall-clock milliseconds and grow by one per refutation, so
        a real jump is a restart's downtime; a jump to 2**64 - 1 is a liar making its
        subject unable to refute (it cannot outrank the top of the range)."""
        ref = m.incarnation if m is not None else self.incarnation
        if n.incarnation > ref + self.config.max_incarnation_jump:
            self.refused["implausible"] += 1
            return False
        if m is None and len(self._members) >= self.config.max_members:
            self.refused["member_cap"] += 1
            return False
        return True

    def _about_me(self, n: News) -> None:
        """Someone says something about us: refute suspicion, death, a departure we did not
        announce (we return early while leaving) or an Alive with someone else's addresses,
        with a new incarnation, so nobody can speak for us (docs/SECURITY.md)."""
        me = self._members[self.me.id]
        forged = isinstance(n, Alive) and (n.addresses, n.dc) != (me.addresses, me.dc)
        if (isinstance(n, Suspect | Dead | Left) or forged) and n.incarnation >= self.incarnation:
            self.incarnation = min(n.incarnation + 1, MAX_INT)  # still encodable
            self.stats["refuted"] += 1
            self._set(me.id, me.dc, me.addresses, self.incarnation, "alive", me.since)
            self._fresh.append(self._alive_self())

    def _possible(self, target: str) -> int | None:
        """Confirmations to expect about ``target``: its observers but the first suspecter
        and one straggler (a lost beat in its history stretches its window to up to
        ``window_max``); waiting for every last observer of a small mesh made a crash
        wait for the slowest window (the simulator at 4-8 nodes)."""
        if self._overlay is None:
            return None
        return len(self._overlay.observers(target)) - 2

    def _changed(self, n: News, out: list[Action]) -> None:
        self._fresh.append(n)
        out.append(MemberChanged(self._members[n.id].view()))

    def _flush(self, out: list[Action]) -> None:
        """Push what we learned during this call, and queue it for the next beats."""
        if not self._fresh:
            return
        fresh, self._fresh = self._fresh, []
        for i in range(0, len(fresh), 64):
            out.append(Publish(Push(self.me.id, self._next_seq(), tuple(fresh[i : i + 64]))))
        for n in fresh:
            self._news[n.id] = (n, self.config.retransmit)

    def _heard(self, mid: str, now: float) -> None:
        self.detector.heard(mid, now)
        m = self._members.get(mid)
        if m is not None:
            m.last_heard = now

    def _on_beat(self, b: Beat, now: float, out: list[Action]) -> None:
        m = self._members.get(b.sender)
        if m is not None and m.state not in LIVE and b.incarnation <= m.incarnation:
            # A member we think dead/left still speaks: tell it, so it refutes.
            if now >= self._zombie_told.get(b.sender, 0.0):
                self._zombie_told[b.sender] = now + self.config.interval
                news: News = (Dead(b.sender, m.incarnation, self.me.id) if m.state == "dead"
                              else Left(b.sender, m.incarnation))
                out.append(SendTo(b.sender, b.addresses.peer,
                                  Push(self.me.id, self._next_seq(), (news,))))
            return
        mark = len(out)
        self._apply(Alive(b.sender, b.incarnation, b.dc, b.addresses), now, out)
        m = self._members.get(b.sender)
        if m is None:
            return  # not believed (the member cap, an implausible incarnation)
        if b.incarnation == m.incarnation:  # a current beat, not a late or disbelieved one
            self._life(m, life_of(b.rseq), out, mark)
        self._heard(b.sender, now)
        m.load = self._clamped(b.load)
        for n in b.news:
            self._apply(n, now, out)
        ready, gap = self._inbox.head(b.sender, b.rseq, now)  # a new life closes the old
        self._deliver(ready, now, out)
        self._ask_resend(b.sender, gap, out)
        if b.digest == self._digest:
            self._mismatch.pop(b.sender, None)
            return
        since = self._mismatch.setdefault(b.sender, now)
        if now - since >= self.config.digest_grace and now >= self._next_snapshot:
            self._next_snapshot = now + self.config.snapshot_cooldown
            self._mismatch.clear()
            out.append(SendTo(b.sender, b.addresses.peer, self.snapshot_request()))

    def _life(self, m: _Member, life: int, out: list[Action], mark: int) -> None:
        """A beat says which process ``m`` is (``MemberView.life``): the first one heard,
        then a later process only (a restart: what the earlier one was asked is lost with
        it; ``later_process``). Told as one ``MemberChanged`` with this beat's (in place of
        one it caused since ``mark``)."""
        if not life or (m.life and not later_process(m.life, life)):
            return  # not said, the same process (roll-overs), or an older one's late beat
        m.life = life
        changed = MemberChanged(m.view())
        for i in range(len(out) - 1, mark - 1, -1):
            action = out[i]
            if isinstance(action, MemberChanged) and action.view.id == m.id:
                out[i] = changed
                return
        out.append(changed)

    def _clamped(self, load: LoadReport) -> LoadReport:
        safe, clamped = clamp_report(load)
        self.refused["load_clamped"] += clamped
        return safe

    def _merge_record(self, rec: MemberRecord, by: str, now: float, out: list[Action]) -> None:
        if rec.id != self.me.id and rec.id not in self._members and rec.state not in LIVE:
            if not self._believable(Left(rec.id, rec.incarnation), None):
                return
            self._set(rec.id, rec.dc, rec.addresses, rec.incarnation, rec.state, now)
            return  # remember the dead so a stale Alive cannot resurrect them
        self._apply(Alive(rec.id, rec.incarnation, rec.dc, rec.addresses), now, out)
        if rec.state == "suspect":
            self._apply(Suspect(rec.id, rec.incarnation, by), now, out)
        elif rec.state == "dead":
            self._apply(Dead(rec.id, rec.incarnation, by), now, out)
        elif rec.state == "left":
            self._apply(Left(rec.id, rec.incarnation), now, out)

    def _snapshot(self) -> Snapshot:
        rows = tuple(MemberRecord(m.id, m.incarnation, m.dc, m.addresses, m.state)
                     for m in self._members.values())
        return Snapshot(self.me.id, self._seq, rows, self._digest)

    def _reply(self, to: str, msgs: list[Reliable] | list[Ack], out: list[Action]) -> None:
        m = self._members.get(to)
        if m is not None:
            out.extend(SendTo(to, m.addresses.peer, x) for x in msgs)

    def _ask_resend(self, publisher: str, gap: tuple[int, int] | None, out: list[Action]
                    ) -> None:
        if gap is not None:
            req = ResendRequest(self.me.id, self._seq, gap[0], gap[1])
            m = self._members.get(publisher)
            if m is not None:
                out.append(SendTo(publisher, m.addresses.peer, req))

    def _deliver(self, ready: list[Reliable], now: float, out: list[Action]) -> None:
        for r in ready:
            if r.kind == "leave":
                m = self._members.get(r.sender)
                if m is not None:
                    self._apply(Left(r.sender, m.incarnation), now, out)
            else:
                out.append(Deliver(r.sender, r.kind, r.payload))

    def _probe(self, target: str, out: list[Action]) -> None:
        m = self._members.get(target)
        if m is None or m.state not in LIVE:
            return
        self.stats["probes"] += 1
        nonce = self.detector.nonce(target)
        out.append(SendTo(target, m.addresses.peer, Ping(self.me.id, self._seq, nonce, target)))
        observers = sorted(self._overlay.observers(target)) if self._overlay else []
        live = [self._members[o] for o in observers
                if o != self.me.id and o in self._members and self._members[o].state == "alive"]
        for o in self.rng.sample(live, min(self.config.probe_fanout, len(live))):
            out.append(SendTo(o.id, o.addresses.peer, Probe(self.me.id, self._seq, nonce, target)))

    def _refollow(self, now: float, out: list[Action]) -> None:
        """Recompute whom to follow from the current view; emit (un)subscribes."""
        self._dirty = False
        live = [(m.id, m.dc) for m in self._members.values() if m.state in LIVE]
        self._overlay = Overlay(live, self.config.successors, self.config.dc_cap)
        want = self._overlay.followees(self.me.id)
        dead = [m for m in self._members.values()
                if m.state == "dead" and now - m.since < self.config.dead_retention]
        mykey = ring_key(self.me.id)
        dead.sort(key=lambda m: ring_key(m.id) ^ mykey)
        want.update(m.id for m in dead[: self.config.dead_follow])
        for mid in list(self._following):
            addr = self._following[mid]
            m = self._members.get(mid)
            if mid not in want or m is None or m.addresses.gossip != addr:
                del self._following[mid]
                self.detector.unwatch(mid)
                self._inbox.forget(mid)
                out.append(Unsubscribe(addr))
        for mid in sorted(want):
            m = self._members[mid]
            if mid not in self._following:
                self._following[mid] = m.addresses.gossip
                out.append(Subscribe(m.addresses.gossip))
            if m.state in LIVE:
                self.detector.watch(mid, now)
            else:
                self.detector.unwatch(mid)

    def _beat(self) -> Beat:
        news = sorted(self._news.items(), key=lambda kv: -kv[1][1])[: self.config.max_news_per_beat]
        for mid, (n, left) in news:
            if left <= 1:
                del self._news[mid]
            else:
                self._news[mid] = (n, left - 1)
        return Beat(self.me.id, self._next_seq(), self.incarnation, self.me.dc,
                    self.me.addresses, self._load, self._digest, self._live,
                    self._outbox.last, tuple(n for _, (n, _) in news))

    def _summary(self) -> DcSummary | None:
        """Our datacenter's aggregate, if we are its reporter."""
        if self._overlay is None or self._overlay.reporter(self.me.dc) != self.me.id:
            return None
        total: dict[str, list[float]] = {}
        alive = 0
        for m in self._members.values():
            if m.dc != self.me.dc or m.state != "alive":
                continue
            alive += 1
            for name, s in m.load:
                t = total.setdefault(name, [0.0] * 8)
                for i, v in enumerate((s.workers, s.slots, s.in_flight, s.queued, s.p50_ms,
                                       s.rps, s.fwd_in_rps, s.fwd_out_rps)):
                    t[i] += v
        load = tuple(
            (name, ServiceLoad(int(t[0]), int(t[1]), int(t[2]), int(t[3]), t[4] / max(1, alive),
                               t[5], t[6], t[7]))
            for name, t in sorted(total.items()))
        return DcSummary(self.me.id, self._next_seq(), self.me.dc, alive, load)

    def _reap(self, now: float, out: list[Action]) -> None:
        """Forget dead and left members after ``dead_retention``."""
        for m in [m for m in self._members.values() if m.state not in LIVE
                  and now - m.since >= self.config.dead_retention and m.id != self.me.id]:
            del self._members[m.id]
            self._zombie_told.pop(m.id, None)
            self._last_seq.pop(m.id, None)
            # Its position is kept: a partition longer than dead_retention heals into the
            # purges it published meanwhile (asked for as a gap), not past them.
            self._inbox.forget(m.id)
            self._dirty = True
