"""Cache hits: one Scale0 node process vs nginx proxy_cache, same origin, same objects.

In one run, for 1 KiB and 64 KiB objects (wrk -t1 -c50 after a warm-up that
fills both caches): nginx proxy_cache HIT; `scale0 node --cache memory` as
shipped; and a node wired with prepared hits (node.hitcache on the fast wire,
built here the way node.server wires it). Prints req/s, p50/p99, server CPU µs
per request and the ratios node / nginx. Then a Zipf workload (bounded count
and time, a small Python load generator) against the prepared-hit node and
nginx: hit ratio and requests that reached the origin. Last, cold fills: every GET a
URL of its own (a wrk script), so each is a miss whose 1 KiB answer is stored, through
nginx proxy_cache (its cache on a tmpfs, as the node's is in memory) and the node; CPU
counts nginx's workers, and the node with its HTTP-upstream worker.

    python -m bench.bench_cache [--seconds 5] [--rounds 1] [--zipf 20000]
    python -m bench.bench_cache --serve PORT --workers ENDPOINT   (the node, internal)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.procs import Procs, free_port
from bench.tools import (
    HEADER,
    KEEPALIVE_PROXYING,
    Nginx,
    WrkResult,
    cpu_seconds,
    have,
    origin_upstream,
    wait_http,
    wrk,
)

SIZES = (1024, 64 * 1024)
FILLS = Path(__file__).with_name("new_url_each.lua")  # a URL of its own for every GET
LIMIT = 60.0  # seconds: no Zipf run goes past this


def serve(port: int, workers: str) -> None:
    """A node: fast wire + Front + Pipeline(CacheStage on memory) + Broker, hits prepared."""
    from cache.memory import MemoryStore
    from node.broker import Broker, BrokerConfig
    from node.cachestage import CacheStage
    from node.fastwire import FastHTTPServer, new_event_loop
    from node.front import Front
    from node.pipeline import Pipeline
    from node.services import ServiceMap

    async def main() -> None:
        broker = Broker(BrokerConfig(endpoint=workers), "bench")
        await broker.start()
        stage = CacheStage(MemoryStore(), node_id="bench")
        pipeline = Pipeline([], ServiceMap.from_specs([]), [stage], broker, "bench")
        front = Front(pipeline.handle)
        front.shortcut = stage.hits
        await FastHTTPServer(front).listen("127.0.0.1", port)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def wait_ok(url: str, timeout: float = 20.0) -> None:
    """Poll until `url` answers 200 (a node answers 503 until its worker is in)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def _filling_nginx(oport: int) -> tuple[Nginx, int, Path]:
    """nginx proxy_cache with its cache in memory (tmpfs, where there is one): the cold
    fills' reference. On this machine's shared disk the same nginx moved from 13,000 to
    1,700 fills a second between two runs; a tmpfs keeps the node's memory store and
    nginx's cache alike."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="scale0-bench-fills-",
                                 dir=shm if shm.is_dir() else None))
    root.chmod(0o777)  # nginx run as root hands the cache to an unprivileged worker
    port = free_port()
    nginx = Nginx(f"""{origin_upstream(oport)}
      proxy_cache_path {root} levels=1:2 keys_zone=fills:64m max_size=2g;
      server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://origin; proxy_cache fills; {KEEPALIVE_PROXYING} }} }}""")
    nginx.dir.chmod(0o755)  # and its temp files under its own directory
    nginx.start()
    wait_http(f"http://127.0.0.1:{port}/_count")
    return nginx, port, root  # the caller removes `root` once nginx has stopped


def measure(url: str, pids: list[int], seconds: float) -> tuple[WrkResult, float]:
    wrk(url, seconds=1)  # warm: fills the cache, prepares the hit
    before = _cpu(pids)
    result = wrk(url, seconds=seconds)
    after = _cpu(pids)  # nginx's cache loader exits after a minute: count who is left
    used = sum(after[p] - before[p] for p in after if p in before)
    return result, used / max(1, result.requests) * 1e6


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except OSError:
            pass
    return out


async def zipf_load(port: int, paths: list[str], conns: int = 16) -> tuple[int, int]:
    """GET every path in order over `conns` keep-alive connections: (answers, X-Cache HITs)."""
    feed = iter(paths)
    answered = hits = 0
    deadline = time.monotonic() + LIMIT

    async def client() -> None:
        nonlocal answered, hits
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in feed:
            if time.monotonic() > deadline:
                break
            request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # nginx closes after keepalive_requests
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            length, closing = 0, False
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"x-cache" and value.strip().upper() == b"HIT":
                    hits += 1
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    closing = True
            await reader.readexactly(length)
            answered += 1
            if closing:  # the server ends this connection: the next request goes on a new one
                writer.close()  # (writing first raced the server's FIN: a reset, seen once)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    await asyncio.gather(*(client() for _ in range(conns)))
    return answered, hits


def zipf_paths(n: int, keys: int, s: float, seed: int = 9) -> list[str]:
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (k ** s) for k in range(1, keys + 1)))
    return [f"/bytes/1024?k={k}" for k in rng.choices(range(keys), cum_weights=weights, k=n)]


