"""The worker side of the protocol: connect to a node and serve its requests.

`Worker` is the Paranoid Pirate worker of the ZeroMQ guide with Scale0's
streaming: a DEALER that sends READY, heartbeats both ways, and, when the node
goes silent for `liveness` beats (or says DISCONNECT because it restarted and
does not know us), closes its socket and reconnects with backoff. Each REQUEST
runs the handler in its own task; CANCEL cancels that task. Deadlines share one
timer armed at the earliest one (node.worker.deadlines; an `asyncio.timeout` per
request was a timer created and cancelled per request, 9 % of a busy worker's time);
a handler still running at its deadline is cancelled and answered 504. Bodies larger than
one chunk stream in BODY frames governed by CREDIT in both directions, so a
1 GiB transfer keeps memory bounded on both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import zmq

from node.body import BodyChannel
from node.config import check_endpoint
from node.errors import ConfigError, Scale0Error
from node.http import BodyError, BodyStream, Headers, Request, Response
from node.protocol import (
    Abort,
    Batch,
    BodyMsg,
    Cancel,
    Cmd,
    Credit,
    Disconnect,
    HeaderList,
    Heartbeat,
    Message,
    ProtocolError,
    Ready,
    Reply,
    RequestMsg,
    decode,
    encode,
    encode_batch,
    encode_packed,
    salvage_id,
)
from node.ratelog import RateLimitedLog
from node.services import SERVICE_NAME_CHARS
from node.worker.deadlines import Deadline, DeadlineSweep
from node.zmqpump import Outbox, ZmqPump

log = logging.getLogger("scale0.worker")


_date: tuple[int, str] = (0, "")


def http_date_now() -> str:
    """The current time as an HTTP-date (IMF-fixdate), formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def _fields(resp: Response) -> HeaderList:
    """The fields of `resp` as a REPLY carries them, dated if the handler did not."""
    headers = tuple(resp.headers)
    if resp.headers.get("date") is None:  # RFC 9110 §6.6.1: the origin dates its answers
        headers += (("Date", http_date_now()),)
    return headers


def _refusal(rid: int, reason: str) -> Reply:
    """The 400 for a REQUEST this worker cannot read (Tornado's and gunicorn's answer to a
    request they cannot parse), instead of silence that left the client waiting for its
    whole deadline."""
    body = f"the worker could not read this request: {reason}\n".encode()
    return Reply(rid, 400, (("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Date", http_date_now())),
                 False, body)


Handler = Callable[[Request], Awaitable[Response]]
CHUNK: Final = 256 * 1024
WINDOW: Final = 8
# How long a stopping worker's last messages (its DISCONNECTs) may take to leave after
# the socket is closed; a node that is gone must not hold the process much longer.
_GOODBYE_LINGER_MS: Final = 500


class _Job:
    """One request in the handler's hands. A plain class: compiled (`make compiled`), a
    dataclass's generated __init__ would run as interpreted Python for every request."""

    __slots__ = ("credit", "deadline", "rid", "task", "upload", "wake")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.task: asyncio.Task[None] | None = None
        self.upload: BodyChannel | None = None  # the request body, when it streams
        self.credit = 0  # reply chunks the node lets us send
        self.wake: asyncio.Event | None = None  # made only when a streamed reply waits for credit
        self.deadline: Deadline | None = None  # the handler is cancelled (504) when it passes


# Said while no node has ever answered: the endpoint itself is the likely mistake (a
# node's HTTP, gossip or peer port, a wrong host), or, silent too, a CurveZMQ refusal.
NEVER_HEARD = (" (no Scale0 node has answered there yet: --node must be the node's workers "
               "socket, its --workers, default port 7950; with --curve, the node must list "
               "this worker's key in KEYDIR/authorized/)")


def check_ready(ready: Ready) -> None:
    """ValueError (one line) if a node would refuse `ready`: it drops a READY it cannot
    take as a malformed frame, and the worker only heard silence, re-registering for ever
    ("does not know us")."""
    for service in ready.services:
        if not service or not set(service) <= SERVICE_NAME_CHARS:
            raise ValueError(f"--service {service!r}: a service name is letters, digits, "
                             f"'_', '.' and '-'")
    try:
        decode(encode(ready))
    except ProtocolError as exc:
        raise ValueError(f"a node would refuse this worker: {exc}") from None


