"""The garbage collector, set for a long-running server.

CPython's cyclic collector runs a full (oldest-generation) collection from time
to time, and its pause grows with everything ever allocated: the modules, the
config, the routes, the TLS and ZeroMQ objects made at start. Those live as long
as the process, so once the node is up they are moved out of the collector's
sight (`gc.freeze`, as gunicorn/Instagram-style servers do): full collections
then walk only what requests created, and the tail latency stays flat. Nothing
is leaked — frozen objects are still freed by reference counting — the collector
just stops re-scanning them.
"""

from __future__ import annotations

import gc

# Allocations (less frees) of tracked objects between two collections of the youngest
# generation; CPython's default is 700. A request's objects are freed by reference counting
# (the fast wire holds no cycle per request, bench_profile.md §34), so a young collection
# mostly walks the requests still in flight and frees nothing: at 700 it ran every few
# requests. valgrind, the whole node under wrk -c50: a proxied miss 313k -> 300k
# instructions, a request to a Python-API worker 252k -> 243k. Cyclic garbage waits a
# little longer (at most this many allocations).
YOUNG_THRESHOLD = 10_000


def settle_heap() -> int:
    """Collect once, then freeze what survived start-up, and make young collections
    rarer (YOUNG_THRESHOLD); the number of objects frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
