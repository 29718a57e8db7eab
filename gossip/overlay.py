"""Who follows whom: the bounded follow graph every member computes from its own view.

Subscribing to every publisher costs ``N`` beats a second per node, which at 1,000
nodes breaks the bandwidth bound. Instead members sit on a ring ordered by a hash
of their id, and member ``F`` follows (SUBs to):

* the ring positions ``F + d`` for ``d`` in ``1..successors`` and every power of two
  below ``N`` (Chord-like fingers): news pushed along these edges reaches every node
  in at most ``log2 N`` hops, and every member has the same number of observers;
* its own datacenter's next ``dc_cap`` members on the datacenter's ring (all of them
  in a datacenter of at most ``dc_cap + 1``): the load table's routing candidates;
* each other datacenter's *reporter* (its member with the lowest ring key), which
  publishes a ``DcSummary``.

Because the graph is a function of the member list, anyone can compute anyone's
observers — the other members to ask when a publisher seems silent. Views differ
briefly while news spreads; the graph is still connected through the ring's
successor edges, and converges when the views do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=65_536)
def ring_key(member_id: str) -> int:
    """Stable 64-bit position of ``member_id`` on the ring (same on every node)."""
    return int.from_bytes(hashlib.blake2b(member_id.encode(), digest_size=8).digest(), "big")


def offsets(n: int, successors: int) -> list[int]:
    """Ring distances followed in a ring of ``n``: the first few, then powers of two."""
    out = list(range(1, min(successors, n - 1) + 1))
    d = 1
    while d < n:
        if d > successors:
            out.append(d)
        d *= 2
    return out


class Overlay:
    """The follow graph over one view of the live members; immutable once built."""

    def __init__(self, members: Iterable[tuple[str, str]], successors: int, dc_cap: int) -> None:
        pairs = sorted(members, key=lambda m: ring_key(m[0]))
        self._ring = [m for m, _ in pairs]
        self._dc_of = dict(pairs)
        self._dc_rings: dict[str, list[str]] = {}
        for m, dc in pairs:
            self._dc_rings.setdefault(dc, []).append(m)
        self._pos = {m: i for i, m in enumerate(self._ring)}
        self._dc_pos = {m: i for ring in self._dc_rings.values() for i, m in enumerate(ring)}
        self._offsets = offsets(len(self._ring), successors)
        self._dc_cap = dc_cap

    def __len__(self) -> int:
        return len(self._ring)

    def _around(self, member: str, sign: int) -> set[str]:
        """Ring and datacenter neighbours of ``member`` ahead (+1) or behind (-1)."""
        out: set[str] = set()
        i = self._pos.get(member)
        if i is None:
            return out
        n = len(self._ring)
        for d in self._offsets:
            out.add(self._ring[(i + sign * d) % n])
        ring = self._dc_rings[self._dc_of[member]]
        k = len(ring)
        j = self._dc_pos[member]
        for d in range(1, min(self._dc_cap, k - 1) + 1):
            out.add(ring[(j + sign * d) % k])
        out.discard(member)
        return out

    def followees(self, member: str) -> set[str]:
        """Publishers ``member`` should subscribe to."""
        out = self._around(member, +1)
        dc = self._dc_of.get(member)
        for other, ring in self._dc_rings.items():
            if other != dc and ring:
                out.add(ring[0])
        out.discard(member)
        return out

    def observers(self, member: str) -> set[str]:
        """Members that follow ``member`` through ring or datacenter edges."""
        return self._around(member, -1)

    def reporter(self, dc: str) -> str | None:
        """The member that publishes ``dc``'s summary (lowest ring key in it)."""
        ring = self._dc_rings.get(dc)
        return ring[0] if ring else None
