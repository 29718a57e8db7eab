"""`scale0 demo`: a local two-datacenter mesh you can curl and watch.

Starts, in subprocesses of this one: a tiny origin web server, four nodes —
east-1 and east-2 in datacenter "east", west-1 and west-2 in "west", all joined
through east-1 as their seed —, HTTP-upstream workers in front of the origin
(east has few slots, west more, so a burst at east overflows to west), a
Python-API worker for /hello, a static mount, an in-node Tornado handler, and
the file cache. It prints what to curl, the dashboard's URL and the mesh load
table, and stops everything cleanly on Ctrl-C or after `--for` seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.web
from rich.console import Console

from node.freeport import free_port
from node.http import Headers, Request, Response

NODES = (("east-1", "east"), ("east-2", "east"), ("west-1", "west"), ("west-2", "west"))


async def demo_hello(request: Request) -> Response:
    """The demo's Python-API worker handler (`scale0 worker --app node.demo:demo_hello`)."""
    text = f"hello from a Python-API worker: {request.method} {request.target}\n"
    return Response(200, Headers([("Content-Type", "text/plain; charset=utf-8")]), text.encode())


class _InNode(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("answered inside the node by an in-node Tornado handler (--app)\n")


# `--app node.demo:demo_app`: in-node handlers, run before the cache and the workers.
demo_app = [(r"/inapp", _InNode)]


def demo_origin(port: int) -> None:
    """The demo's origin web server (run in its own process)."""

    class Page(tornado.web.RequestHandler):
        async def get(self) -> None:
            if self.request.path.startswith("/slow"):
                await asyncio.sleep(0.1)  # a slow backend, so east's few slots fill up
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("Cache-Control", "no-store" if "nocache" in self.request.uri
                            else "max-age=10")
            if self.request.path.startswith("/cookie"):  # personal: never shared by the cache
                self.add_header("Set-Cookie", "demo=1; Path=/")
            self.write(f"hello from the demo origin: you asked for {self.request.uri}\n"
                       f"it came through {self.request.headers.get('Via', '(no proxy)')} "
                       f"for {self.request.headers.get('X-Forwarded-For', '?')}\n")

    async def serve() -> None:
        tornado.web.Application([(r"/.*", Page)]).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(serve())


def _port(preferred: int = 0) -> int:
    return free_port("127.0.0.1", preferred)


@dataclass
class _Node:
    name: str
    dc: str
    http: int
    admin: int
    workers: int
    gossip: int
    peer: int

    @classmethod
    def make(cls, name: str, dc: str, first: bool) -> _Node:
        if first:  # the first node takes the default ports when they are free
            return cls(name, dc, _port(8080), _port(8081), _port(7950), _port(7946), _port(7947))
        return cls(name, dc, _port(), _port(), _port(), _port(), _port())


@dataclass
class _Demo:
    logs: Path
    seconds: float
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.logs / f"{name}.log", "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


def run_demo(seconds: float, keep_logs: bool = False) -> int:
    """Start the demo mesh, print what to try, stop it all cleanly; the exit code.
    The temporary folder goes after a clean stop unless `keep_logs`."""
    demo = _Demo(Path(tempfile.mkdtemp(prefix="scale0-demo-")), seconds)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: demo.stop.set())
    py = [sys.executable, "-m", "node"]
    origin = _port()
    static = demo.logs / "public"
    static.mkdir()
    (static / "readme.txt").write_text("a static file served by the node itself (--static)\n")
    (static / "app.3f9a1c2b.js").write_text("console.log('fingerprinted: cached for a year');\n")
    nodes = [_Node.make(name, dc, i == 0) for i, (name, dc) in enumerate(NODES)]
    seed = f"tcp://127.0.0.1:{nodes[0].peer}"
    code = 0
    try:
        demo.start("origin", [sys.executable, "-c",
                              f"from node.demo import demo_origin; demo_origin({origin})"])
        for n in nodes:
            demo.start(n.name, [
                *py, "node", "--id", n.name, "--dc", n.dc, "--http", f"127.0.0.1:{n.http}",
                "--admin", f"127.0.0.1:{n.admin}", "--workers", f"tcp://127.0.0.1:{n.workers}",
                "--gossip", f"tcp://127.0.0.1:{n.gossip}", "--peer", f"tcp://127.0.0.1:{n.peer}",
                *([] if n is nodes[0] else ["--seed", seed]),
                "--route", "*/hello=hello", "--static", f"/static={static}",
                "--app", "node.demo:demo_app", "--cache", f"files:{demo.logs / n.name}-cache",
            ])
        for n in nodes:  # east is small (2 slots a node), west is roomy
            slots = "2" if n.dc == "east" else "8"
            demo.start(f"worker-{n.name}", [
                *py, "worker", "--node", f"tcp://127.0.0.1:{n.workers}", "--service", "default",
                "--concurrency", slots, "--upstream", f"http://127.0.0.1:{origin}"])
        demo.start("worker-hello", [
            *py, "worker", "--node", f"tcp://127.0.0.1:{nodes[0].workers}", "--service", "hello",
            "--app", "node.demo:demo_hello"])
        _wait_until_up(demo, nodes)
        _print_intro(demo, nodes)
        _show_table(demo, f"http://127.0.0.1:{nodes[0].admin}", seconds)
    except RuntimeError as exc:
        print(f"scale0 demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        demo.stop_all()
    if code == 0 and not keep_logs:
        shutil.rmtree(demo.logs, ignore_errors=True)
        print("scale0 demo: stopped (--keep-logs keeps its logs)", flush=True)
    else:
        print(f"scale0 demo: stopped; logs in {demo.logs}", flush=True)
    return code


def _wait_until_up(demo: _Demo, nodes: list[_Node]) -> None:
    end = time.monotonic() + 40
    while not demo.stop.is_set():
        dead = [n for n, p in demo.procs.items() if p.poll() is not None]
        if dead:
            tail = (demo.logs / f"{dead[0]}.log").read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{', '.join(dead)} exited early; see {demo.logs}\n"
                               + "\n".join(f"  {dead[0]}: {line}" for line in tail))
        try:
            if _ready(nodes):
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"the demo did not come up within 40 s; see {demo.logs}")
        demo.stop.wait(0.2)