class Worker:
    """Serves `services` for the node at `node_endpoint` with `handler`."""

    def __init__(self, node_endpoint: str, services: Sequence[str], concurrency: int,
                 handler: Handler, *, name: str | None = None, heartbeat_interval: float = 1.0,
                 liveness: int = 3, chunk_size: int = CHUNK, window: int = WINDOW,
                 secure: Callable[[zmq.Socket[bytes], str], None] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not services:
            raise ValueError("a worker needs at least one service")
        try:  # a typo ("127.0.0.1:7950") is refused here, not as EINVAL at connect
            check_endpoint(node_endpoint, "node endpoint", bind=False, ipc=True)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self.endpoint = node_endpoint
        self.services = tuple(services)
        self.concurrency = concurrency
        self.handler = handler
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        check_ready(self._ready())
        self.interval = heartbeat_interval
        self.liveness = liveness
        self.chunk_size = chunk_size
        self.window = window
        self.secure = secure  # called before connect (e.g. node.curve.CurveKeys.secure)
        self.connects = 0  # how many times we (re)connected: visible to tests and logs
        self.held = 0  # messages held for the end of a loop turn (batched), as Broker.stats
        self._jobs: dict[int, _Job] = {}
        self._pump: ZmqPump | None = None
        self._outbox: Outbox | None = None  # set once the node said it accepts BATCH
        self._packing = False  # the node said it accepts PACKED too
        self._last_heard = 0.0
        self._answered = False  # a node has said something to us since we started
        self._stopping = False
        self._draining = False  # stop() said DISCONNECT: never register again
        self._reconnect = asyncio.Event()
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self._rlog = RateLimitedLog(log)
        self._deadlines = DeadlineSweep()  # the handlers' deadlines, one timer for all
        # The loop `_connect` ran in: asyncio.get_running_loop() is a getpid system call in
        # CPython 3.11, and every request would make one.
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public --------------------------------------------------------------
    async def run(self) -> None:
        """Serve until `stop()`; reconnects by itself when the node goes silent."""
        backoff = self.interval
        while not self._stopping:
            self._connect()
            self._reconnect.clear()
            heard_before = self._last_heard
            while not self._stopping and not self._reconnect.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._reconnect.wait()
                if self._stopping:
                    break
                self._send(Heartbeat())
                if time.monotonic() - self._last_heard > self.interval * self.liveness:
                    log.warning("node %s silent; reconnecting%s", self.endpoint,
                                "" if self._answered else NEVER_HEARD)
                    break
            if self._stopping:
                break
            self._drop_connection()
            # Back off only while the node stays silent; a node that answered resets it.
            backoff = self.interval if self._last_heard > heard_before else min(backoff * 2, 5.0)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # backoff, not a sync
        self._stopped.set()

    @property
    def in_flight(self) -> int:
        """Requests being served now."""
        return len(self._jobs)

    async def set_concurrency(self, n: int) -> None:
        """Offer a different number of slots (lower it when overloaded)."""
        if n < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = n
        self._send(self._ready())

    async def stop(self, grace: float = 10.0) -> None:
        """Say DISCONNECT, finish in-flight requests within `grace`, then close.

        Requests still running when the grace runs out are given up, and a second
        DISCONNECT says so: the node retries or fails them at once, instead of when our
        heartbeats stop counting (seconds later)."""
        self._draining = True
        self._send(Disconnect())
        if self._jobs:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        if self._jobs:
            self._send(Disconnect())
        self._stopping = True
        self._reconnect.set()
        self._drop_connection(linger_ms=_GOODBYE_LINGER_MS)

    def kill(self) -> None:
        """Close the socket abruptly, as a crash would (for fault tests)."""
        self._stopping = True
        self._reconnect.set()
        if self._outbox is not None:
            self._outbox.clear()  # a crash sends nothing more
            self._outbox = None
        if self._pump is not None:
            self._pump.close()
            self._pump = None
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()

    # -- connection ------------------------------------------------------------
    def _ready(self) -> Ready:
        return Ready(self.services, self.concurrency, self.name, os.getpid())

    def _connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10000)
        sock.setsockopt(zmq.RCVHWM, 10000)
        if self.secure is not None:
            self.secure(sock, self.endpoint)
        sock.connect(self.endpoint)
        self._pump = ZmqPump(sock, self._on_frames)
        self._last_heard = time.monotonic()
        self.connects += 1
        self._packing = False  # a new connection: whoever answers says again what it takes
        self._send(self._ready())
        self._pump.send(encode_batch([]))  # "we accept BATCH"; an old node ignores it
        self._pump.send(encode_packed([]))  # and PACKED (after BATCH: a node answers in order)

    def _drop_connection(self, linger_ms: int = 0) -> None:
        # Requests of a lost connection are the node's to retry; stop working on them.
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()
        if self._outbox is not None:
            self._outbox.flush()  # a DISCONNECT just queued by stop() must still leave
            self._outbox = None
        if self._pump is not None:
            self._pump.close(linger_ms)
            self._pump = None

    def _send(self, msg: Message) -> bool:
        outbox = self._outbox
        # Batched when other requests are in flight (their answers may come this same
        # loop turn); a lone answer goes at once (as the broker does, node/broker.py).
        if outbox is not None and (len(self._jobs) > 1 or outbox.holds(b"")):
            outbox.put(b"", encode(msg))  # leaves at the end of this loop turn
            self.held += 1
            return True
        return self._pump is not None and self._pump.send(encode(msg))

    def _on_batch(self, msg: Batch) -> None:
        if msg.parts:
            for part in msg.parts:
                self._on_frames(list(part))
        elif msg.packed:
            self._packing = self._outbox is not None  # a node announces BATCH first
        elif self._outbox is None and self._pump is not None:
            pump = self._pump
            # A failed send is a lost node: the heartbeat watch reconnects, as before.
            self._outbox = Outbox(pump.send, lambda _key, _tags: None,
                                  lambda _key: self._packing)

    # -- inbound ---------------------------------------------------------------
    def _on_frames(self, frames: list[bytes]) -> None:
        self._last_heard = time.monotonic()
        self._answered = True
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            rid = salvage_id(frames, (Cmd.REQUEST,))
            if rid is None or rid in self._jobs:
                self._rlog.warn("malformed", "dropped a malformed frame from the node: %s",
                                exc.reason)
            else:  # a request beyond our limits (a node of another version): say so at once
                self._rlog.warn("refused", "refused request %d from the node: %s", rid,
                                exc.reason)
                self._send(_refusal(rid, exc.reason))
            return
        if isinstance(msg, RequestMsg):
            self._on_request(msg)
        elif type(msg) is Batch:
            self._on_batch(msg)
        elif isinstance(msg, BodyMsg):
            job = self._jobs.get(msg.id)
            if job is not None and job.upload is not None:
                job.upload.put_nowait(msg.body)
                if not msg.more:
                    job.upload.finish()
        elif isinstance(msg, Credit):
            job = self._jobs.get(msg.id)
            if job is not None:
                job.credit += msg.chunks
                if job.wake is not None:
                    job.wake.set()
        elif isinstance(msg, Cancel):
            job = self._jobs.get(msg.id)
            if job is not None and job.task is not None:
                job.task.cancel()
        elif isinstance(msg, Disconnect):
            if self._draining:  # it let us go: registering again would take new work
                return
            log.info("node %s does not know us (restarted?); re-registering", self.endpoint)
            self._reconnect.set()

    def _on_request(self, msg: RequestMsg) -> None:
        job = _Job(msg.id)
        body: bytes | BodyStream = msg.body
        if msg.more:
            rid = msg.id
            job.upload = BodyChannel(self.window + 1,
                                     on_read=lambda _n: self._send_credit(rid, 1))
            job.upload.put_nowait(msg.body)
            body = job.upload
            self._send(Credit(rid, self.window))
        now = time.monotonic()
        req = Request(msg.method, msg.target, Headers(msg.headers), body, msg.scheme, msg.host,
                      msg.client, msg.request_id, now, now + msg.deadline)
        self._jobs[msg.id] = job  # (`stop` clears `_idle` itself before it waits)
        loop = self._loop
        if loop is None:  # not connected: cannot happen (requests come through the socket)
            loop = asyncio.get_running_loop()
        job.task = loop.create_task(self._serve(job, req))
        # Cleanup on the task too, not only in `_serve`: a CANCEL in the same batch as its
        # REQUEST cancels the task before it first runs, and then no line of `_serve` runs.
        job.task.add_done_callback(lambda _task: self._finished(job))
        if msg.deadline:
            job.deadline = self._deadlines.start(loop, job.task, loop.time() + msg.deadline)

    def _send_credit(self, rid: int, n: int) -> None:
        if rid in self._jobs:
            self._send(Credit(rid, n))

    async def _serve(self, job: _Job, req: Request) -> None:
        try:
            try:
                resp = await self.handler(req)
            except asyncio.CancelledError:
                if job.deadline is None or not job.deadline.expired:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # our own deadline, not the node's cancel: answer it
                resp = Response.error(504, "the handler did not finish before the deadline")
            except Scale0Error as exc:  # raised on purpose: its own status and reason
                resp = Response.error(exc.status, exc.reason,
                                      retry_after=getattr(exc, "retry_after", None))
            except Exception:
                log.exception("handler failed for %s %s", req.method, req.path)
                resp = Response.error(500, "the worker's handler failed")
            self._deadlines.end(job.deadline)  # answering: the deadline no longer applies
            job.deadline = None
            if not self._reply_at_once(job, resp, req.method == "HEAD"):
                await self._reply(job, resp)
        except asyncio.CancelledError:
            pass  # the node cancelled (client gone, deadline) or we lost the node
        finally:
            self._finished(job)  # at once: the job is gone when its answer is

    def _finished(self, job: _Job) -> None:
        """A job's task is done, however it ended (even cancelled before it ran).
        Called twice for most jobs (`_serve`'s finally, then the task's done callback):
        the second call finds nothing left to do."""
        self._deadlines.end(job.deadline)
        job.deadline = None
        if job.upload is not None:
            job.upload.cancel()
        if self._jobs.get(job.rid) is job:
            del self._jobs[job.rid]
        if not self._jobs:
            self._idle.set()

    def _reply_at_once(self, job: _Job, resp: Response, head: bool) -> bool:
        """Answer in one REPLY if the body allows (bytes of at most a chunk, or any answer
        to a HEAD), with no coroutine; False if `_reply` must send it in chunks.

        A HEAD's answer goes without its body, and says the length of a body its handler
        gave and did not measure (as Tornado and Werkzeug do): the node sends no body for
        a HEAD, and keeps a Content-Length only if the worker gives one. An empty body says
        nothing (the upstream client's, whose origin said what it did)."""
        headers = _fields(resp)
        body = resp.body
        if head:
            if not isinstance(body, bytes):
                body.cancel()  # never read: its producer stops
            elif (body and resp.status >= 200 and resp.status not in (204, 304)
                  and "content-length" not in resp.headers):
                headers += (("Content-Length", str(len(body))),)
            self._send(Reply(job.rid, resp.status, headers, False, b""))
            return True
        if isinstance(body, bytes) and len(body) <= self.chunk_size:
            self._send(Reply(job.rid, resp.status, headers, False, body))
            return True
        return False

    async def _reply(self, job: _Job, resp: Response) -> None:
        """An answer too large for one REPLY: its head, then BODY chunks as credit allows."""
        headers = _fields(resp)
        body = resp.body
        if isinstance(body, bytes):
            self._send(Reply(job.rid, resp.status, headers, True, body[: self.chunk_size]))
            view = memoryview(body)
            for pos in range(self.chunk_size, len(body), self.chunk_size):
                last = pos + self.chunk_size >= len(body)
                await self._send_chunk(job, bytes(view[pos : pos + self.chunk_size]), not last)
            return
        # A stream: headers go out at once, so the first byte is not held back.
        self._send(Reply(job.rid, resp.status, headers, True, b""))
        try:
            while chunk := await body.read():
                await self._send_chunk(job, chunk, True)
        except BodyError as exc:
            log.warning("response body for %s failed: %s", job.rid, exc)
            self._send(Abort(job.rid, str(exc)[:200]))  # the client must see it broken
            return
        except asyncio.CancelledError:
            body.cancel()
            raise
        await self._send_chunk(job, b"", False)

    async def _send_chunk(self, job: _Job, chunk: bytes, more: bool) -> None:
        while job.credit <= 0:
            if job.wake is None:
                job.wake = asyncio.Event()
            job.wake.clear()
            await job.wake.wait()
        job.credit -= 1
        self._send(BodyMsg(job.rid, more, chunk))
