"""Broker dispatch throughput in one process, against raw ZeroMQ in the same run.

python -m bench.bench_dispatch [--requests N] [--concurrency C]

(a) reference: a DEALER echoing a ROUTER's messages, both drained through their
    FDs on one asyncio loop (the floor any protocol on this loop pays);
(a') the same echo with zmq.asyncio sockets (what the FD pump replaces);
(b) Broker.dispatch → SDK Worker (trivial handler) → reply, same loop;
(c) Broker.dispatch here → `scale0 worker --app` in its own process (the
    deployment's shape: each side has its own core), answering from memory;
(h) through HTTP end to end: wrk → `scale0 node` → that worker process;
(f) the same with bench.skeleton's featureless node in place of scale0's: the
    floor of this design on this machine, so h/f is what the node's features cost;
(hc) (h) with the node's memory cache on, as shipped: the worker's answer has no
    Cache-Control (an app's default), so each is stored stale and every burst
    coalesced, and hc/h is what the cache costs a dynamic answer;
(u) with --origin URL: the worker's UpstreamClient (httptools) against Tornado's
    simple_httpclient, GETs to the same origin at the same concurrency.
Prints rates and ratios. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import zmq

from node.broker import Broker, BrokerConfig
from node.http import Headers, Request, Response
from node.worker.sdk import Worker
from node.zmqpump import ZmqPump

LIMIT = 60.0  # seconds: no run goes past this, whatever N
_BODY = b"x" * 1024


async def answer(request: Request) -> Response:
    """The Python-API worker of (c) and (h): a 1 KiB answer from memory."""
    return Response(200, Headers([("Content-Type", "text/plain")]), _BODY)


async def raw(n: int, conc: int) -> float:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:0")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    waiting: dict[bytes, asyncio.Future[None]] = {}
    pumps: list[ZmqPump] = []

    def echo(frames: list[bytes]) -> None:
        pumps[0].send(frames)  # back to the sender

    rp = ZmqPump(router, echo)
    pumps.append(rp)
    dp = ZmqPump(dealer, lambda f: waiting.pop(f[0]).set_result(None))
    sent = 0
    end = time.monotonic() + LIMIT

    async def client() -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        while sent < n and time.monotonic() < end:
            sent += 1
            key = sent.to_bytes(8, "big")
            fut = waiting[key] = loop.create_future()
            dp.send([key, b"x" * 64])
            await fut

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    dt = time.perf_counter() - t0
    rp.close()
    dp.close()
    return sent / dt


async def raw_asyncio(n: int, conc: int) -> float:
    import zmq.asyncio

    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:0")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    waiting: dict[bytes, asyncio.Future[None]] = {}
    end = time.monotonic() + LIMIT

    async def echo() -> None:
        while True:
            await router.send_multipart(await router.recv_multipart())

    async def replies() -> None:
        while True:
            frames = await dealer.recv_multipart()
            waiting.pop(frames[0]).set_result(None)

    tasks = [asyncio.create_task(echo()), asyncio.create_task(replies())]
    sent = 0

    async def client() -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        while sent < n and time.monotonic() < end:
            sent += 1
            key = sent.to_bytes(8, "big")
            fut = waiting[key] = loop.create_future()
            await dealer.send_multipart([key, b"x" * 64])
            await fut

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    dt = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    router.close(linger=0)
    dealer.close(linger=0)
    return sent / dt


async def upstream_rates(url: str, seconds: float, conc: int) -> tuple[float, float]:
    """GETs/s of UpstreamClient and of Tornado's simple_httpclient against `url`."""
    from tornado.httpclient import AsyncHTTPClient

    from node.worker.upstream import UpstreamClient

    ours = UpstreamClient(url, conc)
    AsyncHTTPClient.configure("tornado.simple_httpclient.SimpleAsyncHTTPClient",
                              max_clients=conc)
    theirs = AsyncHTTPClient()

    async def measure(get: Callable[[], Awaitable[object]]) -> float:
        count = 0
        stop = time.monotonic() + seconds

        async def client() -> None:
            nonlocal count
            while time.monotonic() < stop:
                await get()
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        return count / (time.perf_counter() - t0)

    a = await measure(lambda: ours(Request("GET", "/", Headers())))
    b = await measure(lambda: theirs.fetch(url))
    await ours.close()
    theirs.close()
    return a, b


async def brokered(n: int, conc: int) -> float:
    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0"), "bench")
    await broker.start()
    body = b"x" * 1024

    async def handle(r: Request) -> Response:
        return Response(200, Headers([("Content-Type", "text/plain")]), body)

    worker = Worker(broker.bound_endpoint, ["www"], conc, handle)
    task = asyncio.create_task(worker.run())
    joined = time.monotonic() + 10
    while not broker.has_free_slot("www") and time.monotonic() < joined:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # polling a real condition, bounded
    done = 0
    end = time.monotonic() + LIMIT
    headers = Headers([("Host", "bench"), ("User-Agent", "bench"), ("Accept", "*/*")])

    async def client() -> None:
        nonlocal done
        while done < n and time.monotonic() < end:
            done += 1
            await broker.dispatch("www", Request("GET", "/", headers))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    dt = time.perf_counter() - t0
    worker.kill()
    await task
    await broker.close()
    return done / dt


