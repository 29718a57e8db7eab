"""Which node owns a cache key: rendezvous (highest-random-weight) hashing.

Mesh-wide coalescing sends a miss to the one node of the datacenter that fills
that key for everyone. Every node computes the owner from its own list of alive
node ids, so the function must be deterministic and independent of list order
(blake2b of node id and key, no Python `hash`), and a membership change must move
as few keys as possible: with rendezvous hashing a node that leaves takes only
its own keys with it (each goes to that key's runner-up), and a node that joins
takes only the keys it now scores highest on. Views may differ briefly while
gossip spreads; the fill protocol (a forwarded fill is never forwarded again)
makes that harmless. Pure: no I/O, no state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def score(node_id: str, key: str) -> int:
    """The weight of `node_id` for `key`: 64 stable bits, the same on every node."""
    node = node_id.encode("utf-8", "surrogatepass")
    # Length-prefixed so ("ab", "c") and ("a", "bc") never hash the same input.
    data = len(node).to_bytes(4, "big") + node + key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8, person=b"scale0-own").digest()
    return int.from_bytes(digest, "big")


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Distinct `nodes`, best owner of `key` first (ties, if ever, by id)."""
    return sorted(set(nodes), key=lambda n: (-score(n, key), n))


def owner(key: str, nodes: Iterable[str]) -> str | None:
    """The node that fills `key` among `nodes`, or None when there are none."""
    best: tuple[int, str] | None = None
    for n in nodes:
        s = score(n, key)
        if best is None or s > best[0] or (s == best[0] and n < best[1]):
            best = (s, n)
    return None if best is None else best[1]
