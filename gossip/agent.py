"""The gossip I/O shell: runs the pure `Membership` core on a timer and on every message.

`GossipAgent` owns a `Transport` (PUB/SUB + peer sockets) and does what the core
decides: `Publish` goes out on PUB (topic `b"g"`, one codec frame), `SendTo` is a
peer request of kind `"gossip"` whose reply body carries the receiver's answers
(Snapshot for a SnapshotRequest, Ack for a Ping, Reliables for a ResendRequest) so
a node behind NAT is answered on the connection it opened, `Subscribe` and
`Unsubscribe` move the SUB socket, `MemberChanged` reaches the `on_change`
listeners (the load table), `Deliver` reaches the `on_reliable` handler of its kind.

Joining: every seed (and every peer mDNS finds) is sent a SnapshotRequest, round
robin, with exponential backoff and jitter, until one answers with a Snapshot;
from then on everything is learned by gossip. A seed that later is no live member of
the view (a partition outlived `dead_retention`: each side forgot the other) is asked
again every `rejoin_beats` intervals, which merges the halves once the link heals.
Stopping first answers what peers asked of us and refuses what they ask from then on
(`Transport.stop_serving`: nothing they wait for is swallowed), then says LEAVE twice over: on
PUB (lossy) and straight to a sample of live members over the peer socket, waiting
briefly for their acknowledgements (a member that acknowledged has applied it: it sends
us nothing more). `abort()` closes the sockets without a word,
which is what a crash looks like to the others.

Addresses: endpoints bound on a wildcard host (`*`, `0.0.0.0`) are advertised with
`AgentConfig.advertise` (NAT, containers) or else this host's primary address.
The incarnation defaults to wall-clock milliseconds, so a restart always outranks
the previous life without any state on disk. One agent, one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from gossip.config import GossipConfig
from gossip.discovery import MdnsDiscovery
from gossip.load import ServiceLoad
from gossip.membership import (
    Action,
    Deliver,
    MemberChanged,
    Membership,
    MemberView,
    Publish,
    SelfInfo,
    SendTo,
    Subscribe,
    Unsubscribe,
)
from gossip.messages import (
    Ack,
    Beat,
    DcSummary,
    Dead,
    DecodeError,
    Message,
    Ping,
    Probe,
    Push,
    Reliable,
    ResendRequest,
    Snapshot,
    SnapshotRequest,
    Suspect,
    decode,
    encode,
)
from gossip.transport import PeerError, PeerReply, PeerRequest, Refuse, Transport, TransportConfig

log = logging.getLogger("scale0.gossip.agent")
# Failure-detection timeline at DEBUG (doubt -> ping/probe -> suspect -> confirmations ->
# dead), one line per event with the monotonic clock, to compare a real run with the
# simulator's; off (one level check per action) unless --log-level DEBUG.
trace = logging.getLogger("scale0.gossip.timeline")

TOPIC = b"g"
KIND = "gossip"
# Which message types each channel carries; anything else on it is a forgery or a bug,
# dropped and counted. A Reliable (a LEAVE, a cache purge) only ever comes from its
# publisher's PUB or as the answer to our own ResendRequest to that publisher, so a
# member cannot hand us an envelope in another's name over the peer socket.
SUB_TYPES = (Beat, Push, Reliable, DcSummary)
REQUEST_TYPES = (SnapshotRequest, Push, Ping, Probe, ResendRequest)
ANSWER_TYPES: dict[type, tuple[type, ...]] = {
    SnapshotRequest: (Snapshot,), Ping: (Ack,), Probe: (Ack,), ResendRequest: (Reliable,),
}
_WILDCARD = re.compile(r"^(?P<scheme>[a-z]+://)?(?P<host>\*|0\.0\.0\.0|\[::\]|::)(?P<rest>:.*)$")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the shell needs besides the core's own `GossipConfig`."""

    gossip: GossipConfig = field(default_factory=GossipConfig.lan)
    transport: TransportConfig = field(default_factory=TransportConfig)
    seeds: tuple[str, ...] = ()  # peer endpoints, tcp://HOST:PORT
    advertise: str | None = None  # host put in place of a wildcard in advertised endpoints
    discover: str | None = None  # "mdns", or None
    join_backoff: float = 0.25  # first retry delay; doubles up to join_backoff_max
    join_backoff_max: float = 10.0
    # Not in a mesh this long after start, with seeds to ask: warn (then at most once a
    # minute), since a typo in --seed or a firewalled peer port otherwise looks like a
    # healthy node that happens to be alone.
    join_warn_after: float = 5.0
    # After the join, a seed that is no live member of our view is asked again every this
    # many `gossip.interval`s (+-25%): one small request, only while the seed is lost.
    rejoin_beats: float = 5.0
    send_timeout: float = 1.0  # one peer message and its answers
    leave_fanout: int = 32  # live members told of our LEAVE directly
    leave_timeout: float = 1.0  # how long stop() waits for their acknowledgements
    max_sends: int = 1024  # peer messages in flight; more are dropped and counted


