"""`--cache memory?max=N` bounds the process's memory by about N, whatever the answers'
sizes. Each entry was charged its `CacheEntry.size` (body, header text, key, 128 bytes)
while a small answer held four to five times that in objects, so a store of 404s and
redirects at its cap took five times `max` (256 MiB by default: over a GiB). The memory
the store holds after many puts past its cap is measured (tracemalloc), not the RSS."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from cache.entry import CacheEntry
from cache.memory import MemoryStore

CAP = 2 * 1024 * 1024
PUTS = 20_000  # about ten times what the cap holds: it evicts all along


def small_answer(i: int) -> CacheEntry:
    """A 404 as a worker gives it: a short body and the usual fields, each a str of its
    own (decoded from the wire, as the broker's are)."""
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "5"),
               ("Date", "Sat, 28 Nov 2026 07:37:16 GMT"), ("Server", "TornadoServer/6.5"),
               ("X-Request-Id", f"{i:032x}"))
    fresh = tuple((k.encode().decode(), v.encode().decode()) for k, v in headers)
    return CacheEntry(f"GET http://www.example.com/missing/{i:09d}", "", 404, fresh,
                      b"nope\n", 1.0, 1.0, "a")


async def fill() -> MemoryStore:
    store = MemoryStore(max_bytes=CAP)
    for i in range(PUTS):
        await store.put(small_answer(i))
    return store


def test_a_store_of_small_answers_holds_about_its_cap_in_memory() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = asyncio.run(fill())
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = store.stats()
    assert stats.evictions > 0 and stats.bytes <= CAP
    assert held <= 1.25 * CAP, f"{stats.entries} entries hold {held / CAP:.1f}x the cap"