async def cross_process(n: int, conc: int) -> tuple[float, float, float]:
    """(c): round trips/s from a broker here to a worker process answering from memory,
    and CPU µs per round trip of this process (the broker side) and of the worker."""
    from bench.procs import Procs
    from bench.tools import cpu_seconds

    broker = Broker(BrokerConfig(endpoint="tcp://127.0.0.1:0"), "bench")
    await broker.start()
    procs = Procs()
    try:
        worker = procs.worker(broker.bound_endpoint, "--app", "bench.bench_dispatch:answer",
                              concurrency=conc, service="www")
        joined = time.monotonic() + 20
        while not broker.has_free_slot("www") and time.monotonic() < joined:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # polling a real condition, bounded
        headers = Headers([("Host", "bench"), ("User-Agent", "bench"), ("Accept", "*/*")])
        for _ in range(2000):  # warm-up
            await broker.dispatch("www", Request("GET", "/", headers))
        done = 0
        end = time.monotonic() + LIMIT

        async def client() -> None:
            nonlocal done
            while done < n and time.monotonic() < end:
                done += 1
                await broker.dispatch("www", Request("GET", "/", headers))

        t0, here0, there0 = time.perf_counter(), time.process_time(), cpu_seconds(worker.pid)
        await asyncio.gather(*(client() for _ in range(conc)))
        rate = done / (time.perf_counter() - t0)
        here = (time.process_time() - here0) / max(1, done) * 1e6
        there = (cpu_seconds(worker.pid) - there0) / max(1, done) * 1e6
        return rate, here, there
    finally:
        procs.stop_all()
        await broker.close()


def through_http(seconds: float, conc: int, floor: bool = False,
                 cache: bool = False) -> tuple[float, float, float]:
    """(h): wrk → scale0 node → --app worker; (req/s, CPU µs per request of the node, of
    the worker). The node runs without a cache: this measures dispatch, not caching.
    With `floor`, the featureless node of bench.skeleton stands in for scale0's; with
    `cache`, the node has its memory cache, as shipped ((hc))."""
    from bench.procs import Procs
    from bench.tools import cpu_seconds, wait_http, wrk

    procs = Procs()
    try:
        node, http, workers = (procs.skeleton() if floor
                               else procs.node("--cache", "memory" if cache else "off"))
        worker = procs.worker(workers, "--app", "bench.bench_dispatch:answer", concurrency=conc)
        url = f"http://127.0.0.1:{http}/x"
        wait_http(url, success=True)
        wrk(url, seconds=1, connections=conc)
        n0, w0 = cpu_seconds(node.pid), cpu_seconds(worker.pid)
        r = wrk(url, seconds=seconds, connections=conc)
        per = 1e6 / max(1, r.requests)
        return r.rps, (cpu_seconds(node.pid) - n0) * per, (cpu_seconds(worker.pid) - w0) * per
    finally:
        procs.stop_all()


def _importable() -> None:
    """Worker processes load `bench.bench_dispatch:answer`: put the tree on their path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def main() -> None:
    _importable()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3,
                    help="(a) and (c) alternately this many times; medians are printed, since "
                    "one run moves by a third with a shared machine's load (default 3)")
    ap.add_argument("--no-http", action="store_true", help="skip (h), the wrk run")
    ap.add_argument("--origin", help="an HTTP origin URL for the upstream client comparison")
    args = ap.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    a_runs: list[float] = []
    c_runs: list[tuple[float, float, float]] = []
    for _ in range(max(1, args.rounds)):  # interleaved: a slow minute hits both alike
        a_runs.append(run(raw(args.requests, args.concurrency)))
        c_runs.append(run(cross_process(args.requests, args.concurrency)))
    a = statistics.median(a_runs)
    c, c_here, c_there = (statistics.median(x) for x in zip(*c_runs, strict=True))
    a2 = run(raw_asyncio(args.requests, args.concurrency))
    b = run(brokered(args.requests, args.concurrency))
    each = ", ".join(f"{r[0]:.0f}" for r in c_runs)
    print(f"(a)  raw zmq round trips, FD pump:    {a:9.0f} /s   (median of {len(a_runs)})")
    print(f"(a') raw zmq round trips, zmq.asyncio: {a2:9.0f} /s   a/a' = {a / a2:.2f}")
    print(f"(b)  broker → worker → reply:          {b:9.0f} /s   b/a = {b / a:.2f}")
    print(f"(c)  broker → worker process → reply:  {c:9.0f} /s   c/a = {c / a:.2f}"
          f"   (CPU µs per round trip: broker {c_here:.0f}, worker {c_there:.0f};"
          f" median of {each})")
    if not args.no_http:
        h, h_node, h_worker = through_http(5.0, args.concurrency)
        print(f"(h)  wrk → node → worker process:      {h:9.0f} req/s"
              f"   (CPU µs per request: node {h_node:.0f}, worker {h_worker:.0f})")
        f, f_node, f_worker = through_http(5.0, args.concurrency, floor=True)
        print(f"(f)  the same, featureless node:       {f:9.0f} req/s   h/f = {h / f:.2f}"
              f"   (CPU µs per request: node {f_node:.0f}, worker {f_worker:.0f};"
              " bench.skeleton, the design's floor)")
        hc, hc_node, _ = through_http(5.0, args.concurrency, cache=True)
        print(f"(hc) (h) with the node's cache on:    {hc:9.0f} req/s   hc/h = {hc / h:.2f}"
              f"   (CPU µs per request: node {hc_node:.0f}; the answer has no Cache-Control,"
              " as an app's by default: stored stale, coalesced, fetched again)")
    if args.origin:
        u, t = run(upstream_rates(args.origin, 3.0, args.concurrency))
        print(f"(u)  UpstreamClient (httptools):       {u:9.0f} GET/s")
        print(f"(t)  tornado simple_httpclient:        {t:9.0f} GET/s   u/t = {u / t:.2f}")


if __name__ == "__main__":
    main()