def _ready(nodes: list[_Node]) -> bool:
    """Every node has its workers and sees all four nodes alive."""
    first = nodes[0]
    health = _get_json(f"http://127.0.0.1:{first.admin}/_scale0/health").get("workers", {})
    if not all(health.get(s, {}).get("workers", 0) > 0 for s in ("default", "hello")):
        return False
    for n in nodes:
        rows = _get_json(f"http://127.0.0.1:{n.admin}/_scale0/mesh").get("nodes", [])
        alive = [row for row in rows if row.get("state") == "alive"]
        with_workers = [r for r in alive if r["services"].get("default", {}).get("workers", 0)]
        if len(with_workers) < len(nodes):  # every node, and every node's workers, known
            return False
    return True


def _print_intro(demo: _Demo, nodes: list[_Node]) -> None:
    e1 = nodes[0]
    web = f"http://127.0.0.1:{e1.http}"
    admin = f"http://127.0.0.1:{e1.admin}"
    burst = f'for i in $(seq 40); do curl -s -o /dev/null -D - "{web}/slow/$i?nocache=1" & done'
    print(f"""Scale0 demo: 4 nodes in 2 datacenters, an origin, 5 workers (logs in {demo.logs})

  curl -i {web}/            # the origin through east-1's HTTP-upstream worker (then a cache HIT)
  curl -i {web}/hello       # a Python-API worker (route */hello=hello)
  curl -i {web}/inapp       # an in-node Tornado handler (--app), no worker involved
  curl -i {web}/static/readme.txt          # a static file served by the node (--static)
  curl -i -H 'Host: 127.0.0.1:{e1.http}' http://127.0.0.1:{nodes[1].http}/
      # the same URL (same Host, so the same cache key) at east-2: replicated, a HIT
  {burst} | grep -i x-scale0-node
      # a burst of slow requests at east-1: 2 slots per east node, the rest overflows to west

  dashboard (live):  {admin}/_scale0/
  load table:        scale0 mesh --admin {admin}
  purge:             scale0 purge --admin {admin} '{web}/*'

Response headers to look at: X-Scale0-Node (the node that served it), X-Cache, Age, Via.
{'Ctrl-C stops it.' if not demo.seconds else
 f'Stops by itself after {demo.seconds:g} s (or Ctrl-C).'}
""", flush=True)


def _show_table(demo: _Demo, admin: str, seconds: float) -> None:
    """The load table until the demo stops: live, redrawn every second, on a terminal;
    printed once otherwise (a log file or a pipe gets no redraws)."""
    from rich.live import Live

    from mesh.view import render_table

    end = time.monotonic() + seconds if seconds > 0 else None
    console = Console(width=110)

    def table() -> Any:
        try:
            doc = _get_json(f"{admin}/_scale0/mesh")
            return render_table(doc, title="the mesh, seen by east-1 (live)")
        except (OSError, ValueError) as exc:
            return f"(the load table could not be read: {exc})"

    if not console.is_terminal:
        console.print(table())
        demo.stop.wait(seconds if seconds > 0 else None)
        return
    with Live(table(), console=console, auto_refresh=False) as live:
        while not demo.stop.is_set() and (end is None or time.monotonic() < end):
            left = 1.0 if end is None else max(0.0, min(1.0, end - time.monotonic()))
            demo.stop.wait(left)  # the redraw period; Ctrl-C sets the event
            live.update(table(), refresh=True)
