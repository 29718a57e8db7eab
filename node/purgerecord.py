"""Purges missed while a node was down: asked of peers when it comes back.

A purge goes to the nodes that are up (`publish_reliable` repairs gaps, not a
death). A store that outlives the process — files — therefore keeps, after a
kill and a restart, entries purged while the node was down, and would serve
them for as long as they are fresh. So a node whose store is `local_persistent`
serves none of the entries stored before it started (`CacheStage.trusted_after`)
until a peer hands over its purge record (peer request "cache-purges": its
tombstones, latest first, and `since`, after which the record is complete — see
cache.tombstones). The node removes from its store what those purges cover,
then trusts entries newer than the record's `since`. Entries older than that
(the node was down longer than the peers remember, `tombstone_age`, or every
node restarted) stay unserved and are refilled as they are asked for. A node
with nobody to ask within `sync_grace` seconds (alone) trusts its store as it is
and says so in the log (not when the store was empty at start: nothing to distrust).
Every node answers the request, whatever its store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable

from cache.replication_codec import ReplicaWireError, decode_purges, encode_purges
from cache.tombstones import Tombstones
from gossip.membership import MemberView
from gossip.transport import PeerError, PeerReply, PeerRequest, Refuse, Transport
from node.cachestage import CacheStage

log = logging.getLogger("scale0.replication")

RECORD_KIND = "cache-purges"
Stones = list[tuple[str, bool, float]]


class PurgeRecords:
    """Serving our purge record, and asking peers for theirs after a restart."""

    def __init__(self, cache: CacheStage, transport: Transport, tombstones: Tombstones, *,
                 node_id: str, views: Callable[[], Iterable[MemberView]],
                 forget: Callable[[str, bool], None], counts: Counter[str],
                 grace: float, timeout: float, monotonic: Callable[[], float],
                 rng: random.Random) -> None:
        self.cache, self.transport, self.tombstones = cache, transport, tombstones
        self.node_id, self._views, self._forget, self.counts = node_id, views, forget, counts
        self.grace, self.timeout, self.monotonic, self._rng = grace, timeout, monotonic, rng
        self.changed = asyncio.Event()  # set on every member change
        self.needed = bool(getattr(cache.store, "local_persistent", False))
        if self.needed:  # nothing stored before now is served until a peer tells us
            cache.trusted_after = tombstones.since

    async def serve(self, request: PeerRequest) -> PeerReply:
        if request.meta.get("v") != 1:
            raise Refuse("bad cache-purges request")
        stones = [(s.key, s.is_prefix, s.at) for s in self.tombstones.newest_first()]
        meta, body = encode_purges(self.tombstones.since, stones)
        self.counts["records_served"] += 1
        return PeerReply(meta, (body,))

    async def ask(self, most: int = 3, tries: int = 16) -> None:
        """Ask alive peers (any dc: purges reach every node) for their records until
        `most` answered or `tries` were spent; the first answer ends the blind spell."""
        if self.cache.store.stats().entries == 0:
            # Nothing was stored before this start (a new node, an emptied cache): nothing
            # to distrust, nothing to warn about; the records are still merged if they come.
            self.cache.trusted_after = 0.0
        asked: set[str] = set()
        grace_end = self.monotonic() + self.grace
        answered = 0
        while answered < most and len(asked) < tries:
            self.changed.clear()  # before looking: a change from now on wakes the wait
            peers = [v for v in self._views() if v.state == "alive" and v.id not in asked
                     and v.id != self.node_id and v.addresses.peer]
            if not peers:
                left = grace_end - self.monotonic()
                if left <= 0 and answered == 0 and self.cache.trusted_after > 0:
                    self.cache.trusted_after = 0.0
                    log.warning("no peer told us what was purged while this node was down "
                                "(within %.3g s): serving the cache store as it is", self.grace)
                try:  # woken by a member change; after the grace, only by one
                    await asyncio.wait_for(self.changed.wait(), left if left > 0 else None)
                except TimeoutError:
                    pass
                continue
            peer = self._rng.choice(sorted(peers, key=lambda v: v.id))
            asked.add(peer.id)
            try:
                reply = await self.transport.request(peer.addresses.peer, RECORD_KIND, {"v": 1},
                                                     timeout=self.timeout)
                since, stones = decode_purges(reply.meta, reply.body)
            except (PeerError, ReplicaWireError) as exc:
                self.counts["records_failed"] += 1
                log.info("purge record from %s failed: %s", peer.id, exc)
                continue
            if await self.take(since, stones):
                answered += 1

    async def take(self, since: float, stones: Stones) -> bool:
        """Remove from the store what the purges cover, then trust what is newer than
        the record's start; False when the store failed (entries stay unserved)."""
        self.tombstones.merge(since, stones)  # late replicas of these are refused too
        floor = min(self.cache.trusted_after, self.tombstones.since)
        store, removed = self.cache.store, 0
        for key, is_prefix, at in stones:
            if at <= floor:
                continue  # it covers only entries that are not served anyway
            self._forget(key, is_prefix)
            self.cache.hits.forget(key, prefix=is_prefix)
            try:
                for k in await store.keys_with_prefix(key) if is_prefix else [key]:
                    for entry in await store.get(k):
                        if entry.key == k and entry.response_time <= at:
                            removed += await store.delete(k, entry.variant)
            except Exception as exc:
                self.counts["records_failed"] += 1
                log.warning("purge record: the store failed on %s: %r", key[:200], exc)
                return False
        self.cache.trusted_after = floor
        self.counts["records_taken"] += 1
        self.counts["records_removed"] += removed
        log.info("purge record taken: %d purges, %d entries removed, serving entries "
                 "stored after %.3f", len(stones), removed, floor)
        return True
