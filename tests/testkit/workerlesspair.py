"""Two real nodes: A with no worker of its own, B with one worker running a test app.

The shape of the overflow scenarios where A can serve only by forwarding to B (its
front door, its peer socket and B's pipeline all in play). Both use the `local` gossip
preset and no cache, so every request reaches B's worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from testkit.meshnodes import MeshNode
from testkit.procs import Proc, scale0_bin, wait_until

APPS = Path(__file__).resolve().parents[1] / "e2e" / "apps"


@contextmanager
def workerless_pair(tmp: Path, app: str, *, concurrency: int = 2,
                    env: Mapping[str, str] | None = None
                    ) -> Iterator[tuple[MeshNode, MeshNode, Proc]]:
    """A and B running, B's worker (`scale0 worker --app APP`, tests/e2e/apps on its
    path) started; the caller waits for what it needs. Logs are printed on a failure."""
    path = os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))
    a = MeshNode(tmp, "a", preset="local", extra=["--cache", "off"])
    a.start()
    wait_until(a.health, timeout=30, what="node a")
    b = MeshNode(tmp, "b", seed=a.peer, preset="local", extra=["--cache", "off"])
    b.start()
    worker = Proc([scale0_bin(), "worker", "--node", b.workers, "--service", "default",
                   "--concurrency", str(concurrency), "--app", app], tmp / "worker.log",
                  env={**(env or {}), "PYTHONPATH": path})
    try:
        yield a, b, worker
    except BaseException:
        print(a.log_tail(), b.log_tail(), worker.output()[-2000:])
        raise
    finally:
        worker.stop()
        b.stop()
        a.stop()
