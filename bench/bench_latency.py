"""Added latency at a moderate fixed rate: p50/p99 through the node minus the origin's.

wrk measures throughput; an operator also asks "what does the proxy add to each
request when it is not busy?". An open-loop client sends GETs at a fixed rate
(default 1,000/s, bounded count) over keep-alive connections, first to the
origin directly, then through a node + HTTP-upstream worker (miss path) and to
the node's cache (hit path), then through the design's floor (bench.skeleton: a
featureless node and worker over the same ZeroMQ hop), the featureless node in front
of our worker, and our node and worker again with both kept to one CPU
(`--cpu-affinity`: a request's wake-ups stay on that CPU) and the floor so, all in this
one run; last, a node with `--busy-poll on` (node/spinner.py), with the origin, the floor and
the pinned pair measured again while its spinners keep the CPUs awake.

"node CPU" is the node process's CPU µs a request during its row (ours, and the
floor's featureless node). At this rate each request finds the node asleep and its
caches cold: a miss costs our node two to three times the CPU it costs at full load
(bench_profile.md §34), and that CPU, more than the hops, is what it adds over the floor.

    python -m bench.bench_latency [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from bench.procs import Procs, free_port
from bench.tools import (
    KEEPALIVE_PROXYING,
    Nginx,
    children,
    cpu_seconds,
    have,
    origin_upstream,
    wait_http,
)


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> float:
    started = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return (time.perf_counter() - started) * 1000


async def _measure(port: int, path: str, rate: int, seconds: float) -> list[float]:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(32)]
    free = asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]()
    for c in conns:
        free.put_nowait(c)
    samples: list[float] = []

    async def fire() -> None:
        conn = await free.get()
        try:
            samples.append(await _one(*conn, path))
        finally:
            free.put_nowait(conn)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule of an open-loop load, not a sync
        tasks.append(asyncio.create_task(fire()))
    await asyncio.gather(*tasks)
    for _, w in conns:
        w.close()
    return samples


def _row(name: str, xs: list[float], cpu_us: float | None = None) -> tuple[float, float]:
    xs = sorted(xs)
    p50, p99 = statistics.median(xs), xs[int(len(xs) * 0.99) - 1]
    cpu = f"{cpu_us:9.0f}" if cpu_us is not None else "        -"
    print(f"{name:<36} {len(xs):7d} {p50:8.3f} {p99:8.3f} {cpu}")
    return p50, p99


def _move_threads(pid: int, cpus: set[int]) -> None:
    """Keep every thread of running process `pid` (its ZeroMQ I/O thread too) to `cpus`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def _nginx(oport: int) -> tuple[Nginx, int]:
    """nginx in front of the same origin: `/` proxy_pass, `/c/` proxy_cache (HITs once filled)."""
    nport = free_port()
    nginx = Nginx(f"""{origin_upstream(oport)} server {{ listen 127.0.0.1:{nport};
      location / {{ proxy_pass http://origin; {KEEPALIVE_PROXYING} }}
      location /c/ {{ proxy_pass http://origin/; proxy_cache z; {KEEPALIVE_PROXYING} }} }}""",
                  cache=True)
    nginx.dir.chmod(0o755)  # nginx run as root hands the cache to an unprivileged worker
    (nginx.dir / "cache").mkdir(mode=0o777)
    (nginx.dir / "cache").chmod(0o777)
    nginx.start()
    wait_http(f"http://127.0.0.1:{nport}/_count")
    return nginx, nport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    procs = Procs()
    nginx: Nginx | None = None
    try:
        _, oport = procs.origin()
        ours, http, workers = procs.node("--cache", "memory")
        procs.worker(workers, "--upstream", f"http://127.0.0.1:{oport}")
        wait_http(f"http://127.0.0.1:{http}/bytes/1024")
        floor_node, shttp, sworkers = procs.skeleton()
        procs.skeleton_worker(sworkers, oport)
        wait_http(f"http://127.0.0.1:{shttp}/bytes/1024", success=True)
        _, mhttp, mworkers = procs.skeleton()
        procs.worker(mworkers, "--upstream", f"http://127.0.0.1:{oport}")
        wait_http(f"http://127.0.0.1:{mhttp}/bytes/1024", success=True)
        # Ours again, the node and its worker kept to one CPU (node.cpuaffinity).
        cpu = str(max(os.sched_getaffinity(0)))
        pinned, phttp, pworkers = procs.node("--cache", "memory", "--cpu-affinity", cpu)
        procs.worker(pworkers, "--upstream", f"http://127.0.0.1:{oport}", "--cpu-affinity", cpu)
        wait_http(f"http://127.0.0.1:{phttp}/bytes/1024", success=True)
        # And the floor so (bench.skeleton takes no flag: its running threads are moved).
        pfloor, pfhttp, pfworkers = procs.skeleton()
        pfworker = procs.skeleton_worker(pfworkers, oport)
        wait_http(f"http://127.0.0.1:{pfhttp}/bytes/1024", success=True)
        for pid in (pfloor.pid, pfworker.pid):
            _move_threads(pid, {int(cpu)})
        if have("nginx"):
            nginx, nport = _nginx(oport)
            wait_http(f"http://127.0.0.1:{nport}/c/bytes/1024")  # fills nginx's cache
        print(f"{'target (open loop, ' + str(args.rate) + '/s)':<36} {'reqs':>7} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'node CPU':>9}")
        miss, hit = "/bytes/1024?nocache=1", "/bytes/1024"

        def row(name: str, port: int, path: str, node_pid: int = 0) -> tuple[float, float]:
            """One target's p50/p99; with `node_pid`, that node's CPU µs a request too."""
            before = cpu_seconds(node_pid) if node_pid else 0.0
            xs = asyncio.run(_measure(port, path, args.rate, args.seconds))
            cpu = (cpu_seconds(node_pid) - before) / len(xs) * 1e6 if node_pid else None
            return _row(name, xs, cpu)

        origin = row("origin directly", oport, miss)
        through = row("node + worker (miss)", http, miss, ours.pid)
        cached = row("node cache (hit)", http, hit, ours.pid)
        floor = row("floor: featureless node + worker", shttp, miss, floor_node.pid)
        mixed = row("featureless node + our worker", mhttp, miss)
        one_cpu = row(f"node + worker on CPU {cpu} (miss)", phttp, miss, pinned.pid)
        floor_cpu = row(f"floor on CPU {cpu}", pfhttp, miss, pfloor.pid)
        print(f"\nadded by the miss path: p50 {through[0] - origin[0]:+.3f} ms, "
              f"p99 {through[1] - origin[1]:+.3f} ms")
        print(f"added by the design's floor (bench.skeleton): p50 {floor[0] - origin[0]:+.3f} ms, "
              f"p99 {floor[1] - origin[1]:+.3f} ms; with our worker: p50 "
              f"{mixed[0] - origin[0]:+.3f} ms")
        print(f"added with node and worker on one CPU (--cpu-affinity {cpu}): p50 "
              f"{one_cpu[0] - origin[0]:+.3f} ms, p99 {one_cpu[1] - origin[1]:+.3f} ms; "
              f"the floor so: p50 {floor_cpu[0] - origin[0]:+.3f} ms")
        print(f"a hit against the origin: p50 {cached[0] - origin[0]:+.3f} ms")
        if nginx is not None:
            passed = row("nginx proxy_pass", nport, miss)
            nhit = row("nginx proxy_cache (hit)", nport, "/c" + hit)
            print(f"\nadded by nginx proxy_pass: p50 {passed[0] - origin[0]:+.3f} ms, "
                  f"p99 {passed[1] - origin[1]:+.3f} ms")
            print(f"hit, node - nginx: p50 {cached[0] - nhit[0]:+.3f} ms, "
                  f"p99 {cached[1] - nhit[1]:+.3f} ms (goal: p99 within 0.2 ms)")
        # Last, since its spinners keep every CPU of the machine awake while they live:
        # the origin, the floor and the pinned pair are measured again beside them.
        busy, bhttp, bworkers = procs.node("--cache", "memory", "--busy-poll", "on")
        procs.worker(bworkers, "--upstream", f"http://127.0.0.1:{oport}")
        wait_http(f"http://127.0.0.1:{bhttp}/bytes/1024", success=True)
        spinners = children(busy.pid)
        spun = sum(cpu_seconds(pid) for pid in spinners)
        started = time.monotonic()
        print(f"\nwith --busy-poll (a spinner on each of {len(spinners)} CPUs, node/spinner.py):")
        b_origin = row("origin directly", oport, miss)
        b_through = row("node + worker (miss)", bhttp, miss, busy.pid)
        b_floor = row("floor: featureless node + worker", shttp, miss, floor_node.pid)
        b_one_cpu = row(f"node + worker on CPU {cpu} (miss)", phttp, miss, pinned.pid)
        share = ((sum(cpu_seconds(pid) for pid in spinners) - spun)
                 / (time.monotonic() - started) / max(len(spinners), 1))
        print(f"added by the miss path with --busy-poll: p50 {b_through[0] - b_origin[0]:+.3f} ms, "
              f"p99 {b_through[1] - b_origin[1]:+.3f} ms; the floor so: p50 "
              f"{b_floor[0] - b_origin[0]:+.3f} ms; on one CPU: p50 "
              f"{b_one_cpu[0] - b_origin[0]:+.3f} ms")
        print(f"the spinners ran {share:.0%} of each CPU's time meanwhile (time nothing "
              f"else wanted)")
    finally:
        procs.stop_all()
        if nginx is not None:
            nginx.stop()


if __name__ == "__main__":
    main()
