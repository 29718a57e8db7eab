"""A stored response: what every cache store keeps and every replica carries.

Times are wall-clock epoch seconds because entries outlive processes and travel
between machines (RFC 9111 §4.2.3 computes Age from them). `key` is the primary
cache key (see cache.key); `variant` is the secondary key chosen by the
response's Vary header ("" when it has none); one key may hold several variants.
"""

from __future__ import annotations

from dataclasses import dataclass

HeaderItems = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    key: str
    variant: str
    status: int
    headers: HeaderItems  # response header fields as stored (hop-by-hop removed)
    body: bytes
    request_time: float  # when the request that produced it was sent
    response_time: float  # when its response arrived
    origin: str = ""  # id of the node that first stored it (replication, logs)

    @property
    def size(self) -> int:
        """Approximate bytes this entry costs a store (body + headers + a fixed overhead)."""
        header_bytes = sum(len(k) + len(v) + 4 for k, v in self.headers)
        return len(self.body) + header_bytes + len(self.key) + 128

    def newer_than(self, other: CacheEntry) -> bool:
        """Whether this entry should replace `other` for the same key and variant.

        The later response wins whatever order replicas arrive in; equal times
        are broken by origin id so every node picks the same winner."""
        return (self.response_time, self.origin) > (other.response_time, other.origin)
