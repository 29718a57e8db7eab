"""A real node and a real `scale0 worker --upstream` in front of an origin that
misbehaves byte by byte (testkit/hostileorigin.py, its own process).

The client of the node gets a clear 502/504 while no head has gone out, an aborted
connection (never a short body passed as whole) once it has, and the worker stays
up, serves the next request, keeps its sockets and its memory bounded (a 1 GiB
answer streams through with the worker's peak memory far below it).
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.procs import Proc, free_port, scale0_bin, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TESTS = Path(__file__).resolve().parents[1]
CONCURRENCY = 4


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.procs: list[Proc] = []
        python = str(Path(scale0_bin()).with_name("python"))
        env = {"PYTHONPATH": str(TESTS)}
        self.origin_port = free_port()
        self.http = free_port()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        config = tmp / "node.toml"
        config.write_text("[workers]\ndefault_timeout = 1.0\n")  # waited out by each /silent
        self.procs.append(Proc([python, "-m", "testkit.hostileorigin", str(self.origin_port)],
                               tmp / "origin.log", env=env))
        self.procs.append(Proc([
            scale0_bin(), "node", "--config", str(config), "--id", "h11",
            "--http", f"127.0.0.1:{self.http}", "--admin", f"127.0.0.1:{free_port()}",
            "--workers", endpoint, "--cache", "off",
            "--gossip", f"tcp://127.0.0.1:{free_port()}",
            "--peer", f"tcp://127.0.0.1:{free_port()}"], tmp / "node.log"))
        self.worker = Proc([scale0_bin(), "worker", "--node", endpoint, "--service", "default",
                            "--concurrency", str(CONCURRENCY), "--read-timeout", "1",
                            "--upstream",
                            f"http://127.0.0.1:{self.origin_port}"], tmp / "worker.log")
        self.procs.append(self.worker)
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.origin_port), 1).close()
                   or True, timeout=20, what="the origin")
        wait_until(lambda: self.get("/ok")[0] == 200, timeout=30, what="a worker answering")

    def get(self, path: str, conn: http.client.HTTPConnection | None = None
            ) -> tuple[int, bytes]:
        c = conn or http.client.HTTPConnection("127.0.0.1", self.http, timeout=30)
        try:
            c.request("GET", path)
            resp = c.getresponse()
            return resp.status, resp.read()
        finally:
            if conn is None:
                c.close()

    def worker_status(self, key: str) -> int:
        """A field of the worker's /proc status, in kB (VmHWM, VmRSS)."""
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{key} not in the worker's status")

    def worker_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.worker.pid}/fd"))

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("hostile"))
    try:
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop()


def test_invalid_heads_and_silence_are_502_and_504_and_nothing_leaks(stack: Stack) -> None:
    fds = stack.worker_fds()
    for _ in range(CONCURRENCY + 2):  # more than the pool holds: a leak would show
        for path in ("/garbage", "/bighead", "/cr", "/twocl", "/clte", "/upgrade",
                     "/manyheaders", "/short"):
            status, body = stack.get(path)
            assert status == 502, (path, status, body, stack.logs())
        status, _ = stack.get("/silent")
        assert status == 504, stack.logs()
    status, body = stack.get("/interim")
    assert (status, body) == (200, b"ok")
    assert stack.worker.alive()
    wait_until(lambda: stack.worker_fds() <= fds + CONCURRENCY, timeout=20,
               what="the worker's sockets to close")


def test_a_body_broken_after_the_head_aborts_the_client_connection(stack: Stack) -> None:
    for path in ("/reset", "/shortbig", "/badchunk", "/stall", "/stall"):
        conn = http.client.HTTPConnection("127.0.0.1", stack.http, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                resp.read()
        finally:
            conn.close()
        assert stack.get("/ok") == (200, b"ok")


def test_bytes_past_a_response_never_answer_the_next_request(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.http, timeout=30)
    try:
        for path in ("/long", "/nocontent", "/longlater", "/ok", "/long", "/ok", "/ok"):
            status, body = stack.get(path, conn)
            assert b"SMUGGLED" not in body and b"hello" not in body, (path, body)
            assert status in (200, 204), (path, status)
    finally:
        conn.close()


def test_a_1_gib_answer_streams_with_the_worker_memory_bounded(stack: Stack) -> None:
    before = stack.worker_status("VmRSS")
    conn = http.client.HTTPConnection("127.0.0.1", stack.http, timeout=60)
    try:
        conn.request("GET", "/huge")
        resp = conn.getresponse()
        assert resp.status == 200
        total = 0
        for _ in range(1 << 12):  # bounded: 4096 reads of 1 MiB cover the 1 GiB
            block = resp.read(1 << 20)
            if not block:
                break
            total += len(block)
        assert total == 1 << 30
    finally:
        conn.close()
    peak = stack.worker_status("VmHWM")
    assert peak < before + 64 * 1024, (before, peak)  # kB: far below the 1 GiB it carried
    assert stack.get("/ok") == (200, b"ok")
