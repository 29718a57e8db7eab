"""Where a miss's added latency goes: each step of one request, timed across processes.

    python -m bench timeline [--requests 2000] [--gap-ms 1]

Requests go one at a time, `--gap-ms` apart (1 ms ≈ 1,000 req/s offered, as in
`bench latency`), through a node and an HTTP-upstream worker to the bench origin.
The node and the worker run with a `sitecustomize` written by this benchmark into
a temporary directory: it wraps a few methods (the fast wire's data_received and
send, Broker.dispatch, ZmqPump.send and its message callback, the upstream
client's exchange and its connection's data_received) to append a timestamp
(`perf_counter_ns`: CLOCK_MONOTONIC, one clock for every process) to a file.
Nothing in node/ knows about it. Compiled classes (`make compiled`) take no wrapped
methods, so the node and the worker run as pure Python, from a copy of the packages'
.py files: compare steps with each other, not with `bench latency`'s compiled node.
A step's figure is the median, over the
requests, of the time between its two stamps; the stamps cost a little in every
step, so compare steps with each other and runs with runs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.procs import Procs
from bench.tools import wait_http

# Each stamp: (role prefix, module, class, method, stamp name). "pump" wraps the callback
# ZmqPump hands its messages to (the moment a message is taken off the socket).
_SITE = '''
import os, sys, time, atexit
_dir = os.environ.get("SCALE0_BENCH_TIMELINE")
_role = "worker" if "worker" in sys.argv else ("node" if "node" in sys.argv else None)
if _dir and _role:
    _ns = time.perf_counter_ns
    _buf = []
    _path = os.path.join(_dir, f"{_role}-{os.getpid()}.txt")

    def _flush():
        with open(_path, "a") as f:
            f.writelines(f"{t} {n}\\n" for t, n in _buf)
        _buf.clear()

    atexit.register(_flush)

    def _stamp(name):
        _buf.append((_ns(), name))
        if len(_buf) >= 1000:
            _flush()

    def _wrap(cls, meth, name):
        orig = getattr(cls, meth)

        def wrapped(*a, **k):
            _stamp(name)
            return orig(*a, **k)
        setattr(cls, meth, wrapped)

    import node.zmqpump as zp
    _wrap(zp.ZmqPump, "send", _role[0] + "_zsend")
    _init = zp.ZmqPump.__init__

    def _pump_init(self, sock, on_message):
        def stamped(frames, _on=on_message):
            _stamp(_role[0] + "_zmsg")
            return _on(frames)
        _init(self, sock, stamped)
    zp.ZmqPump.__init__ = _pump_init
    if _role == "node":
        import node.fastproto as fp, node.broker as br
        _wrap(fp.WireProtocol, "data_received", "n_in")
        _wrap(fp.WireProtocol, "send", "n_out")
        _wrap(br.Broker, "dispatch", "n_dispatch")
    else:
        import node.worker.upstream as up, node.worker.upstreamconn as uc
        _wrap(up.UpstreamClient, "_exchange", "w_exch")
        _wrap(uc.PooledConnection, "data_received", "w_oresp")
'''

STEPS = [
    ("c_send", "n_in", "client write → node's data_received"),
    ("n_in", "n_dispatch", "node: parse, exchange, pipeline, cache lookup → Broker.dispatch"),
    ("n_dispatch", "n_zsend", "node: dispatch → REQUEST sent"),
    ("n_zsend", "w_zmsg", "ZeroMQ hop node → worker"),
    ("w_zmsg", "w_exch", "worker: decode → handler → origin exchange begins"),
    ("w_exch", "w_oresp", "origin (its round trip from the worker)"),
    ("w_oresp", "w_zsend", "worker: answer parsed → REPLY sent"),
    ("w_zsend", "n_zmsg", "ZeroMQ hop worker → node"),
    ("n_zmsg", "n_out", "node: REPLY → response written"),
    ("n_out", "c_recv", "node's write → client has read it"),
]


async def _serial(port: int, path: str, n: int, gap: float) -> list[tuple[int, int]]:
    """n GETs one at a time on one keep-alive connection: (sent, read) in perf_counter_ns."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        out.append((t0, time.perf_counter_ns()))
        await asyncio.sleep(gap)  # the load's schedule (idle between requests), not a sync
    writer.close()
    return out


