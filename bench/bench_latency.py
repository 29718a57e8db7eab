"""Added latency at a moderate fixed rate: p50/p99 through the node minus the origin's.

wrk measures throughput; an operator also asks "what does the proxy add to each
request when it is not busy?". An open-loop client sends GETs at a fixed rate
(default 1,000/s, bounded count) over keep-alive connections, first to the
origin directly, then through a node + HTTP-upstream worker (miss path) and to
the node's cache (hit path), all in this one run.

    python -m bench.bench_latency [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.procs import Procs
from bench.tools import wait_http


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


def _row(name: str, xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    p50, p99 = statistics.median(xs), xs[int(len(xs) * 0.99) - 1]
    print(f"{name:<36} {len(xs):7d} {p50:8.3f} {p99:8.3f}")
    return p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    procs = Procs()
    try:
        _, oport = procs.origin()
        _, http, workers = procs.node("--cache", "memory")
        procs.worker(workers, "--upstream", f"http://127.0.0.1:{oport}")
        wait_http(f"http://127.0.0.1:{http}/bytes/1024")
        print(f"{'target (open loop, ' + str(args.rate) + '/s)':<36} {'reqs':>7} "
              f"{'p50 ms':>8} {'p99 ms':>8}")
        miss, hit = "/bytes/1024?nocache=1", "/bytes/1024"
        origin = _row("origin directly", asyncio.run(_measure(oport, miss, args.rate,
                                                                args.seconds)))
        through = _row("node + worker (miss)", asyncio.run(_measure(http, miss, args.rate,
                                                                     args.seconds)))
        cached = _row("node cache (hit)", asyncio.run(_measure(http, hit, args.rate,
                                                                args.seconds)))
        print(f"\nadded by the miss path: p50 {through[0] - origin[0]:+.3f} ms, "
              f"p99 {through[1] - origin[1]:+.3f} ms")
        print(f"a hit against the origin: p50 {cached[0] - origin[0]:+.3f} ms")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
