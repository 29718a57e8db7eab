"""Cache sharing between nodes: replicated puts, reliable purges, mesh-wide coalescing.

The I/O shell around cache.tombstones, mesh.ownership and cache.replication_codec.
One `Replicator` per node wraps the node's `CacheStage` (it is the pipeline stage
put in the cache stage's place) and speaks to peers through the `GossipAgent`:

- Store → put. After a local store (`CacheStage.on_store`) the entry goes out on
  PUB to the peers in its service's scope (`none | dc | all`): a body up to
  `inline_limit` rides in the message; a larger one is only announced (key,
  variant, holder, size, times). PUB/SUB is best effort: a lost put is a miss.
- Put → store. A receiver keeps an entry only from a member it knows, whose dc
  the service's scope admits, that no tombstone blocks; `accept_replica` does the
  checks of a local fill and the store keeps the newer of two (`newer_than`).
  Times travel unchanged, so Age keeps counting. Replicas never call the hooks,
  so nothing echoes.
- Announced → fetched. A GET or HEAD for a key a peer announced first fetches the
  entry from its holder over the peer socket (kind "cache-fetch"), once per key
  however many ask, then goes on to the cache stage, which now hits.
- Purge. A local purge leaves a tombstone and goes out with `publish_reliable`
  (sequence numbers, gap detection and resend live in gossip/); receivers apply
  it, leave a tombstone, and relay it once (deduplicated by origin and id) so it
  also reaches nodes that do not follow the purger in a large mesh. A node
  whose files outlived a restart asks peers for the purges it missed while
  down before serving what it stored earlier (node/purgerecord.py).
- Mesh-wide coalescing (`coalesce = "dc"`). A miss that the cache stage's own
  coalescing lets through is sent to the key's owner among the alive nodes of
  our dc (kind "cache-fill", the forwarded-request codec of mesh/forward.py with
  the hop count raised); the owner runs it through its own pipeline — cache and
  coalescing included — and we wait for its answer. A request that already
  made a hop is never sent on: the receiver fills it itself, whatever its view
  of ownership, so disagreeing views cannot loop or deadlock. When the owner
  refuses, times out, or is declared dead while we wait, we fill locally. An
  uncacheable answer is never waited on twice: the cache stage releases its
  waiters at once and the owner's coalescer marks the URL hit-for-miss.
- A peer's answer is awaited only while its process is the one we asked: when the
  membership says the peer is dead or left, or that a later process speaks under
  its id (a restart: `MemberView.life`), a fill waiting on it (the owner) and a
  fetch waiting on it (the holder) are given up at once — what that process was
  asked died with it — and the request goes on here: a local fill, never the
  client's error (`_ask`). A fill names the process it is meant for
  (`ForwardedRequest.life`), and a restarted owner refuses one meant for its
  earlier process (`ForwardedServer.owns_life`): nobody waits for that fill any more.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from cache.entry import CacheEntry
from cache.replication_codec import (
    ALL_TOPIC,
    Announce,
    Purge,
    Put,
    ReplicaWireError,
    dc_topic,
    decode_entry,
    decode_fetch,
    decode_purge,
    decode_put,
    encode_announce,
    encode_purge,
    encode_put,
    entry_fields,
    fetch_meta,
)
from cache.tombstones import Tombstones
from gossip.agent import GossipAgent
from gossip.membership import MemberView
from gossip.transport import LOG_EVERY, PeerError, PeerReply, PeerRequest, Refuse
from mesh.forward import ForwardedRequest, ForwardError, decode_response, request_meta
from mesh.ownership import owner as owner_of
from node.cachestage import CacheStage
from node.dispatch import cancel_quietly
from node.errors import ConfigError
from node.http import Headers, Request, Response
from node.overflow import ForwardedServer
from node.purgerecord import RECORD_KIND, PurgeRecords
from node.ratelog import RateLimitedLog
from node.stage import Next

log = logging.getLogger("scale0.replication")

FETCH_KIND, FILL_KIND, PURGE_KIND = "cache-fetch", "cache-fill", "cache-purge"
SCOPES, COALESCE = ("none", "dc", "all"), ("node", "dc")
# Why a put, announcement or purge from a peer was dropped: the `reason` label of
# scale0_frames_dropped_total{socket="replication"} (node/dropstats.py).
DROP_REASONS = ("put:decode", "put:scope", "put:overload", "announce:too-large", "purge:decode")
Handle = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """TOML `[replication]`: scopes, limits and the coalescing mode."""

    scope: str = "dc"  # for services neither `service_scopes` nor `scope_for` names
    service_scopes: Mapping[str, str] = field(default_factory=dict)
    inline_limit: int = 256 * 1024  # larger bodies are announced and fetched on demand
    coalesce: str = "node"  # "dc": one fill per key per datacenter, by the key's owner
    fill_timeout: float = 5.0  # longest wait for an owner's fill before filling locally
    fetch_timeout: float = 5.0
    relay_purges: bool = True
    max_announced: int = 10_000  # keys with pending announcements (oldest forgotten)
    max_applying: int = 1_024  # replicas being stored at once; more are dropped, counted
    tombstone_count: int = 10_000
    tombstone_age: float = 600.0
    sync_grace: float = 10.0  # a restarted node's wait for a peer's purge record

    def __post_init__(self) -> None:
        for name, value in [("scope", self.scope), *self.service_scopes.items()]:
            if value not in SCOPES:
                raise ConfigError(f"replication scope of {name!r} must be one of {SCOPES}, "
                                  f"not {value!r}")
        if self.coalesce not in COALESCE:
            raise ConfigError(f"replication.coalesce must be one of {COALESCE}, "
                              f"not {self.coalesce!r}")
        for name in ("inline_limit", "fill_timeout", "fetch_timeout", "max_announced",
                     "max_applying", "tombstone_count", "tombstone_age", "sync_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"replication.{name} must be positive, not {getattr(self, name)}")


class _FillFailed(Exception):
    """The owner did not fill: we fill locally (never the client's error)."""


class _PeerGone(PeerError):
    """The membership says the process we asked is gone (dead, left or restarted)."""


class Replicator:
    """One node's cache sharing; a pipeline Stage standing in for the cache stage."""

    def __init__(self, cache: CacheStage, agent: GossipAgent, *, node_id: str, dc: str,
                 scope_for: Callable[[str], str] | None = None,
                 service_of: Callable[[str], str] | None = None,
                 config: ReplicationConfig | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.cache, self.agent, self.node_id, self.dc = cache, agent, node_id, dc
        self.config = cfg = config or ReplicationConfig()
        self._scope_for = scope_for or (lambda s: cfg.service_scopes.get(s, cfg.scope))
        # Our own service for a key, by our routes (None: believe the sender's label).
        self._service_of = service_of
        self.wall_clock, self.monotonic = wall_clock, monotonic
        self._rng = rng or random.Random()
        self.tombstones = Tombstones(monotonic, max_count=cfg.tombstone_count,
                                     max_age=cfg.tombstone_age, since=wall_clock())
        self.counts: Counter[str] = Counter()
        self._rlog = RateLimitedLog(log, interval=LOG_EVERY)
        self.bytes_out = 0  # put/announce bytes published (topic and frames)
        self._views: dict[str, MemberView] = {}
        self._owners: list[str] | None = None  # alive ids of our dc, cached until a change
        self._announced: OrderedDict[str, dict[str, Announce]] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._services: OrderedDict[str, str] = OrderedDict()  # key -> service, for scopes
        self._from_owner: OrderedDict[str, float] = OrderedDict()  # filled by an owner: no put
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()  # purges applied
        # Per peer, our requests in flight to its current process (fills, fetches): `_ask`.
        self._waiting: dict[str, set[asyncio.Future[str]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.records = PurgeRecords(
            cache, agent.transport, self.tombstones, node_id=node_id,
            views=lambda: list(self._views.values()), forget=self._forget_announced,
            counts=self.counts, grace=cfg.sync_grace, timeout=cfg.fetch_timeout,
            monotonic=monotonic, rng=self._rng)

    # -- lifecycle ----------------------------------------------------------------
    async def start(self, handle: Handle | None = None) -> None:
        """Hook the cache stage and the agent. `handle` (the node's pipeline) serves
        fills other nodes send us; without it they are refused and the askers fill."""
        t = self.agent.transport
        self.cache.on_store, self.cache.on_purge = self._on_store, self._on_purge
        t.on_topic(ALL_TOPIC, self._on_put)
        t.on_topic(dc_topic(self.dc), self._on_put)
        t.register_handler(FETCH_KIND, self._serve_fetch)
        t.register_handler(RECORD_KIND, self.records.serve)
        if self.records.needed:
            self._spawn(self.records.ask())
        if handle is not None:
            filler = ForwardedServer(handle, node_id=self.node_id, dc=self.dc,
                                     owns_life=self.agent.owns_life)

            async def serve_fill(request: PeerRequest) -> PeerReply:
                self.counts["fills_served"] += 1
                return await filler(request)

            t.register_handler(FILL_KIND, serve_fill)
        self.agent.on_reliable(PURGE_KIND, self._on_purge_msg)
        self.agent.on_change(self._on_change)
        for view in self.agent.members():
            self._views[view.id] = view

    async def stop(self) -> None:
        self.cache.on_store = self.cache.on_purge = None
        for peer in list(self._waiting):
            self._release(peer, "this node is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {**self.counts, "bytes_out": self.bytes_out, "tombstones": len(self.tombstones),
                "announced": len(self._announced)}

    def _on_change(self, view: MemberView) -> None:
        before = self._views.get(view.id)
        self._views[view.id] = view
        self._owners = None
        self.records.changed.set()
        # What we asked of its process will never be answered: fill locally.
        if view.state not in ("alive", "suspect"):
            self._release(view.id, f"{view.id} is {view.state}")
        elif before is not None and before.life and view.life and view.life != before.life:
            self._release(view.id, f"{view.id} restarted")  # a later process (gossip `_life`)

    def _release(self, peer: str, why: str) -> None:
        for gone in self._waiting.pop(peer, set()):
            if not gone.done():
                gone.set_result(why)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drops(self) -> dict[str, int]:
        """Dropped inbound replication messages by reason, every reason listed (metrics)."""
        return {reason: self.counts[f"dropped:{reason}"] for reason in DROP_REASONS}

    def _drop(self, reason: str, detail: object = "", *, expected: bool = False) -> None:
        """Count a dropped message; warn at most once per reason per LOG_EVERY seconds,
        unless it is `expected` in a healthy mesh (a put from a peer this node does not
        know yet, while it joins): those are counted and logged at debug only.
        `detail` is a codec error, a size or ids: never a header value or a body."""
        assert reason in DROP_REASONS, reason
        self.counts[f"dropped:{reason}"] += 1
        tail = f": {detail}" if detail != "" else ""
        if expected:
            log.debug("dropped replication input (%s)%s", reason, tail)
        else:
            self._rlog.warn(reason, "dropped replication input (%s)%s", reason, tail)

    # -- the stage ----------------------------------------------------------------
    def __call__(self, request: Request, call_next: Next) -> Awaitable[Response]:
        # Plain defs handing on the next awaitable (node.stage) where nothing follows it:
        # every answer passes back through each coroutine frame of the chain.
        if self._announced and request.method.upper() in ("GET", "HEAD"):
            return self._announced_first(request, call_next)
        return self.cache(request, lambda r: self._miss(r, call_next))

    async def _announced_first(self, request: Request, call_next: Next) -> Response:
        await self._fetch_announced(request)
        return await self.cache(request, lambda r: self._miss(r, call_next))

    def _key(self, request: Request) -> str | None:
        try:
            return self.cache.key_of(request)
        except Exception:  # an unkeyable request: the cache stage will say why
            return None

    def _miss(self, request: Request, call_next: Next) -> Awaitable[Response]:
        """What the cache stage calls on a miss it leads (or cannot coalesce)."""
        key = self._key(request) if request.method.upper() == "GET" else None
        if key is None:
            return call_next(request)
        _bounded_set(self._services, key, request.service, 65_536)
        owner = self._fill_owner(key, request)
        if owner is None:
            return call_next(request)
        return self._fill_by_owner(owner, key, request, call_next)

    async def _fill_by_owner(self, owner: MemberView, key: str, request: Request,
                             call_next: Next) -> Response:
        try:
            response = await self._ask_owner(owner, request)
        except _FillFailed as exc:
            self.counts["fills_local_fallback"] += 1
            log.info("fill of %s by %s failed (%s); filling here", key[:200], owner.id, exc)
            return await call_next(request)
        self.counts["fills_by_owner"] += 1
        _bounded_set(self._from_owner, key, self.monotonic() + 60.0, 4_096)
        return response

    def _fill_owner(self, key: str, request: Request) -> MemberView | None:
        """The other node that should fill `key`, or None to fill here."""
        if self.config.coalesce != "dc" or request.hops > 0:
            return None  # a forwarded request (a fill, an overflow) is never sent on
        headers = request.headers
        no_store = any("no-store" in v.lower() for v in headers.get_all("cache-control"))
        if request.body or "authorization" in headers or no_store:
            return None  # it could not fill the shared entry anyway
        if self._owners is None:
            self._owners = [self.node_id, *(v.id for v in self._views.values()
                                            if v.dc == self.dc and v.state == "alive")]
        chosen = owner_of(key, self._owners)
        if chosen is None or chosen == self.node_id:
            return None
        view = self._views.get(chosen)
        return view if view is not None and view.addresses.peer else None

    async def _ask_owner(self, owner: MemberView, request: Request) -> Response:
        now = self.monotonic()
        left = request.deadline - now if request.deadline else self.config.fill_timeout
        wait = min(self.config.fill_timeout, left)
        if wait < 0.01:
            raise _FillFailed("no time left to wait for the owner")
        fwd = ForwardedRequest(
            service=request.service, method=request.method, target=request.target,
            headers=tuple(request.headers), body=b"", scheme=request.scheme, host=request.host,
            client=request.client, request_id=request.request_id, ttl=min(wait, 3600.0),
            hops=request.hops + 1, life=owner.life)
        try:
            reply = await self._ask(owner, FILL_KIND, request_meta(fwd), wait)
            answer = decode_response(reply.meta, reply.body)
        except (PeerError, ForwardError) as exc:
            raise _FillFailed(str(exc)) from None
        return Response(answer.status, Headers(answer.headers), answer.body,
                        served_by=answer.node or owner.id)

    async def _ask(self, peer: MemberView, kind: str, meta: dict[str, Any],
                   timeout: float) -> PeerReply:  # noqa: ASYNC109
        """Ask `peer`'s current process; raise `_PeerGone` as soon as the membership says
        that process is gone (`_on_change`): its answer would never come."""
        gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(peer.id, set()).add(gone)
        ask = asyncio.ensure_future(self.agent.transport.request(
            peer.addresses.peer, kind, meta, (), timeout=timeout))
        try:
            either: set[asyncio.Future[Any]] = {ask, gone}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not ask.done():
                raise _PeerGone(f"{kind} to {peer.id} given up: {gone.result()}")
            return ask.result()
        finally:
            cancel_quietly(ask)  # done already, or no longer wanted
            waiters = self._waiting.get(peer.id)
            if waiters is not None:
                waiters.discard(gone)
                if not waiters:
                    del self._waiting[peer.id]

    # -- outbound: puts and purges -------------------------------------------------
    def _scope(self, service: str) -> str:
        scope = self._scope_for(service)
        return scope if scope in SCOPES else "none"

    def _on_store(self, entry: CacheEntry) -> None:
        deadline = self._from_owner.pop(entry.key, None)
        if deadline is not None and deadline >= self.monotonic():
            self.counts["put_skipped_owner_filled"] += 1  # the owner replicated it already
            return
        service = self._services.get(entry.key, "")
        scope = self._scope(service)
        if scope == "none":
            return
        topic = ALL_TOPIC if scope == "all" else dc_topic(self.dc)
        if len(entry.body) <= self.config.inline_limit:
            frames = encode_put(Put(self.node_id, service, entry))
            self.counts["puts_sent"] += 1
        else:
            frames = encode_announce(Announce(
                self.node_id, service, entry.key, entry.variant, len(entry.body),
                entry.request_time, entry.response_time, entry.origin))
            self.counts["announces_sent"] += 1
        self.bytes_out += len(topic) + sum(len(f) for f in frames)
        self.agent.transport.publish(topic, *frames)

    def _on_purge(self, key: str, is_prefix: bool) -> None:
        at, pid = self.wall_clock(), self._rng.getrandbits(63)
        _bounded_set(self._seen, (self.node_id, pid), None, 4_096)
        self.tombstones.add(key, is_prefix, at)
        self._forget_announced(key, is_prefix)
        payload = encode_purge(Purge(self.node_id, pid, key, is_prefix, at))
        self.agent.publish_reliable(PURGE_KIND, payload)
        self.counts["purges_sent"] += 1

    # -- inbound ------------------------------------------------------------------
    def _in_scope(self, sender: str, service: str) -> bool:
        scope = self._scope(service)
        view = self._views.get(sender)
        if scope == "none" or view is None or sender == self.node_id:
            return False
        return scope == "all" or view.dc == self.dc

    def _local_service(self, key: str, claimed: str) -> str:
        return self._service_of(key) if self._service_of is not None else claimed

    def _on_put(self, frames: list[bytes]) -> None:
        try:
            msg = decode_put(frames, self.cache.config.max_object_size)
        except ReplicaWireError as exc:
            self._drop("put:decode", exc)
            return
        key = msg.key if isinstance(msg, Announce) else msg.entry.key
        service = self._local_service(key, msg.service)
        if not self._in_scope(msg.sender, service):
            self._drop("put:scope", f"from {msg.sender[:64]!r} for service {service[:64]!r}",
                       expected=True)
            return
        if isinstance(msg, Announce):
            self._note_announce(msg)
            return
        entry = msg.entry
        if self.tombstones.blocks(entry):
            self.counts["puts_tombstoned"] += 1
            return
        anns = self._announced.get(entry.key)
        if anns is not None and entry.variant in anns:
            ann = anns[entry.variant]
            if (entry.response_time, entry.origin) >= (ann.response_time, ann.origin):
                del anns[entry.variant]
        if len(self._tasks) >= self.config.max_applying:
            self._drop("put:overload")
            return
        self._spawn(self._apply(entry, service))

    async def _apply(self, entry: CacheEntry, service: str) -> None:
        if await self.cache.accept_replica(entry, service):
            self.counts["puts_stored"] += 1
            if self.tombstones.blocks(entry):  # a purge overtook the store: undo it
                await self.cache.apply_purge(entry.key, False)

    def _note_announce(self, ann: Announce) -> None:
        if ann.size > self.cache.config.max_object_size:
            self._drop("announce:too-large", ann.size)
            return
        if self.tombstones.blocks_key(ann.key, ann.response_time):
            self.counts["announces_tombstoned"] += 1
            return
        anns = self._announced.setdefault(ann.key, {})
        self._announced.move_to_end(ann.key)
        old = anns.get(ann.variant)
        if old is None or (ann.response_time, ann.origin) > (old.response_time, old.origin):
            anns[ann.variant] = ann
            self.counts["announces_noted"] += 1
        while len(self._announced) > self.config.max_announced:
            self._announced.popitem(last=False)

    def _forget_announced(self, key: str, is_prefix: bool) -> None:
        if not is_prefix:
            self._announced.pop(key, None)
            return
        for k in [k for k in self._announced if k.startswith(key)]:
            del self._announced[k]

    def _on_purge_msg(self, sender: str, payload: bytes) -> None:
        try:
            purge = decode_purge(payload)
        except ReplicaWireError as exc:
            self._drop("purge:decode", exc)
            return
        ident = (purge.origin, purge.pid)
        if ident in self._seen:
            self.counts["purges_duplicate"] += 1
            return
        _bounded_set(self._seen, ident, None, 4_096)
        self.tombstones.add(purge.key, purge.is_prefix, purge.at)
        self._forget_announced(purge.key, purge.is_prefix)
        self.counts["purges_applied"] += 1
        self._spawn(self.cache.apply_purge(purge.key, purge.is_prefix))
        if self.config.relay_purges and purge.origin != self.node_id:
            self.agent.publish_reliable(PURGE_KIND, payload)  # once: then it is `seen`

    # -- large entries: announced, fetched on demand ---------------------------------
    async def _fetch_announced(self, request: Request) -> None:
        key = self._key(request)
        if key is None:
            return
        task = self._fetching.get(key)
        if task is None:
            anns = self._announced.pop(key, None)
            if not anns:
                return
            task = asyncio.get_running_loop().create_task(self._fetch_all(key, anns))
            self._fetching[key] = task
            task.add_done_callback(lambda _t: self._fetching.pop(key, None))
        await asyncio.shield(task)  # a client that leaves does not cancel others' fetch

    async def _fetch_all(self, key: str, anns: dict[str, Announce]) -> None:
        try:
            held = {e.variant: e for e in await self.cache.store.get(key) if e.key == key}
        except Exception:  # the store's trouble: fetch anyway, the put will tell
            held = {}
        for ann in anns.values():
            have = held.get(ann.variant)
            if have is not None and (have.response_time, have.origin) >= (ann.response_time,
                                                                          ann.origin):
                continue
            if self.tombstones.blocks_key(key, ann.response_time):
                continue
            holder = self._views.get(ann.sender)
            if holder is None or holder.state not in ("alive", "suspect"):
                self.counts["fetch_no_holder"] += 1
                continue
            try:
                reply = await self._ask(holder, FETCH_KIND, fetch_meta(key, ann.variant),
                                        self.config.fetch_timeout)
                entry = decode_entry(reply.meta, reply.body, self.cache.config.max_object_size)
            except (PeerError, ReplicaWireError) as exc:
                self.counts["fetch_failed"] += 1
                log.info("fetch of %s from %s failed: %s", key[:200], ann.sender, exc)
                continue
            if entry.key != key or entry.variant != ann.variant or self.tombstones.blocks(entry):
                self.counts["fetch_refused"] += 1
                continue
            if await self.cache.accept_replica(entry, self._local_service(key, ann.service)):
                self.counts["fetched"] += 1

    async def _serve_fetch(self, request: PeerRequest) -> PeerReply:
        try:
            key, variant = decode_fetch(request.meta)
        except ReplicaWireError as exc:
            raise Refuse(f"bad cache-fetch: {exc}") from None
        try:
            entries = await self.cache.store.get(key)
        except Exception as failed:
            raise Refuse(f"store failed: {type(failed).__name__}") from None
        found = [e for e in entries if e.key == key and e.variant == variant
                 and e.response_time > self.cache.trusted_after]  # no unverified entry
        if not found:
            raise Refuse("not held")
        entry = max(found, key=lambda e: (e.response_time, e.origin))
        self.counts["fetches_served"] += 1
        return PeerReply(entry_fields(entry), (entry.body,))


def _bounded_set(table: OrderedDict[Any, Any], key: Any, value: Any, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)