def _pure_copy(into: Path) -> None:
    """The four packages without their compiled extensions, for the children's PYTHONPATH
    (it comes before the editable install, so they import from here)."""
    root = Path(__file__).resolve().parent.parent
    for package in ("node", "cache", "mesh", "gossip"):
        shutil.copytree(root / package, into / package,
                        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))


def _stamps(folder: Path) -> list[tuple[int, str]]:
    events = []
    for f in folder.glob("*-*.txt"):
        for line in f.read_text().splitlines():
            t, name = line.split()
            events.append((int(t), name))
    return sorted(events)


def _steps(windows: list[tuple[int, int]], events: list[tuple[int, str]]
           ) -> tuple[dict[str, list[float]], int]:
    """Per step, the µs it took in each request whose stamps were all found in order."""
    times = [t for t, _ in events]
    order = [a for a, _, _ in STEPS] + ["c_recv"]
    out: dict[str, list[float]] = {f"{a}>{b}": [] for a, b, _ in STEPS}
    complete = 0
    for t0, t1 in windows:
        lo, hi = bisect.bisect_left(times, t0), bisect.bisect_right(times, t1)
        got, cursor = {"c_send": t0, "c_recv": t1}, t0
        for name in order[1:-1]:  # the first stamp of each kind after the one before
            found = next((t for t, n in events[lo:hi] if n == name and t >= cursor), None)
            if found is None:
                break
            got[name] = cursor = found
        if len(got) != len(order):
            continue
        complete += 1
        for a, b, _ in STEPS:
            out[f"{a}>{b}"].append((got[b] - got[a]) / 1000)
    return out, complete


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench timeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--gap-ms", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale0-bench-timeline-") as tmp:
        site, stamps = Path(tmp, "site"), Path(tmp, "stamps")
        site.mkdir()
        stamps.mkdir()
        (site / "sitecustomize.py").write_text(_SITE)
        _pure_copy(site)
        env = {"SCALE0_BENCH_TIMELINE": str(stamps),
               "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the node and worker processes inherit it
        procs = Procs()
        try:
            _, oport = procs.origin()
            _, http, workers = procs.node("--cache", "memory")
            procs.worker(workers, "--upstream", f"http://127.0.0.1:{oport}")
            path = "/bytes/1024?nocache=1"
            wait_http(f"http://127.0.0.1:{http}{path}")
            gap = args.gap_ms / 1000
            asyncio.run(_serial(http, path, 200, gap))  # warm-up
            direct = asyncio.run(_serial(oport, path, args.requests, gap))
            through = asyncio.run(_serial(http, path, args.requests, gap))
        finally:
            procs.stop_all()  # SIGTERM: each process writes its last stamps at exit
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        steps, complete = _steps(through, _stamps(stamps))
    if not complete:
        raise SystemExit("no request had all its stamps: did the node or worker fail to start?")
    print(f"{complete} of {len(through)} requests, one at a time, {args.gap_ms:g} ms apart, "
          "node and worker as pure Python; medians:")
    total = 0.0
    for a, b, what in STEPS:
        m = statistics.median(steps[f"{a}>{b}"])
        total += m
        print(f"  {what:<66} {m:7.1f} µs")
    origin = statistics.median((b - a) / 1000 for a, b in direct)
    through_p50 = statistics.median((b - a) / 1000 for a, b in through)
    print(f"  {'sum of the steps':<66} {total:7.1f} µs")
    print(f"origin directly p50 {origin:.1f} µs, through node + worker p50 {through_p50:.1f} µs "
          f"(with the stamps): added {through_p50 - origin:+.1f} µs")


if __name__ == "__main__":
    main()
