"""The design's floor: a node and an HTTP-upstream worker with no features.

What the mission's miss path costs before any of our code does its work. The
node: the client's request parsed by llhttp on uvloop, sent as a REQUEST over the
same ZeroMQ hop (ROUTER, drained through its FD, batched per loop turn —
node.zmqpump), the REPLY written back with a Content-Length. The worker: a DEALER
that says READY, forwards each REQUEST to the origin over kept-alive connections
(llhttp parses the answer) and sends the REPLY. Nothing else: no service map,
cache, coalescing, replication, overflow, proxy headers, limits, deadlines, access
log or metrics, and no checks a public server needs (one request at a time per
connection, as wrk sends them). Either side talks to the real other side, so the
benchmarks (bench proxy, bench latency, bench dispatch) can say "node / floor" —
what our features cost — and "floor / nginx" — what the design itself allows on
this machine. A measuring stick, never a server.

    python -m bench.skeleton node --http PORT --workers tcp://127.0.0.1:PORT
    python -m bench.skeleton worker --node tcp://127.0.0.1:PORT --upstream PORT
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from http.client import responses

import httptools
import uvloop
import zmq

from bench.origin import LlhttpProtocol, nodelay
from node.protocol import (
    Batch,
    Cancel,
    Disconnect,
    Heartbeat,
    Ready,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
    encode_packed,
)
from node.zmqpump import Outbox, ZmqPump

_SKIP = {"connection", "content-length", "transfer-encoding", "keep-alive"}
_HEARTBEAT = 1.0  # seconds: the worker reconnects when its node stays silent for three


class _Skeleton:
    def __init__(self, workers: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(workers)
        self.pump = ZmqPump(self.sock, self._on_frames)
        self.outbox = Outbox(self.pump.send, lambda _key, _tags: None, lambda _key: self.packing)
        self.worker: bytes | None = None
        self.batching = self.packing = False
        self.ids = itertools.count(1)
        self.waiting: dict[int, _Conn] = {}
        asyncio.get_running_loop().call_later(_HEARTBEAT, self._beat)

    def _beat(self) -> None:
        if self.worker is not None:
            self.pump.send([self.worker, *encode(Heartbeat())])
        asyncio.get_running_loop().call_later(_HEARTBEAT, self._beat)

    def _on_frames(self, frames: list[bytes]) -> None:
        ident, msg = frames[0], decode(frames[1:])
        if type(msg) is Batch:
            for part in msg.parts:
                self._on_frames([ident, *part])
            if not msg.parts and ident == self.worker:  # the worker accepts BATCH (PACKED)
                if msg.packed:
                    self.packing = True
                else:
                    self.batching = True
            return
        if isinstance(msg, Ready):
            if self.worker != ident:
                self.worker = ident
                self.batching = self.packing = False
                self.pump.send([ident, *encode_batch([])])  # we accept BATCH
                self.pump.send([ident, *encode_packed([])])  # and PACKED
        elif isinstance(msg, Reply):
            conn = self.waiting.pop(msg.id, None)
            if conn is not None:
                conn.answer(msg)
        elif isinstance(msg, Disconnect) and ident == self.worker:
            self.worker = None

    def dispatch(self, conn: _Conn, method: str, target: str,
                 headers: tuple[tuple[str, str], ...]) -> None:
        if self.worker is None:
            conn.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return
        rid = next(self.ids)
        self.waiting[rid] = conn
        frames = encode(RequestMsg(rid, method, target, headers, 30.0))
        if self.batching and (len(self.waiting) > 1 or self.outbox.holds(self.worker)):
            self.outbox.put(self.worker, frames)
        else:
            self.pump.send([self.worker, *frames])


class _Conn(LlhttpProtocol):
    def __init__(self, skeleton: _Skeleton) -> None:
        super().__init__()
        self.skeleton = skeleton
        self.fields: list[tuple[str, str]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        target, fields = self.url.decode("latin-1"), tuple(self.fields)
        self.url, self.fields = b"", []
        self.skeleton.dispatch(self, method, target, fields)

    def answer(self, reply: Reply) -> None:
        head = [f"HTTP/1.1 {reply.status} {responses.get(reply.status, 'Unknown')}"]
        head += [f"{k}: {v}" for k, v in reply.headers if k.lower() not in _SKIP]
        head.append(f"Content-Length: {len(reply.body)}\r\n\r\n")
        self.write("\r\n".join(head).encode("latin-1") + reply.body)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _Worker:
    """A DEALER forwarding each REQUEST to the origin on a kept-alive connection."""

    def __init__(self, node: str, upstream: int, concurrency: int) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(node)
        self.pump = ZmqPump(self.sock, self._on_frames)
        self.packing = False
        self.outbox = Outbox(self.pump.send, lambda _key, _tags: None, lambda _key: self.packing)
        self.upstream = upstream
        self.idle: list[_Upstream] = []
        self.busy = 0
        self.pump.send(encode(Ready(("default",), concurrency, "skeleton", os.getpid())))
        self.pump.send(encode_batch([]))  # we accept BATCH
        self.pump.send(encode_packed([]))  # and PACKED
        asyncio.get_running_loop().call_later(_HEARTBEAT, self._beat)

    def _beat(self) -> None:
        self.pump.send(encode(Heartbeat()))
        asyncio.get_running_loop().call_later(_HEARTBEAT, self._beat)

    def _on_frames(self, frames: list[bytes]) -> None:
        msg = decode(frames)
        if type(msg) is Batch:
            for part in msg.parts:
                self._on_frames(list(part))
            self.packing = self.packing or (msg.packed and not msg.parts)
        elif isinstance(msg, RequestMsg):
            self.busy += 1
            asyncio.get_running_loop().create_task(self._forward(msg))
        elif not isinstance(msg, Heartbeat | Cancel):
            pass  # nothing else comes for GETs without a body

    async def _forward(self, msg: RequestMsg) -> None:
        conn = self.idle.pop() if self.idle else await _Upstream.open(self.upstream)
        head = [f"{msg.method} {msg.target} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in msg.headers if k.lower() not in _SKIP]
        status, fields, body = await conn.exchange(("\r\n".join(head) + "\r\n\r\n").encode())
        self.idle.append(conn)
        self.busy -= 1
        frames = encode(Reply(msg.id, status, tuple(fields), False, body))
        if self.busy > 0 or self.outbox.holds(b""):
            self.outbox.put(b"", frames)
        else:
            self.pump.send(frames)


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the origin; one exchange at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.fields: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.done: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] | None = None

    @classmethod
    async def open(cls, port: int) -> _Upstream:
        _, conn = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        nodelay(transport)

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, list[tuple[str, str]],
                                                               bytes]]:
        self.done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.done is not None:
            self.done.set_result((self.parser.get_status_code(), self.fields,
                                  b"".join(self.body)))
        self.fields, self.body = [], []


async def _until_stopped() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _node(http: int, workers: str) -> None:
    skeleton = _Skeleton(workers)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(skeleton), "127.0.0.1", http, backlog=1024)
    await _until_stopped()
    server.close()
    skeleton.pump.close()


async def _worker(node: str, upstream: int, concurrency: int) -> None:
    worker = _Worker(node, upstream, concurrency)
    await _until_stopped()
    worker.pump.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.skeleton", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True)
    node = sub.add_parser("node", help="the featureless node")
    node.add_argument("--http", type=int, required=True, help="port on 127.0.0.1")
    node.add_argument("--workers", required=True, help="ZeroMQ endpoint to bind for workers")
    worker = sub.add_parser("worker", help="the featureless HTTP-upstream worker")
    worker.add_argument("--node", required=True, help="the node's workers endpoint")
    worker.add_argument("--upstream", type=int, required=True, help="origin port on 127.0.0.1")
    worker.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    if args.role == "node":
        uvloop.run(_node(args.http, args.workers))
    else:
        uvloop.run(_worker(args.node, args.upstream, args.concurrency))


if __name__ == "__main__":
    main()
