"""The workload a profile-guided build of the compiled modules learns from.

    python scripts/pgo_train.py     # run by scripts/build_compiled.py, between its two builds

Starts an origin (bench/origin.py), a node and two workers from this tree on loopback (an
`--upstream` worker in front of the origin, then a Python-API worker), sends a fixed mix of
requests through the node (misses the origin marks no-store, cache hits of 1 and 64 KiB,
answers of the Python-API worker), and stops them with SIGTERM. Each process writes the
counts of the instrumented extensions as it exits (gcc's -fprofile-generate). Nothing here
imports the node's packages: only the processes it starts run the instrumented code.

Exit 0 when every request was answered 200 and every process exited cleanly; anything
else exits 1 with the reason, and the build then compiles without a profile. Bounded: a
fixed count of requests, and a time limit on each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60.0  # seconds for any one step (start, a batch of requests, stop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    end = time.monotonic() + LIMIT
    while time.monotonic() < end:
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"the {name} exited with {p.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling for readiness, bounded by LIMIT
    raise RuntimeError(f"not ready within {LIMIT:.0f} s: {url}")


async def _connection(port: int, path: str, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: train\r\n\r\n".encode()
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                status = head.partition(b"\r\n")[0]
                raise RuntimeError(f"{path}: {status!r}")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
    finally:
        writer.close()


async def _send(port: int, path: str, count: int, connections: int) -> None:
    share = [count // connections + (i < count % connections) for i in range(connections)]
    await asyncio.wait_for(
        asyncio.gather(*(_connection(port, path, n) for n in share if n)), LIMIT)


def send(port: int, path: str, count: int, connections: int = 32) -> None:
    asyncio.run(_send(port, path, count, connections))


def main() -> int:
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, IO[bytes]] = {}  # a file, not a pipe: nobody reads while they run
    files = contextlib.ExitStack()

    def start(name: str, *args: str) -> dict[str, subprocess.Popen[bytes]]:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - `files` closes it
        logs[name] = files.enter_context(log)
        procs[name] = subprocess.Popen([python, "-m", *args], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=logs[name])
        return {name: procs[name]}

    def stop(*names: str) -> None:
        for name in names:
            procs[name].send_signal(signal.SIGTERM)
        for name in names:
            p, log = procs.pop(name), logs.pop(name)
            p.wait(timeout=LIMIT)
            log.seek(0)
            if p.returncode != 0:
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"the {name} exited with {p.returncode}: " + " | ".join(tail))

    try:
        origin_port = free_port()
        wait_ready(f"http://127.0.0.1:{origin_port}/_count",
                   start("origin", "bench.origin", "--port", str(origin_port)))
        for kind in ("upstream", "app"):
            http, workers = free_port(), f"tcp://127.0.0.1:{free_port()}"
            node = start("node", "node", "node", "--http", f"127.0.0.1:{http}",
                         "--admin", f"127.0.0.1:{free_port()}", "--workers", workers,
                         "--gossip", f"tcp://127.0.0.1:{free_port()}",
                         "--peer", f"tcp://127.0.0.1:{free_port()}",
                         "--access-log", "off", "--cache", "memory")
            serves = (["--upstream", f"http://127.0.0.1:{origin_port}"] if kind == "upstream"
                      else ["--app", "bench.bench_dispatch:answer"])
            worker = start("worker", "node", "worker", "--node", workers, "--service", "default",
                           "--concurrency", "64", *serves)
            if kind == "upstream":
                wait_ready(f"http://127.0.0.1:{http}/bytes/1024", node | worker)
                send(http, "/bytes/1024?nocache=1", 8000)  # misses, no-store
                send(http, "/bytes/1024?nocache=1", 500, connections=1)  # one at a time
                send(http, "/bytes/1024", 10000)  # hits once stored
                send(http, "/bytes/65536", 1000)
            else:
                wait_ready(f"http://127.0.0.1:{http}/x", node | worker)
                send(http, "/x", 10000)
            stop("worker", "node")
        return 0
    except Exception as exc:
        print(f"profile training failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in procs.values():  # the origin, and whatever a failure left running
            if p.poll() is None:
                p.kill()
                p.wait()
        files.close()


if __name__ == "__main__":
    sys.exit(main())
