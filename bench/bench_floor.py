"""The floor under the miss path's added latency: idle round trips between two processes.

At a moderate rate every hop of a request wakes a sleeping process. A miss adds
two hops to the origin's own: client ⇄ node (TCP) and node ⇄ worker (ZeroMQ,
whose I/O thread on each side adds two more wake-ups per round trip). This
measures both at idle (one message in flight, a pause between them), p50 of a
bounded count, in one run — what no amount of Python tuning can remove.

    python -m bench floor [--count 3000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable

import zmq

PAUSE = 0.0005  # between round trips: the receiver goes back to sleep, as at 1,000 req/s


def _timed(count: int, once: Callable[[], None]) -> float:
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        once()
        samples.append(time.perf_counter() - t)
        time.sleep(PAUSE)  # the load's schedule (idle between requests), not a sync
    return statistics.median(samples) * 1e6


def tcp_round_trip(count: int) -> float:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # the echo side
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(4096):
            conn.sendall(data)
        os._exit(0)
    sock, _ = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        def once() -> None:
            sock.sendall(b"x" * 64)
            sock.recv(4096)

        return _timed(count, once)
    finally:
        sock.close()
        listener.close()
        os.waitpid(pid, 0)


def zmq_round_trip(count: int) -> float:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    pid = os.fork()
    if pid == 0:  # the echo side, a DEALER like a worker
        dealer = zmq.Context().socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"ready")
        while (msg := dealer.recv_multipart()) != [b"bye"]:
            dealer.send_multipart(msg)
        os._exit(0)
    ident, _ = router.recv_multipart()
    try:
        def once() -> None:
            router.send_multipart([ident, b"x" * 64])
            router.recv_multipart()

        return _timed(count, once)
    finally:
        router.send_multipart([ident, b"bye"])
        os.waitpid(pid, 0)
        router.close(linger=0)
        ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000)
    count = ap.parse_args().count
    tcp, zq = tcp_round_trip(count), zmq_round_trip(count)
    print(f"idle round trip between two processes, p50 of {count}:")
    print(f"  TCP (client ⇄ node):       {tcp:6.0f} µs")
    print(f"  ZeroMQ (node ⇄ worker):    {zq:6.0f} µs   ({zq / tcp:.1f} x TCP: each side's "
          "I/O thread is one more wake-up)")
    print(f"  floor a miss adds, before any Python: ≈ {tcp + zq:.0f} µs")


if __name__ == "__main__":
    main()