def origin_count(oport: int) -> int:
    return int(urllib.request.urlopen(f"http://127.0.0.1:{oport}/_count", timeout=5).read())


def run(seconds: float, zipf_n: int, rounds: int = 1) -> None:
    if not have("wrk"):
        raise SystemExit("bench_cache needs wrk (apt-get install wrk)")
    procs = Procs()
    nginx: Nginx | None = None
    rates: dict[tuple[str, int], float] = {}
    fill_root: Path | None = None  # the filling nginx's cache (a tmpfs directory)
    try:
        _, oport = procs.origin()
        targets: list[tuple[str, int, list[int]]] = []
        if have("nginx"):
            nport = free_port()
            nginx = Nginx(f"""{origin_upstream(oport)} server {{ listen 127.0.0.1:{nport};
              location / {{ proxy_pass http://origin; proxy_cache z; {KEEPALIVE_PROXYING}
                            add_header X-Cache $upstream_cache_status; }} }}""", cache=True)
            # nginx run as root hands the cache to an unprivileged worker: let it in
            nginx.dir.chmod(0o755)
            (nginx.dir / "cache").mkdir(mode=0o777)
            (nginx.dir / "cache").chmod(0o777)
            nginx.start()
            wait_http(f"http://127.0.0.1:{nport}/_count")
            targets.append(("nginx proxy_cache HIT", nport, nginx.worker_pids()))
        node, http, workers = procs.node("--cache", "memory")
        node_worker = procs.worker(workers, "--upstream", f"http://127.0.0.1:{oport}")
        targets.append(("scale0 node (as shipped)", http, [node.pid]))
        fport, fworkers = free_port(), f"tcp://127.0.0.1:{free_port()}"
        fast = procs.start([sys.executable, "-m", "bench.bench_cache", "--serve", str(fport),
                            "--workers", fworkers])
        procs.worker(fworkers, "--upstream", f"http://127.0.0.1:{oport}")
        targets.append(("scale0 prepared hits", fport, [fast.pid]))
        print(HEADER)
        for round_ in range(rounds):  # interleaved rounds; the best of each is kept
            for size in SIZES:
                for name, port, pids in targets:
                    url = f"http://127.0.0.1:{port}/bytes/{size}"
                    wait_ok(url)
                    result, cpu = measure(url, pids, seconds)
                    print(result.row(f"{name}, {size // 1024} KiB", cpu), flush=True)
                    rates[(name, size)] = max(rates.get((name, size), 0.0), result.rps)
            if round_ < rounds - 1:
                print()
        print(f"\nbest of {rounds} round(s):")
        print()
        ref = "nginx proxy_cache HIT"
        for size in SIZES:
            for name, _, _ in targets[1:] if nginx is not None else ():
                print(f"{name} / nginx, {size // 1024} KiB: "
                      f"{rates[(name, size)] / rates[(ref, size)]:.2f}")
        if zipf_n:
            print(f"\nZipf s=1.0 over 2000 URLs of 1 KiB, {zipf_n} GETs, 16 connections")
            paths = zipf_paths(zipf_n, 2000, 1.0)
            for name, port, _ in targets[::2] if nginx is not None else targets[1:]:
                before = origin_count(oport)
                t0 = time.perf_counter()
                answered, hits = asyncio.run(zipf_load(port, paths))
                dt = time.perf_counter() - t0
                fetched = origin_count(oport) - before - 1
                print(f"{name:<28} answered {answered:6d} in {dt:5.2f}s  "
                      f"hit ratio {hits / max(1, answered):.3f}  origin requests {fetched}")
        print("\ncold fills: every GET a URL of its own, a miss that is stored (1 KiB)")
        print(HEADER)
        fills: dict[str, float] = {}
        fillers = [("scale0 node", http, [node.pid, node_worker.pid])]  # with its worker
        if nginx is not None:
            nginx.stop()  # the hits' nginx has done its part; another one fills
            nginx, filling_port, fill_root = _filling_nginx(oport)
            fillers.insert(0, ("nginx proxy_cache", filling_port, nginx.worker_pids()))
        for label, port, pids in fillers:
            before = _cpu(pids)
            result = wrk(f"http://127.0.0.1:{port}/bytes/1024", seconds=seconds, script=FILLS,
                         script_args=[f"{port}-{time.monotonic_ns()}"])
            after = _cpu(pids)
            used = sum(after[p] - before[p] for p in after if p in before)
            print(result.row(f"{label}, cold fills", used / max(1, result.requests) * 1e6))
            fills[label] = result.rps
        if len(fills) == 2 and fills['nginx proxy_cache'] > 0:
            print(f"\nscale0 node / nginx proxy_cache, cold fills: "
                  f"{fills['scale0 node'] / fills['nginx proxy_cache']:.2f}")
    except subprocess.CalledProcessError as exc:
        print(f"wrk failed: {exc}")
    finally:
        if nginx is not None:
            nginx.stop()
        if fill_root is not None:
            shutil.rmtree(fill_root, ignore_errors=True)
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds; ratios use each target's best")
    parser.add_argument("--zipf", type=int, default=20000, help="GETs in the Zipf run (0: none)")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return
    run(args.seconds, min(args.zipf, 200_000), max(1, min(args.rounds, 10)))


if __name__ == "__main__":
    main()
