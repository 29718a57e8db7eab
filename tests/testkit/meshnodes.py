"""Real `scale0 node` processes forming a mesh, for end-to-end tests.

A `MeshNode` owns its ports for its whole life (chosen once, free a moment
before), so a restart comes back on the same addresses, as an operator's
would. Processes run through `testkit.procs.Proc` (killed by their own PID);
`prefix` runs them inside a network namespace (`testkit.netns`). The admin
JSON is read over real HTTP; everything here polls real conditions.
"""

from __future__ import annotations

import functools
import http.client
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testkit.procs import Gone, Proc, free_port, scale0_bin

_handed_out: set[int] = set()


def unique_port() -> int:
    """A free port never handed out before in this process: sixteen nodes take eighty,
    and the kernel may offer a port again once the probing socket closed."""
    for _ in range(100):
        port = free_port()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


@functools.cache
def gossip_preset_flag() -> bool:
    """Whether this tree's `scale0 node` has `--gossip-preset` yet (the integrator adds it)."""
    done = subprocess.run([scale0_bin(), "node", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    return "--gossip-preset" in done.stdout


class MeshNode:
    """One node of a test mesh; `start()` may be called again after it stopped."""

    def __init__(self, tmp: Path, name: str, *, dc: str = "default", seed: str | None = None,
                 host: str = "127.0.0.1", admin_host: str = "127.0.0.1",
                 preset: str | None = None, extra: Sequence[str] = (),
                 prefix: Sequence[str] = ()) -> None:
        self.tmp = tmp
        self.name = name
        self.dc = dc
        self.seed = seed
        self.host = host
        self.http = unique_port()
        self.admin = unique_port()
        self.workers = f"tcp://{host}:{unique_port()}"
        self.gossip = f"tcp://{host}:{unique_port()}"
        self.peer = f"tcp://{host}:{unique_port()}"
        self.admin_host = admin_host
        self.preset = preset
        self.extra = list(extra)
        self.prefix = list(prefix)
        self.proc: Proc | None = None
        self.runs = 0

    def args(self) -> list[str]:
        args = [*self.prefix, scale0_bin(), "node", "--id", self.name, "--dc", self.dc,
                "--http", f"{self.host}:{self.http}", "--admin", f"{self.admin_host}:{self.admin}",
                "--workers", self.workers, "--gossip", self.gossip, "--peer", self.peer,
                "--log-level", "WARNING", *self.extra]
        if self.seed:
            args += ["--seed", self.seed]
        if self.preset and gossip_preset_flag():
            args += ["--gossip-preset", self.preset]
        return args

    def start(self) -> Proc:
        self.runs += 1
        self.proc = Proc(self.args(), self.tmp / f"{self.name}-{self.runs}.log")
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def admin_json(self, path: str, timeout: float = 5.0) -> Any:
        conn = http.client.HTTPConnection(self.admin_host, self.admin, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise AssertionError(f"{self.name} {path}: HTTP {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        if self.proc is not None and not self.proc.alive():  # it will never answer: say why
            raise Gone(f"node {self.name} exited with {self.proc.popen.returncode}\n"
                       f"{self.log_tail()}")
        return dict(self.admin_json("/_scale0/health"))

    def mesh(self) -> dict[str, Any]:
        return dict(self.admin_json("/_scale0/mesh"))

    def views(self) -> dict[str, tuple[str, int]]:
        """id -> (state, incarnation), as this node's load table shows them."""
        return {row["id"]: (row["state"], int(row["incarnation"]))
                for row in self.mesh().get("nodes", [])}

    def service(self, name: str = "default") -> dict[str, Any]:
        """This node's own row for a service in its mesh JSON ({} when absent)."""
        for row in self.mesh().get("nodes", []):
            if row["id"] == self.name:
                return dict(row.get("services", {}).get(name, {}))
        return {}

    def workers_of(self, service: str = "default") -> int:
        return int(self.health()["workers"].get(service, {}).get("workers", 0))

    def log_tail(self, chars: int = 3000) -> str:
        if self.proc is None:
            return f"--- {self.name}: never started"
        return f"--- {self.proc.log_path.name}\n{self.proc.output()[-chars:]}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def worker(tmp: Path, node: MeshNode, upstream: str, *, concurrency: int = 4,
           service: str = "default", tag: str = "", prefix: Sequence[str] = ()) -> Proc:
    """A `scale0 worker --upstream` connected to `node`."""
    return Proc([*prefix, scale0_bin(), "worker", "--node", node.workers, "--service", service,
                 "--concurrency", str(concurrency), "--upstream", upstream],
                tmp / f"worker-{node.name}{tag}.log")