def primary_ip() -> str:
    """This host's address on its default route (no packet is sent), else loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def advertised(endpoint: str, host: str | None) -> str:
    """`endpoint` with a wildcard host replaced by `host` (or the primary address)."""
    m = _WILDCARD.match(endpoint)
    if not m:
        return endpoint
    return f"{m['scheme'] or ''}{host or primary_ip()}{m['rest']}"


def unreachable_advert(bound: str, advert: str, discover: str | None) -> str | None:
    """Why announcing `advert` over mDNS reaches nobody, or None: a wildcard bind
    advertised as loopback (no default route to find our address from) is heard on the
    LAN but cannot be dialled from another host."""
    if discover != "mdns" or not _WILDCARD.match(bound):
        return None  # an explicit loopback bind is a local mesh, meant as it is
    host = advert.split("://", 1)[-1].rsplit(":", 1)[0]
    if host.startswith("127.") or host in ("[::1]", "::1", "localhost"):
        return (f"--discover mdns: bound to all interfaces but announcing {advert}, since no "
                "default route says which address is ours; peers on other hosts cannot "
                "reach it: give --advertise IP")
    return None


class GossipAgent:
    """One node's membership in the mesh. `await start()`, then `await stop()`."""

    def __init__(self, config: AgentConfig, self_info: SelfInfo,
                 load_source: Callable[[], dict[str, ServiceLoad]],
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._self_info = self_info
        self._load_source = load_source
        self._clock = clock
        self._rng = rng or random.Random()
        self.transport = Transport(config.transport, clock=clock)
        self.membership: Membership | None = None
        self._listeners: list[Callable[[MemberView], None]] = []
        self._reliable: dict[str, Callable[[str, bytes], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seeds: list[str] = list(config.seeds)
        self._seed_added = asyncio.Event()
        self._seed_ids: dict[str, str] = {}  # seed endpoint -> the id that answered there
        self._discovery: MdnsDiscovery | None = None
        self.joined = asyncio.Event()
        self.counters: dict[str, Counter[str]] = {"in": Counter(), "out": Counter(),
                                                  "dropped": Counter()}

    # -- the API the node calls ---------------------------------------------------
    async def start(self) -> None:
        """Bind, start beating, join from the seeds (in the background), start discovery."""
        t = self.transport
        t.on_topic(TOPIC, self._on_sub)
        t.register_handler(KIND, self._on_peer)
        t.start()
        info = self._self_info
        host = self.config.advertise
        addrs = replace(info.addresses, gossip=advertised(t.gossip_endpoint, host),
                        peer=advertised(t.peer_endpoint, host),
                        http=advertised(info.addresses.http, host) if info.addresses.http else "",
                        workers=(advertised(info.addresses.workers, host)
                                 if info.addresses.workers else ""))
        incarnation = info.incarnation or time.time_ns() // 1_000_000
        self.self_info = replace(info, addresses=addrs, incarnation=incarnation)
        self.membership = Membership(self.self_info, self.config.gossip, self._rng)
        self._spawn(self._ticker())
        if self._seeds or self.config.discover:
            self._spawn(self._join())
            self._spawn(self._rejoin())
        if (why := unreachable_advert(t.peer_endpoint, addrs.peer,
                                      self.config.discover)) is not None:
            log.warning("%s", why)
        if self.config.discover == "mdns":
            self._discovery = MdnsDiscovery(info.id, info.dc, addrs.peer, self.add_seed)
            await self._discovery.start()

    async def stop(self) -> None:
        """Say LEAVE (PUB and direct, acknowledged or timed out), then close everything."""
        m = self.membership
        if m is not None and not self.transport.closed:
            self.transport.stop_serving()  # its answers leave during the LEAVE's round trip
            actions = m.leave(self._clock())
            leave_push = next((a.msg for a in actions
                               if isinstance(a, Publish) and isinstance(a.msg, Push)), None)
            self._execute(actions)
            if leave_push is not None:
                live = [v for v in m.members() if v.id != self.self_info.id and v.state == "alive"]
                sample = self._rng.sample(live, min(len(live), self.config.leave_fanout))
                sends = [self._send(v.id, v.addresses.peer, leave_push, self.config.leave_timeout)
                         for v in sample]
                await asyncio.gather(*sends)
        await self.abort(linger_ms=200)  # a moment for the PUB copy of the LEAVE to go out

    async def abort(self, linger_ms: int = 0) -> None:
        """Close without a word, as a crash would (tests use it to play dead)."""
        for task in list(self._tasks):
            task.cancel()
        if self._discovery is not None:
            await self._discovery.stop()
            self._discovery = None
        self.transport.close(linger_ms)

    def on_change(self, listener: Callable[[MemberView], None]) -> None:
        """Call `listener(view)` on the loop whenever a member's state or address changes."""
        self._listeners.append(listener)

    def on_reliable(self, kind: str, handler: Callable[[str, bytes], None]) -> None:
        """Call `handler(sender_id, payload)` for every reliable envelope of `kind`, in order."""
        self._reliable[kind] = handler

    def publish_reliable(self, kind: str, payload: bytes) -> None:
        """Publish an envelope every follower receives in order or repairs (cache purges)."""
        assert self.membership is not None, "start() the agent first"
        self._execute(self.membership.publish_reliable(kind, payload))

    def members(self) -> list[MemberView]:
        return self.membership.members() if self.membership is not None else []

    def owns_life(self, life: int) -> bool:
        """Whether a peer's `MemberView.life` of us names this process (not an earlier one
        under our id, whose work died with it)."""
        return self.membership is not None and self.membership.owns_life(life)

    def add_seed(self, endpoint: str) -> None:
        """One more peer endpoint to join through (mDNS calls this)."""
        if endpoint not in self._seeds:
            self._seeds.append(endpoint)
            self._seed_added.set()
            if self.joined.is_set() and self.membership is not None:
                known = {v.addresses.peer for v in self.membership.members()}
                if endpoint not in known:  # a LAN island we do not know: introduce ourselves
                    self._spawn(self._send("", endpoint, self.membership.snapshot_request()))

    @property
    def bound_endpoints(self) -> dict[str, str]:
        """The endpoints really bound (ephemeral ports resolved), by socket name."""
        return {"gossip": self.transport.gossip_endpoint, "peer": self.transport.peer_endpoint}

    def stats(self) -> dict[str, dict[str, int]]:
        """Messages in/out by kind and drops by reason, for metrics."""
        dropped = self.counters["dropped"] + self.transport.stats.dropped
        if self.membership is not None:
            dropped.update({f"news:{k}": v for k, v in self.membership.refused.items() if v})
            dropped.update({f"reliable:{k.replace('_', '-')}": v
                            for k, v in self.membership.reliable_dropped().items() if v})
        return {"in": dict(self.counters["in"]), "out": dict(self.counters["out"]),
                "dropped": dict(dropped)}

    # -- loops --------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gossip task failed", exc_info=task.exception())

    async def _ticker(self) -> None:
        assert self.membership is not None
        interval = self.config.gossip.interval
        next_load = 0.0
        while True:
            now = self._clock()
            if now >= next_load:  # the broker's figures, once per beat
                next_load = now + interval
                try:
                    self.membership.set_load(self._load_source())
                except Exception:
                    log.exception("load source failed; beating with the previous load")
            try:
                self._execute(self.membership.tick(now))
            except Exception as exc:  # one bad member's data must not end our gossip for good
                self.transport.drops.drop("tick:error", repr(exc)[:200])
            await asyncio.sleep(interval / 10)  # a timer, not synchronisation

    async def _join(self) -> None:
        assert self.membership is not None
        delay, turn = self.config.join_backoff, 0
        started, warned = self._clock(), -math.inf
        while not self.joined.is_set():
            seeds = [s for s in self._seeds if s != self.self_info.addresses.peer]
            if seeds:
                seed = seeds[turn % len(seeds)]
                turn += 1
                await self._send("", seed, self.membership.snapshot_request())
                if self.joined.is_set():
                    log.info("joined the mesh through %s", seed)
                    return
                now = self._clock()
                if now - started >= self.config.join_warn_after and now - warned >= 60.0:
                    warned = now
                    log.warning("not in a mesh yet: no seed has answered in %.0f s (%s); "
                                "still trying — check each seed's address and that its peer "
                                "port is reachable from here", now - started,
                                ", ".join(s[:100] for s in seeds[:8]))
            self._seed_added.clear()
            jittered = delay * self._rng.uniform(0.5, 1.5)
            delay = min(delay * 2, self.config.join_backoff_max)
            try:  # a newly discovered seed is worth trying at once
                await asyncio.wait_for(self._seed_added.wait(), jittered)
            except TimeoutError:
                pass

    def _lost_seeds(self) -> list[str]:
        """Seeds that are not a live member of our view (by the id that answered there, else
        by peer address): a partition that outlived `dead_retention` leaves each side with
        no word of the other, and nobody on either side would ever ask again."""
        assert self.membership is not None
        live = [v for v in self.membership.members() if v.state in ("alive", "suspect")]
        ids, peers = {v.id for v in live}, {v.addresses.peer for v in live}
        return [s for s in self._seeds if s != self.self_info.addresses.peer
                and self._seed_ids.get(s) not in ids and s not in peers]

    async def _rejoin(self) -> None:
        """Once joined, ask a lost seed (`_lost_seeds`) for a snapshot every `rejoin_beats`
        intervals: our pushed Alive and its answer merge two halves of a healed partition."""
        await self.joined.wait()
        every = self.config.rejoin_beats * self.config.gossip.interval
        turn = 0
        while True:
            await asyncio.sleep(every * self._rng.uniform(0.75, 1.25))  # a timer
            lost = self._lost_seeds()
            if lost and self.membership is not None:
                turn += 1
                await self._send("", lost[turn % len(lost)], self.membership.snapshot_request())

    # -- inbound ------------------------------------------------------------------
    def _decode(self, frames: list[bytes] | tuple[bytes, ...], where: str) -> Message | None:
        if len(frames) != 1:
            self.transport.drops.drop(f"{where}:frames", f"{len(frames)} frames")
            return None
        try:
            msg = decode(frames[0])
        except DecodeError as exc:
            self.transport.drops.drop(f"{where}:decode", str(exc))
            return None
        self.counters["in"][type(msg).__name__] += 1
        return msg

    def _on_sub(self, frames: list[bytes]) -> None:
        msg = self._decode(frames, "sub")
        if msg is None or self.membership is None:
            return
        if not isinstance(msg, SUB_TYPES):
            self.transport.drops.drop("sub:unexpected-type", type(msg).__name__)
        elif not self.membership.follows(msg.sender):
            # We subscribe only to members we follow: another sender is a forged name.
            self.transport.drops.drop("sub:unfollowed-sender", msg.sender[:64])
        else:
            self._absorb(msg)

    async def _on_peer(self, request: PeerRequest) -> PeerReply:
        msg = self._decode(request.body, "peer")
        if msg is None or self.membership is None:
            raise Refuse("not a gossip message")
        if not isinstance(msg, REQUEST_TYPES):
            self.transport.drops.drop("peer:unexpected-type", type(msg).__name__)
            raise Refuse(f"a {type(msg).__name__} is not a request")
        if trace.isEnabledFor(logging.DEBUG):
            self._trace_in(msg)
        answers: list[bytes] = []
        rest: list[Action] = []
        for action in self.membership.on_message(msg, self._clock()):
            # Answers to the asker ride back on its own connection (works behind NAT).
            if isinstance(action, SendTo) and action.member_id == msg.sender:
                answers.append(encode(action.msg))
                self.counters["out"][type(action.msg).__name__] += 1
            else:
                rest.append(action)
        self._execute(rest)
        return PeerReply(body=tuple(answers))

    def _trace_in(self, msg: Message) -> None:
        if isinstance(msg, Push | Beat):
            for n in msg.news:
                if isinstance(n, Suspect | Dead):
                    trace.debug("t=%.3f in %s %s by %s from %s", self._clock(),
                                type(n).__name__, n.id, n.by, msg.sender)

    def _absorb(self, msg: Message) -> None:
        assert self.membership is not None
        if trace.isEnabledFor(logging.DEBUG):
            self._trace_in(msg)
        if isinstance(msg, Snapshot):
            self._execute(self.membership.on_snapshot(msg, self._clock()))
            self.joined.set()
        else:
            self._execute(self.membership.on_message(msg, self._clock()))

    # -- outbound -----------------------------------------------------------------
    def _trace_out(self, action: Action) -> None:
        now = self._clock()
        if isinstance(action, SendTo) and isinstance(action.msg, Ping):
            d = self.membership.detector if self.membership is not None else None
            silent = d.silent_for(action.msg.target, now) if d is not None else None
            window = d.window(action.msg.target) if d is not None else 0.0
            trace.debug("t=%.3f out Ping %s silent %s window %.3f", now, action.msg.target,
                        "-" if silent is None else f"{silent:.3f}", window)
        elif isinstance(action, SendTo) and isinstance(action.msg, Probe):
            trace.debug("t=%.3f out Probe %s via %s", now, action.msg.target, action.member_id)
        elif isinstance(action, Publish) and isinstance(action.msg, Push):
            for n in action.msg.news:
                if isinstance(n, Suspect | Dead):
                    trace.debug("t=%.3f push %s %s by %s", now, type(n).__name__, n.id, n.by)
        elif isinstance(action, MemberChanged):
            trace.debug("t=%.3f state %s %s", now, action.view.id, action.view.state)

    def _execute(self, actions: list[Action]) -> None:
        tracing = trace.isEnabledFor(logging.DEBUG)
        for action in actions:
            if tracing:
                self._trace_out(action)
            if isinstance(action, Publish):
                self.transport.publish(TOPIC, encode(action.msg))
                self.counters["out"][type(action.msg).__name__] += 1
            elif isinstance(action, SendTo):
                if len(self._tasks) >= self.config.max_sends:
                    self.counters["dropped"]["send:overload"] += 1
                    continue
                self._spawn(self._send(action.member_id, action.address, action.msg))
            elif isinstance(action, Subscribe):
                self.transport.follow(action.address)
            elif isinstance(action, Unsubscribe):
                self.transport.unfollow(action.address)
            elif isinstance(action, MemberChanged):
                for listener in self._listeners:
                    try:
                        listener(action.view)
                    except Exception:
                        log.exception("membership listener failed on %s", action.view.id)
            elif isinstance(action, Deliver):
                handler = self._reliable.get(action.kind)
                if handler is None:
                    self.counters["dropped"][f"reliable:no-handler:{action.kind}"] += 1
                    continue
                try:
                    handler(action.sender, action.payload)
                except Exception:
                    log.exception("reliable %r handler failed", action.kind)

    async def _send(self, member_id: str, address: str, msg: Message,
                    within: float | None = None) -> None:
        """Send one message to a peer and absorb its answers; failures are only counted."""
        self.counters["out"][type(msg).__name__] += 1
        try:
            reply = await self.transport.request(address, KIND, body=(encode(msg),),
                                                 timeout=within or self.config.send_timeout)
        except PeerError as exc:
            self.counters["dropped"][f"send:{type(exc).__name__}"] += 1
            log.debug("gossip to %s at %s failed: %s", member_id or "seed", address, exc)
            return
        expected = ANSWER_TYPES.get(type(msg), ())
        for frame in reply.body:
            answer = self._decode([frame], "answer")
            if answer is None or self.membership is None:
                continue
            if not isinstance(answer, expected) or (member_id and answer.sender != member_id):
                # Only what we asked for, from whom we asked (a seed's id is not known yet).
                self.transport.drops.drop("answer:unexpected", type(answer).__name__)
                continue
            if isinstance(answer, Snapshot) and not member_id:
                self._seed_ids[address] = answer.sender  # who this seed is, for `_lost_seeds`
            self._absorb(answer)
