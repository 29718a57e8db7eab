"""An operator's day on a live node, with real processes: rolling worker restarts
and a worker frozen (SIGSTOP) while it holds requests, all under a closed-loop
client. Every process is a real `scale0 node` / `scale0 worker` on loopback,
killed by its own PID; loops are bounded in count and time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.meshnodes import MeshNode, unique_port, worker
from testkit.procs import Proc, scale0_bin, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

APPS = Path(__file__).parent / "apps"


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH")]))}


def _origin(tmp: Path) -> tuple[Proc, str]:
    """tests/e2e/apps/origin.py on a fresh port, accepting; (process, its URL)."""
    port = unique_port()
    python = str(Path(scale0_bin()).with_name("python"))
    origin = Proc([python, "-m", "origin", str(port)], tmp / "origin.log", env=_env())
    wait_until(lambda: _connects(port), timeout=20, what="the origin")
    return origin, f"http://127.0.0.1:{port}"


class Day:
    """An origin (tests/e2e/apps/origin.py) and one node; workers come and go."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.origin, self.upstream = _origin(tmp)
        self.node = MeshNode(tmp, "day", extra=["--cache", "none", "--log-level", "INFO"])
        self.node.start()
        self.workers: list[Proc] = []
        wait_until(self.node.health, timeout=20, what="the node's admin listener")

    def worker(self, tag: str, concurrency: int = 4) -> Proc:
        proc = worker(self.tmp, self.node, self.upstream, concurrency=concurrency,
                      tag=f"-{tag}-{len(self.workers)}")
        self.workers.append(proc)
        return proc

    def wait_workers(self, count: int) -> None:
        wait_until(lambda: self.node.workers_of() == count, timeout=20,
                   what=f"{count} worker(s) on the node")

    def logs(self) -> str:
        parts = [self.node.log_tail(4000)]
        parts += [f"--- {p.log_path.name}\n{p.output()[-2000:]}" for p in self.workers]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in reversed(self.workers):
            proc.stop()
        self.node.stop()
        self.origin.stop()


@pytest.fixture
def day(tmp_path: Path) -> Iterator[Day]:
    d = Day(tmp_path)
    try:
        yield d
    except BaseException:
        print(d.logs())
        raise
    finally:
        d.stop()


