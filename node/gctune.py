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


def settle_heap() -> int:
    """Collect once, then freeze what survived start-up; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
