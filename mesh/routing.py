"""Where a request goes: a local worker, a peer, or the local queue.

Pure policy, decided before any I/O (httpcore's "decide, then act"). A request
for service S goes to a local worker while one has a free slot. Otherwise to a
peer with free capacity: peers of our own datacenter first, then the other
datacenters in order of measured round-trip time; within each tier the order
is power-of-two-choices on free capacity (two random candidates, the freer one
first), which spreads load almost as well as "least loaded" without every node
herding onto the same peer. Free capacity is the peer's last report minus what
we have sent it since (mesh.loadtable), so a stale report cannot attract a
crowd. Only when nobody has room does the request queue locally until its
deadline (node.overflow takes it out again when a peer reports room first).

A forwarded request (hops >= 1) is never forwarded again (hop limit 1): the
receiver serves it with its own workers or says "busy" at once, keeping
`headroom` of its slots for its own clients.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class OverflowPolicy:
    """Per-service overflow settings; the defaults just work."""

    enabled: bool = True  # may this service's overflow go to peers at all?
    allowed_dcs: frozenset[str] | None = None  # datacenters that may take it (None: any)
    headroom: float = 0.1  # share of local slots kept free for local clients when peers ask
    max_share_away: float = 1.0  # cap on the share of recent requests sent to peers
    max_tries: int = 3  # peers tried, one after another, before queueing locally


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer that might take the request, as the load table and breaker see it."""

    node_id: str
    dc: str
    rtt_ms: float  # measured round trip; inf when unknown
    free: int  # reported free slots minus what we sent since that report


class Route(Enum):
    LOCAL = "local"  # dispatch to a local worker now
    PEERS = "peers"  # try `peers` in order
    QUEUE = "queue"  # wait locally for a slot until the deadline
    BUSY = "busy"  # a forwarded request we cannot take: say so at once


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    peers: tuple[str, ...] = ()
    reason: str = ""


# The answers of almost every request, made once (a frozen dataclass is slow to build,
# and with the workers saturated every queued request asks).
_LOCAL = Decision(Route.LOCAL, reason="local slot free")
_LOCAL_FORWARDED = Decision(Route.LOCAL, reason="forwarded, local slot free")
_BUSY_FORWARDED = Decision(Route.BUSY, reason="forwarded, no spare local slot")
_QUEUE_DISABLED = Decision(Route.QUEUE, reason="overflow disabled for this service")
_QUEUE_CAPPED = Decision(Route.QUEUE, reason="share sent away is at its cap")
_QUEUE_NO_ROOM = Decision(Route.QUEUE, reason="no peer has free capacity")


def accepts_forwarded(local_free: int, local_slots: int, headroom: float) -> bool:
    """Whether a forwarded request may take a local slot, keeping `headroom` for local clients."""
    reserve = int(local_slots * headroom)
    return local_free > reserve


def decide(
    *,
    local_free: int,
    local_slots: int,
    hops: int,
    self_dc: str,
    candidates: Sequence[Candidate],
    policy: OverflowPolicy,
    share_away: float,
    rng: random.Random,
) -> Decision:
    """Route one request for a service.

    `local_free`/`local_slots`: this node's workers for the service; `hops`: how
    many nodes forwarded the request already; `candidates`: alive peers offering
    the service whose circuit is closed; `share_away`: recent share of this
    service's requests that went to peers."""
    if hops >= 1:
        if accepts_forwarded(local_free, local_slots, policy.headroom):
            return _LOCAL_FORWARDED
        return _BUSY_FORWARDED
    if local_free > 0:
        return _LOCAL
    if not policy.enabled:
        return _QUEUE_DISABLED
    # The cap keeps traffic on local workers; 1.0 means no cap (a node whose every recent
    # request went away is at share 1.0, not over a limit), and a node with no local
    # slot for the service has nothing to keep it on: queueing would only end in a 503.
    if policy.max_share_away < 1.0 and local_slots > 0 and share_away >= policy.max_share_away:
        return _QUEUE_CAPPED
    order = (order_peers(self_dc, candidates, policy, rng)[: max(0, policy.max_tries)]
             if candidates else [])
    if not order:
        return _QUEUE_NO_ROOM
    return Decision(Route.PEERS, tuple(order), reason="local workers full")


def order_peers(
    self_dc: str, candidates: Sequence[Candidate], policy: OverflowPolicy, rng: random.Random
) -> list[str]:
    """Peers with room, own datacenter first, other datacenters by RTT, p2c within each."""
    usable = [
        c
        for c in candidates
        if c.free > 0
        and (policy.allowed_dcs is None or c.dc in policy.allowed_dcs or c.dc == self_dc)
    ]
    tiers: dict[str, list[Candidate]] = {}
    for c in usable:
        tiers.setdefault(c.dc, []).append(c)

    def tier_rtt(dc: str) -> float:
        return min(c.rtt_ms for c in tiers[dc])

    dc_order = sorted(tiers, key=lambda dc: (dc != self_dc, tier_rtt(dc), dc))
    out: list[str] = []
    for dc in dc_order:
        out.extend(_power_of_two_order(tiers[dc], rng))
    return out


def _power_of_two_order(tier: list[Candidate], rng: random.Random) -> list[str]:
    """Repeatedly pick two at random and take the freer one: a p2c ordering of a tier."""
    pool = sorted(tier, key=lambda c: c.node_id)  # deterministic given the rng
    out: list[str] = []
    while pool:
        if len(pool) == 1:
            out.append(pool.pop().node_id)
            break
        i, j = rng.sample(range(len(pool)), 2)
        a, b = pool[i], pool[j]
        pick = i if (a.free, -a.rtt_ms) >= (b.free, -b.rtt_ms) else j
        out.append(pool.pop(pick).node_id)
    return out