class Loop:
    """`threads` closed-loop GET clients until stopped; `_run(n)` is one client."""

    def __init__(self, threads: int, limit: int = 3000) -> None:
        self.limit = limit
        self.failures: list[str] = []
        self.refused = 0
        self.done = 0
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, n: int) -> None:
        raise NotImplementedError

    def _get(self, conn: http.client.HTTPConnection, target: str, label: str) -> bool:
        """One GET, its failure noted; False if the connection broke."""
        ok = True
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or body != b"slow done":
                self.failures.append(f"{label}: {resp.status} {body[:100]!r}")
        except (OSError, http.client.HTTPException) as exc:
            self.failures.append(f"{label}: {exc!r}")
            ok = False
        with self.lock:
            self.done += 1
        return ok

    def passed(self, more: int, timeout: float = 20) -> None:
        """Wait until `more` further GETs completed."""
        target = self.done + more
        wait_until(lambda: self.done >= target, timeout=timeout, what=f"{more} more GETs")

    def stop(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(40)


class Client(Loop):
    """Closed-loop GETs of `path` on one keep-alive connection per client."""

    def __init__(self, port: int, path: str, threads: int = 4) -> None:
        self.port = port
        self.path = path
        super().__init__(threads)

    def _run(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for i in range(self.limit):  # bounded in count; each GET bounded by the timeout
            if self.halt.is_set():
                break
            if not self._get(conn, f"{self.path}&c={n}&i={i}", f"{n}/{i}"):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()


def test_rolling_restart_of_two_workers_loses_no_get(day: Day) -> None:
    first = day.worker("a")
    day.worker("b")
    day.wait_workers(2)
    client = Client(day.node.http, "/slow?ms=30")
    try:
        client.passed(40)
        for tag in ("a2", "b2"):
            old = first if tag == "a2" else day.workers[1]
            assert old.terminate(15) == 0, day.logs()
            client.passed(20)  # the survivor carries the load alone
            day.worker(tag)
            day.wait_workers(2)
            client.passed(20)
    finally:
        client.stop()
    assert not client.failures, client.failures[:5]
    stats = day.node.health()
    assert client.done >= 120, stats


def _app_worker(day: Day, tag: str, concurrency: int = 2) -> Proc:
    proc = Proc([scale0_bin(), "worker", "--node", day.node.workers, "--service", "default",
                 "--concurrency", str(concurrency), "--app", "heldapp:handle"],
                day.tmp / f"worker-{tag}-{len(day.workers)}.log", env=_env())
    day.workers.append(proc)
    return proc


def _ask(port: int, method: str, path: str, out: list[tuple[int, bytes]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=b"x" * 100 if method == "POST" else None)
        resp = conn.getresponse()
        out.append((resp.status, resp.read()))
    except (OSError, http.client.HTTPException) as exc:
        out.append((-1, repr(exc).encode()))
    finally:
        conn.close()


def _dropped(day: Day) -> int:
    """Replies the node dropped from workers it no longer counts or gave nothing to."""
    conn = http.client.HTTPConnection("127.0.0.1", day.node.admin, timeout=5)
    try:
        conn.request("GET", "/_scale0/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0
    for line in text.splitlines():
        if line.startswith("scale0_frames_dropped_total{") and 'socket="workers"' in line and (
                'reason="dropped_replies"' in line or 'reason="unknown_worker"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_a_frozen_worker_post_fails_get_is_retried_and_thawed_replies_are_dropped(
        day: Day) -> None:
    frozen = _app_worker(day, "frozen")
    day.wait_workers(1)
    frozen_pid = str(frozen.pid).encode()
    get: list[tuple[int, bytes]] = []
    post: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=_ask, args=(day.node.http, "GET", "/g?ms=1500", get)),
               threading.Thread(target=_ask, args=(day.node.http, "POST", "/p?ms=1500", post))]
    for t in threads:
        t.start()
    wait_until(lambda: day.node.health()["workers"]["default"]["in_flight"] == 2, timeout=10,
               what="a GET and a POST held by the worker")
    frozen.signal(signal.SIGSTOP)
    _app_worker(day, "spare")
    for t in threads:
        t.join(20)
    # The GET ran again on the spare; the POST may have had its effect: failed, not repeated.
    assert len(get) == 1 and get[0][0] == 200 and frozen_pid not in get[0][1], get
    assert len(post) == 1 and post[0][0] in (502, 503, 504), post
    wait_until(lambda: day.node.workers_of() == 1, timeout=10, what="only the spare counted")
    before = _dropped(day)
    frozen.signal(signal.SIGCONT)
    wait_until(lambda: day.node.workers_of() == 2, timeout=20, what="the thawed worker back")
    # Thawed, it either sends its two late replies (the node drops and counts them: both
    # requests are settled) or, finding the node silent for as long as it was frozen,
    # reconnects afresh and forgets them; never does a late reply reach a client.
    wait_until(lambda: _dropped(day) >= before + 2 or "reconnecting" in frozen.output(),
               timeout=10, what="the thawed worker's late replies dropped, or it reconnected")
    answers: set[bytes] = set()
    for i in range(20):  # bounded: both workers answer fresh requests again
        out: list[tuple[int, bytes]] = []
        _ask(day.node.http, "GET", f"/after?i={i}", out)
        assert out[0][0] == 200, out
        answers.add(out[0][1])
    assert len(answers) == 2, answers


class Spread(Loop):
    """Closed-loop GET clients, each going round-robin over the nodes' HTTP ports on a
    fresh connection per GET. A refused connect (the node is down: DNS's job) is
    counted apart; any other failure of a GET the node accepted is a failure."""

    def __init__(self, ports: list[int], threads: int = 6) -> None:
        self.ports = ports
        super().__init__(threads)

    def _run(self, n: int) -> None:
        for i in range(self.limit):  # bounded in count; each GET bounded by the timeout
            if self.halt.is_set():
                break
            port = self.ports[(n + i) % len(self.ports)]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                conn.connect()
            except ConnectionRefusedError:
                with self.lock:
                    self.refused += 1
                conn.close()
                continue
            self._get(conn, f"/slow?ms=40&c={n}&i={i}", f"{port} {n}/{i}")
            conn.close()


def test_rolling_restart_of_three_nodes_loses_no_accepted_get(tmp_path: Path) -> None:
    origin, upstream = _origin(tmp_path)
    extra = ["--cache", "none", "--log-level", "INFO"]
    first = MeshNode(tmp_path, "r0", extra=extra)
    nodes = [first] + [MeshNode(tmp_path, f"r{i}", seed=first.peer, extra=extra)
                       for i in (1, 2)]
    procs: list[Proc] = [origin]
    client: Spread | None = None
    try:
        for node in nodes:
            node.start()
            wait_until(node.health, timeout=20, what=f"{node.name} up")
            # One slot each: the clients' six at once overflow to peers all the time.
            procs.append(worker(tmp_path, node, upstream, concurrency=1))
        for node in nodes:
            wait_until(lambda n=node: n.workers_of() == 1, timeout=20, what="workers")
            wait_until(lambda n=node: sum(s == "alive" for s, _ in n.views().values()) == 3,
                       timeout=20, what=f"{node.name} sees all three alive")
        client = Spread([n.http for n in nodes])
        client.passed(40)
        for node in nodes:
            assert node.proc is not None
            assert node.proc.terminate(25) == 0
            client.passed(20)
            if node.seed is None:  # the first node comes back through a running one
                node.seed = nodes[1].peer
            node.start()
            wait_until(lambda n=node: n.workers_of() == 1, timeout=20, what="worker back")
            wait_until(lambda n=node: all(
                sum(s == "alive" for s, _ in o.views().values()) == 3 for o in nodes),
                timeout=20, what=f"{node.name} alive everywhere again")
            client.passed(20)
        client.stop()
        assert not client.failures, (client.failures[:5], len(client.failures), client.done)
    except BaseException:
        for node in nodes:
            print(node.log_tail(3000))
        raise
    finally:
        if client is not None:
            client.stop()
        for proc in reversed(procs):
            proc.stop()
        for node in nodes:
            node.stop()


@contextlib.contextmanager
def _pair(tmp: Path, a_slots: int, preset: str | None = None
          ) -> Iterator[tuple[MeshNode, MeshNode]]:
    """An origin; node a with `a_slots` worker slots and node b with one, seeded from a;
    both up, and b seeing a's slots. Logs printed if the test fails."""
    origin, upstream = _origin(tmp)
    extra = ["--cache", "none", "--log-level", "INFO"]
    a = MeshNode(tmp, "a", preset=preset, extra=extra)
    b = MeshNode(tmp, "b", seed=a.peer, preset=preset, extra=extra)
    procs = [origin]
    try:
        for node, slots in ((a, a_slots), (b, 1)):
            node.start()
            wait_until(node.health, timeout=20, what=f"{node.name} up")
            procs.append(worker(tmp, node, upstream, concurrency=slots))
            wait_until(lambda n=node: n.workers_of() == 1, timeout=20, what="its worker")
        wait_until(lambda: b.views().get("a", ("",))[0] == "alive"
                   and b.service().get("workers") == 1
                   and any(r["id"] == "a" and r.get("services", {}).get("default")
                           for r in b.mesh()["nodes"]),
                   timeout=30, what="b sees a and its slots")
        yield a, b
    except BaseException:
        for node in (a, b):
            print(node.log_tail(3000))
        raise
    finally:
        for proc in reversed(procs):
            proc.stop()
        for node in (a, b):
            node.stop()


def _overflow_to_a(a: MeshNode, b: MeshNode, ms: int
                   ) -> tuple[list[tuple[int, bytes]], list[threading.Thread]]:
    """Two slow GETs at b: one fills b's slot, the other is forwarded to a and running
    there on return. (Their answers, and the threads that wait for them.)"""
    held: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=_ask, args=(b.http, "GET", f"/slow?ms={ms}&h={i}",
                                                   held)) for i in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: a.health()["workers"]["default"]["in_flight"] == 1, timeout=10,
               what="a forwarded GET running on a")
    return held, threads


