"""The one async interface every cache store implements, and how a store is found.

Stores are chosen by config (`memory`, `files:DIR`, `mongo:URL`) and found by the
entry-point group `scale0.cache_stores`, so a third party can add one. A store
never decides HTTP semantics (cache.rules does); it keeps entries within its byte
cap and answers honestly when an entry is missing or damaged. All methods are
coroutines for one event loop; implementations may use threads inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cache.entry import CacheEntry


@dataclass(slots=True)
class StoreStats:
    entries: int = 0
    bytes: int = 0
    evictions: int = 0
    corrupt: int = 0  # damaged entries found and discarded
    rejected: int = 0  # entries refused (too large for the store)
    capacity: int = 0  # the byte cap in force now (files: lowered for a while on a full disk)
    errors: dict[str, int] = field(default_factory=dict)  # failures by operation, since start


class CacheStore(Protocol):
    async def open(self) -> None:
        """Prepare the store (create folders, rebuild the index, connect)."""
        ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> list[CacheEntry]:
        """Every variant stored for `key` (empty when none)."""
        ...

    async def put(self, entry: CacheEntry) -> bool:
        """Store `entry`, replacing the same key+variant only if `entry.newer_than` it.

        False when the store refused it (too large) or kept the newer one."""
        ...

    async def delete(self, key: str, variant: str | None = None) -> int:
        """Remove one variant, or every variant of `key`; how many were removed.

        Raises (OSError, ...) when the store could not remove them; a store that can
        still keep them from being served (files: cache.files.DeleteFailed) says so."""
        ...

    async def purge_prefix(self, prefix: str) -> int:
        """Remove every entry whose key starts with `prefix`; how many were removed."""
        ...

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        """Stored keys starting with `prefix`, sorted (admin listings, purge previews).

        A store shared between nodes may answer from its own view (files: the
        keys its index knows)."""
        ...

    def stats(self) -> StoreStats: ...
