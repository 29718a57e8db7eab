"""What a purge did: `PurgeCount`, returned by `CacheStage.purge` and `apply_purge`, and
`purge_answer`, the HTTP status and JSON it becomes.

Not in node/cachestage.py, which is compiled (`make compiled`): mypyc cannot compile an int
subclass, and compiled code given one where an `int` is declared keeps the number only (so
`purge_answer`, which reads `failed` and `error` off an `int`, stays Python too)."""

from __future__ import annotations


class PurgeCount(int):
    """How many entries a purge removed (an int, as before), and whether the store failed
    to delete some: `failed` of them (None: unknown), `error` says why ("" when none).
    An int so that every caller of `purge` (the admin endpoint's wiring) keeps working."""

    failed: int | None
    error: str

    def __new__(cls, removed: int, failed: int | None = 0, error: str = "") -> PurgeCount:
        self = super().__new__(cls, removed)
        self.failed, self.error = failed, error
        return self


def purge_answer(count: int) -> tuple[int, dict[str, object]]:
    """The HTTP status of a purge, and what its JSON answer adds to the count.

    200 when the store removed everything. When it failed to delete some entries
    (read-only disk, no permission, database down) the answer is 202 Accepted with
    `"failed"` (how many, null if unknown) and `"error"`: the purge *did* take effect
    for clients — the key (or prefix) is marked purged in memory and this node will not
    serve what was stored before it — so it is not an error to retry (a 5xx would make
    clients retry a purge that cannot do better until the disk is fixed), but it is not
    complete either: the bytes are still on disk and deleting them is pending. 202 is
    exactly "accepted, not yet carried out", distinct from 200 for scripts that check,
    while every 2xx-is-success client stays right that the URL is no longer served."""
    failed, error = getattr(count, "failed", 0), getattr(count, "error", "")
    if not error:
        return 200, {}
    return 202, {"failed": failed, "error": error}