def test_a_draining_node_turns_forwards_away_instead_of_failing_them(tmp_path: Path) -> None:
    """A, draining, still finishes a slow GET B forwarded to it; a GET B forwards while
    A waits for it must be turned away as busy (B runs it elsewhere), never a 503."""
    with _pair(tmp_path, a_slots=2) as (a, b):
        held, threads = _overflow_to_a(a, b, 4000)
        assert a.proc is not None
        a.proc.signal(signal.SIGTERM)
        wait_until(lambda: not _connects(a.http), timeout=10, what="a's listener closed")
        late: list[tuple[int, bytes]] = []
        _ask(b.http, "GET", "/slow?ms=10&late=1", late)  # b's slot is busy: a looks free
        for t in threads:
            t.join(20)
        assert held == [(200, b"slow done")] * 2, held
        assert late == [(200, b"slow done")], late
        assert a.proc.popen.wait(20) == 0


def test_a_node_killed_and_back_at_once_does_not_hold_a_get_forwarded_to_it(
        tmp_path: Path) -> None:
    """kill -9 of A while it runs a GET B forwarded to it, and A back on its ports at once
    (a supervisor's restart, quicker than B's failure detector: B never sees A dead). B
    must give that forward up when A's new process speaks and answer the GET, here or at
    A — not wait for the old process's answer until the GET's deadline (QA: the rolling
    restart's one lost GET)."""
    # wan: a silence of a few seconds is not even doubted, as a quick restart is not.
    with _pair(tmp_path, a_slots=1, preset="wan") as (a, b):
        held, threads = _overflow_to_a(a, b, 3000)
        assert a.proc is not None
        a_incarnation = b.views()["a"][1]
        a.proc.kill9()
        killed = time.monotonic()
        a.seed = b.peer  # back through the running node, as an operator's would
        a.start()
        for t in threads:
            t.join(40)
        took = time.monotonic() - killed
        assert held == [(200, b"slow done")] * 2, held
        assert took < 15, took  # not the forward's 30 s deadline
        assert b.views()["a"][0] == "alive" and b.views()["a"][1] > a_incarnation


