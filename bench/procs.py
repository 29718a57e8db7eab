"""Start the processes a benchmark compares: the origin, Scale0 nodes and workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.tools import wait_http
from node.freeport import free_port

BIN = Path(sys.executable).parent


class Procs:
    """Every process a benchmark started; `stop_all` ends them by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def origin(self) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        p = self.start([sys.executable, "-m", "bench.origin", "--port", str(port)])
        wait_http(f"http://127.0.0.1:{port}/_count")
        return p, port

    def _from(self, tree: Path | None) -> tuple[Path | None, dict[str, str] | None]:
        """cwd and environment that run `tree`'s Scale0 (another checkout) rather than ours."""
        return (None, None) if tree is None else (tree, {**os.environ, "PYTHONPATH": str(tree)})

    def node(self, *extra: str, tree: Path | None = None
             ) -> tuple[subprocess.Popen[bytes], int, str]:
        """A node on free ports; returns (process, http port, workers endpoint). `tree`:
        another checkout's node."""
        http, admin = free_port(), free_port()
        workers = f"tcp://127.0.0.1:{free_port()}"
        p = self.start(
            [
                str(BIN / "scale0"),
                "node",
                "--http",
                f"127.0.0.1:{http}",
                "--admin",
                f"127.0.0.1:{admin}",
                "--workers",
                workers,
                "--gossip",
                f"tcp://127.0.0.1:{free_port()}",
                "--peer",
                f"tcp://127.0.0.1:{free_port()}",
                # the nginx reference runs with access_log off: compare like with like
                "--access-log",
                "off",
                *extra,
            ],
            *self._from(tree),
        )
        wait_http(f"http://127.0.0.1:{admin}/_scale0/health")
        return p, http, workers

    def skeleton(self) -> tuple[subprocess.Popen[bytes], int, str]:
        """The design's floor (bench.skeleton): a featureless node; (process, http port,
        workers endpoint). Start a worker against the endpoint before sending to it."""
        http, workers = free_port(), f"tcp://127.0.0.1:{free_port()}"
        p = self.start([sys.executable, "-m", "bench.skeleton", "node", "--http", str(http),
                        "--workers", workers])
        return p, http, workers

    def skeleton_worker(self, workers_endpoint: str, origin_port: int) -> subprocess.Popen[bytes]:
        """bench.skeleton's featureless HTTP-upstream worker in front of the origin."""
        return self.start([sys.executable, "-m", "bench.skeleton", "worker", "--node",
                           workers_endpoint, "--upstream", str(origin_port)])

    def worker(
        self, workers_endpoint: str, *how: str, concurrency: int = 64, service: str = "default",
        tree: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        return self.start(
            [
                str(BIN / "scale0"),
                "worker",
                "--node",
                workers_endpoint,
                "--service",
                service,
                "--concurrency",
                str(concurrency),
                *how,
            ],
            *self._from(tree),
        )

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
