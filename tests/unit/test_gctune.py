"""settle_heap: start-up garbage is collected, and what survives is frozen out of scans."""

from __future__ import annotations

import gc
import weakref

from node.gctune import YOUNG_THRESHOLD, settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_start_up_cycles_are_freed_and_survivors_frozen() -> None:
    kept = [_Node() for _ in range(100)]
    threshold = gc.get_threshold()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    try:
        frozen = settle_heap()
        assert gone() is None  # collected before the freeze, not frozen forever
        assert frozen >= len(kept) and gc.get_freeze_count() == frozen
        assert not any(gc.is_tracked(k) and k in gc.get_objects(0) for k in kept[:3])
        # young collections rarer; the older generations' thresholds as they were
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()  # the test process goes on with its collector as it was
        gc.set_threshold(*threshold)