def _config(alt: bool, timeout: float, broken: bool = False) -> str:
    text = f"[services.default]\ntimeout = {timeout}\n"
    if alt:  # the clients' path moves to the alt service (its own worker, same origin)
        text += '[services.alt]\nroutes = ["127.0.0.1/slow"]\n'
    if broken:
        text += '[services.broken]\noverflow = "sideways"\n'
    return text


def test_sighup_under_load_swaps_routes_and_services_and_refuses_a_broken_file(
        tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(_config(alt=False, timeout=30))
    origin, upstream = _origin(tmp_path)
    node = MeshNode(tmp_path, "hup", extra=["--cache", "none", "--log-level", "INFO",
                                            "--config", str(config)])
    procs = [origin]
    client: Client | None = None
    try:
        node.start()
        wait_until(node.health, timeout=20, what="the node up")
        procs.append(worker(tmp_path, node, upstream, concurrency=4))
        procs.append(worker(tmp_path, node, upstream, concurrency=4, service="alt", tag="-alt"))
        wait_until(lambda: node.workers_of() == 1 and node.workers_of("alt") == 1, timeout=20,
                   what="both workers")
        assert node.proc is not None
        proc = node.proc
        held: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=_ask, args=(node.http, "GET", "/slow?ms=2500&held=1",
                                                   held))
        slow.start()
        client = Client(node.http, "/slow?ms=20")
        client.passed(30)
        steps = [(True, 1.0, False), (True, 1.0, True), (False, 30.0, False),
                 (False, 30.0, True), (True, 30.0, False)]
        for n, (alt, timeout, broken) in enumerate(steps, 1):
            config.write_text(_config(alt, timeout, broken))
            proc.signal(signal.SIGHUP)
            word = "config refused" if broken else "SIGHUP: reloaded"
            want = sum(1 for a, t, b in steps[:n] if b == broken)
            wait_until(lambda w=word, c=want: proc.output().count(w) >= c, timeout=10,
                       what=f"reload {n} logged")
            client.passed(20)
        slow.join(20)
        client.stop()
        # The held GET keeps the 30 s timeout it started with, though a reload said 1 s.
        assert held == [(200, b"slow done")], held
        assert not client.failures, (client.failures[:5], len(client.failures))
        served = {line.split()[-2] for line in proc.output().splitlines()
                  if "GET /slow?ms=20" in line}
        assert served >= {"default", "alt"}, served
    except BaseException:
        print(node.log_tail(4000))
        raise
    finally:
        if client is not None:
            client.stop()
        for p in reversed(procs):
            p.stop()
        node.stop()
