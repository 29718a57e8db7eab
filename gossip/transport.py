"""The gossip layer's ZeroMQ sockets: PUB/SUB for beats and news, ROUTER/DEALER for requests.

One `Transport` owns four kinds of socket, all plain (blocking-API) pyzmq sockets
driven by the asyncio loop through their file descriptors: on each wake a socket
is drained with non-blocking receives, up to a batch, instead of one future per
message (three times the throughput of `zmq.asyncio` here; see DESIGN "Speed").

- PUB, bound to the gossip endpoint: `publish(topic, *frames)`. Frames on the
  wire: `[topic, *frames]`; the agent uses topic `b"g"` and one codec frame.
- SUB, connected to every publisher the membership core asks for
  (`follow`/`unfollow`); a message goes to the handler of its topic (`on_topic`).
- ROUTER, bound to the peer endpoint, answering requests by kind through the
  handlers given to `register_handler` (snapshot, resend, and later forwarded
  HTTP requests and cache fetches).
- one DEALER per peer endpoint we ask something of: `await request(...)`.

Peer frames (version 1; kinds and meta keys are only ever added):
    request  DEALER → ROUTER   [version, kind, id, meta, *body]
    reply    ROUTER → DEALER   [version, b"ok" | b"err", id, meta, *body]
The ROUTER sees the sender's identity frame in front (the envelope) and puts it
back on the reply. `id` is 8 bytes chosen by the asker; `meta` is a msgpack map
with string keys, decoded with limits; body frames are passed through untouched
so large bodies are never copied into msgpack. An `err` reply's meta carries
`reason`.

Stopping answers every request it took (`stop_serving`, then `close` with a linger):
one not started yet, or arriving from then on, is refused as `STOPPING` (its reason
says "busy": it did not run, so the asker may take it elsewhere, whatever it was); one
being served is cancelled and answered `INTERRUPTED` (it may have had effects). Without
this a node that left swallowed them, and its peers waited for their deadlines.

Every inbound frame is untrusted: malformed input is dropped, counted by reason
in `stats.dropped`, and logged at most once per reason per `LOG_EVERY` seconds;
nothing raised by a peer's bytes or a handler escapes the drain loop. Sockets
use LINGER 0, MAXMSGSIZE and ZMTP heartbeats so a dead TCP peer is noticed.
Not thread-safe: one Transport, one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq

log = logging.getLogger("scale0.gossip.transport")

VERSION = b"\x01"
OK, ERR = b"ok", b"err"
LOG_EVERY = 10.0  # seconds between two log lines for the same kind of drop
_ID_LEN = 8
STOPPING = "busy: this node is shutting down"  # not started: safe to ask someone else
INTERRUPTED = "this node shut down while serving the request"  # it may have had effects


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Where the sockets bind and how defensive they are. Ports may be `*` (ephemeral)."""

    gossip: str = "tcp://*:7946"
    peer: str = "tcp://*:7947"
    max_msg_size: int = 64 * 1024 * 1024  # larger inbound messages cost the sender its link
    max_meta_size: int = 256 * 1024
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    hwm: int = 10_000
    request_timeout: float = 2.0
    max_serving: int = 512  # peer requests handled at once; more are refused as busy
    batch: int = 256  # messages drained per wake before yielding to the loop
    # Socket hook (e.g. CurveZMQ): called before bind with endpoint "", before each
    # connect with the endpoint; it may raise to refuse dialling that endpoint.
    secure: Callable[[zmq.Socket[bytes], str], None] | None = None


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """A request received on the peer socket."""

    kind: str
    meta: dict[str, Any]
    body: tuple[bytes, ...] = ()
    sender: bytes = b""  # the asker's ROUTER identity: opaque, for logs and limits


@dataclass(frozen=True, slots=True)
class PeerReply:
    """What a handler answers, and what `request` returns."""

    meta: dict[str, Any] = field(default_factory=dict)
    body: tuple[bytes, ...] = ()


Handler = Callable[[PeerRequest], Awaitable[PeerReply]]
TopicHandler = Callable[[list[bytes]], None]


class PeerError(Exception):
    """A request to a peer did not get a good answer."""


class PeerTimeout(PeerError):
    """No reply before the timeout: the peer is slow, gone, or unreachable."""


class PeerRefused(PeerError):
    """The peer answered with an error: it could not or would not serve the request."""


class PeerProtocolError(PeerError):
    """The peer's reply broke the frame protocol (its fault, or a version mismatch)."""


class Refuse(Exception):
    """Raise in a handler to answer `err` with this reason (no stack trace logged)."""


@dataclass
class TransportStats:
    """Counters for metrics: messages in/out by kind or topic, drops by reason."""

    inbound: Counter[str] = field(default_factory=Counter)
    outbound: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


class DropLog:
    """Counts drops and logs each reason at most once per `every` seconds."""

    def __init__(self, stats: TransportStats, clock: Callable[[], float] = time.monotonic,
                 every: float = LOG_EVERY) -> None:
        self._stats, self._clock, self._every = stats, clock, every
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def drop(self, reason: str, detail: str = "") -> None:
        self._stats.dropped[reason] += 1
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._every:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        log.warning("dropped gossip input (%s)%s%s", reason, f": {detail}" if detail else "",
                    f" (+{more} more since last report)" if more else "")


_PACKER = msgpack.Packer(use_bin_type=True)  # one for the loop: packb makes one a call


def pack_meta(meta: dict[str, Any]) -> bytes:
    return _PACKER.pack(meta)  # type: ignore[no-any-return]


# pyzmq's Python `send_multipart`/`recv_multipart` convert flags and options through enums
# on every frame; the Cython methods underneath take plain ints (as node.zmqpump does).
_base_send: Any = zmq.backend.Socket.send
_base_recv: Any = zmq.backend.Socket.recv
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_LAST = int(zmq.NOBLOCK)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """`sock.send_multipart(frames, zmq.NOBLOCK)` without its per-frame Python work;
    zmq.ZMQError (Again: the peer's queue is full) as it would raise."""
    for frame in frames[:-1]:
        _base_send(sock, frame, _MORE, len(frame) < 65536)
    _base_send(sock, frames[-1], _LAST, len(frames[-1]) < 65536)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """`sock.recv_multipart(zmq.NOBLOCK)`, likewise; zmq.Again when nothing waits."""
    frame = _base_recv(sock, _LAST, False)
    frames = [frame.bytes]
    while frame.more:
        frame = _base_recv(sock, _LAST, False)
        frames.append(frame.bytes)
    return frames


def unpack_meta(data: bytes, limit: int) -> dict[str, Any]:
    """Decode a meta frame; raise ValueError on anything but a small str-keyed map."""
    if len(data) > limit:
        raise ValueError(f"meta of {len(data)} bytes exceeds {limit}")
    try:
        meta = msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_str_len=limit, max_bin_len=limit, max_array_len=4096,
                               max_map_len=1024, max_ext_len=0)
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise ValueError(f"undecodable meta: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"meta is a {type(meta).__name__}, not a map")
    return meta


def _expire(future: asyncio.Future[PeerReply]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Drain:
    """Feeds every message of a plain zmq socket to `on_frames`, woken by the socket's fd.

    The fd is edge-triggered: it only signals a change, so each wake reads until
    EAGAIN, and any send on the socket schedules a wake (`poke`) because a send
    can consume the edge that announced pending input."""

    def __init__(self, sock: zmq.Socket[bytes], on_frames: Callable[[list[bytes]], None],
                 batch: int) -> None:
        self._sock, self._on_frames, self._batch = sock, on_frames, batch
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._scheduled = False
        self._loop.add_reader(self._fd, self._wake)
        self.poke()

    def poke(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._scheduled = False
        for _ in range(self._batch):
            try:
                frames = recv_frames(self._sock)
            except zmq.Again:
                return
            except zmq.ZMQError:  # closed under us
                return
            self._on_frames(frames)
        self.poke()  # more may be waiting: let other callbacks run first

    def read_now(self, limit: int) -> None:
        """Read what is queued now, up to `limit` messages, without waiting for a wake."""
        for _ in range(limit):
            try:
                frames = recv_frames(self._sock)
            except zmq.ZMQError:  # Again (nothing more), or closed under us
                return
            self._on_frames(frames)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


class _PeerLink:
    """One DEALER to one peer endpoint, with the requests waiting on it."""

    def __init__(self, sock: zmq.Socket[bytes], drain: _Drain) -> None:
        self.sock, self.drain = sock, drain
        self.pending: dict[bytes, asyncio.Future[PeerReply]] = {}
        self.last_heard = 0.0


class Transport:
    """The sockets of one node's gossip layer. Call `start()` inside a running loop."""

    def __init__(self, config: TransportConfig | None = None, ctx: zmq.Context[Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or TransportConfig()
        self._ctx = ctx or zmq.Context.instance()
        self._clock = clock
        self.stats = TransportStats()
        self.drops = DropLog(self.stats, clock)
        self._handlers: dict[bytes, Handler] = {}
        self._topics: dict[bytes, TopicHandler] = {}
        self._following: set[str] = set()
        self._pub_names: dict[bytes, str] = {}  # topic -> its outbound stats name (publish)
        self._links: dict[str, _PeerLink] = {}
        self._ids = itertools.count(1)
        self._serving: dict[asyncio.Task[None], tuple[bytes, bytes]] = {}  # -> envelope, id
        self._refusing = False  # stop_serving() was called
        self._drains: list[_Drain] = []
        self._closed = False
        self.gossip_endpoint = ""  # the real bound endpoints, known after start()
        self.peer_endpoint = ""

    # -- lifecycle ---------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        c = self.config
        sock: zmq.Socket[bytes] = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, c.max_msg_size)
        sock.setsockopt(zmq.HEARTBEAT_IVL, c.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, c.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, c.heartbeat_timeout_ms)
        sock.setsockopt(zmq.RECONNECT_IVL, c.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, c.reconnect_ivl_max_ms)
        sock.setsockopt(zmq.SNDHWM, c.hwm)
        # Inbound per connection is kept small: a flooding peer is held back in its
        # own TCP buffers rather than in our memory (beats are tiny and frequent).
        sock.setsockopt(zmq.RCVHWM, min(c.hwm, 1000))
        return sock

    def start(self) -> None:
        """Bind PUB and ROUTER (raises zmq.ZMQError naming the endpoint if taken)."""
        self._pub = self._socket(zmq.PUB)
        self._sub = self._socket(zmq.SUB)
        self._router = self._socket(zmq.ROUTER)
        for sock, endpoint in ((self._pub, self.config.gossip), (self._router, self.config.peer)):
            try:
                if self.config.secure is not None:
                    self.config.secure(sock, "")
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.close()
                raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc}") from None
        self.gossip_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peer_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        for topic in self._topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        batch = self.config.batch
        self._sub_drain = _Drain(self._sub, self._on_sub, batch)
        self._router_drain = _Drain(self._router, self._on_request, batch)
        self._drains += [self._sub_drain, self._router_drain]

    @property
    def closed(self) -> bool:
        return self._closed

    def stop_serving(self) -> None:
        """Answer every peer request taken and refuse the rest (a node about to leave):
        queued ones and any that arrive from now on get `STOPPING`; those being served
        are cancelled and get `INTERRUPTED`. Call it before saying LEAVE, so the answers
        go out while the LEAVE's round trip lasts."""
        if self._refusing or self._closed or not hasattr(self, "_router_drain"):
            return
        self._refusing = True
        self._router_drain.read_now(self._read_limit())
        for task, (envelope, rid) in list(self._serving.items()):
            if not task.done():
                self._reply(envelope, rid, ERR, {"reason": INTERRUPTED}, ())
                task.cancel()
        self._serving.clear()

    def _read_limit(self) -> int:
        return self.config.batch * 16  # a bound for a flood, far above a burst

    def close(self, linger_ms: int = 0) -> None:
        """Close every socket. Queued output is discarded, except PUB's and, once
        `stop_serving` was called, the peer ROUTER's (its answers), for `linger_ms`."""
        if self._closed:
            return
        if self._refusing and hasattr(self, "_router_drain"):
            self._router_drain.read_now(self._read_limit())  # the last arrivals: refused too
        self._closed = True
        for drain in self._drains:
            drain.close()
        for task in list(self._serving):
            task.cancel()
        for link in self._links.values():
            self._fail(link, PeerError("transport closed"))
            link.drain.close()
            link.sock.close()
        self._links.clear()
        for name in ("_pub", "_sub", "_router"):
            sock = getattr(self, name, None)
            if sock is not None:
                keep = name == "_pub" or (name == "_router" and self._refusing)
                sock.close(linger_ms if keep else 0)

    # -- PUB/SUB -----------------------------------------------------------------
    def publish(self, topic: bytes, *frames: bytes) -> None:
        """Send to every subscriber; never blocks (PUB drops at its high-water mark)."""
        send_frames(self._pub, [topic, *frames])  # PUB never raises Again: it drops
        name = self._pub_names.get(topic)
        if name is None:  # our own few topics; bounded all the same
            if len(self._pub_names) >= 64:
                self._pub_names.clear()
            name = self._pub_names[topic] = f"pub:{topic.decode(errors='replace')}"
        self.stats.outbound[name] += 1

    def on_topic(self, topic: bytes, handler: TopicHandler) -> None:
        """Deliver messages whose first frame is `topic` to `handler(frames after it)`."""
        self._topics[topic] = handler
        if hasattr(self, "_sub"):
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)

    def follow(self, endpoint: str) -> None:
        if endpoint not in self._following:
            if self.config.secure is not None:
                try:
                    self.config.secure(self._sub, endpoint)
                except Exception as exc:  # no key for it: never dial an unverifiable server
                    self.drops.drop("sub:insecure", f"{endpoint}: {exc}")
                    return
            try:
                self._sub.connect(endpoint)
            except zmq.ZMQError as unparsable:  # an advertised endpoint ZeroMQ cannot parse
                self.drops.drop("sub:bad-endpoint", f"{endpoint[:64]!r}: {unparsable}")
                return
            self._following.add(endpoint)

    def unfollow(self, endpoint: str) -> None:
        if endpoint in self._following:
            self._following.discard(endpoint)
            try:
                self._sub.disconnect(endpoint)
            except zmq.ZMQError:  # already gone: nothing to undo
                pass

    @property
    def following(self) -> frozenset[str]:
        return frozenset(self._following)

    def _on_sub(self, frames: list[bytes]) -> None:
        handler = self._topics.get(frames[0]) if frames else None
        if handler is None:
            self.drops.drop("sub:unknown-topic", repr(frames[0][:16]) if frames else "empty")
            return
        self.stats.inbound[f"sub:{frames[0].decode(errors='replace')}"] += 1
        try:
            handler(frames[1:])
        except Exception as exc:  # a bug in a handler must not stop the drain
            self.drops.drop("sub:handler-error", repr(exc))

    # -- peer ROUTER (serving) -----------------------------------------------------
    def register_handler(self, kind: str, handler: Handler) -> None:
        """Answer peer requests of `kind` with `await handler(request)`.

        The handler may raise `Refuse(reason)` to answer `err`; any other
        exception also answers `err` and is logged (rate-limited)."""
        self._handlers[kind.encode()] = handler

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) < 5:
            self.drops.drop("peer:short", f"{len(frames)} frames")
            return
        envelope, version, kind, rid, raw_meta, *body = frames
        if version != VERSION or len(rid) != _ID_LEN:
            self.drops.drop("peer:version", repr(version[:8]))
            return
        handler = self._handlers.get(kind)
        if self._refusing:
            self.stats.inbound["req:refused-stopping"] += 1
            self._reply(envelope, rid, ERR, {"reason": STOPPING}, ())
            return
        if handler is None:
            self.drops.drop("peer:unknown-kind", repr(kind[:32]))
            self._reply(envelope, rid, ERR, {"reason": f"unknown request kind {kind[:32]!r}"}, ())
            return
        try:
            meta = unpack_meta(raw_meta, self.config.max_meta_size)
        except ValueError as exc:
            self.drops.drop("peer:meta", str(exc))
            self._reply(envelope, rid, ERR, {"reason": f"bad meta: {exc}"}, ())
            return
        if len(self._serving) >= self.config.max_serving:
            self.drops.drop("peer:busy")
            self._reply(envelope, rid, ERR, {"reason": "busy"}, ())
            return
        name = kind.decode(errors="replace")
        self.stats.inbound[f"req:{name}"] += 1
        request = PeerRequest(name, meta, tuple(body), envelope)
        task = asyncio.get_running_loop().create_task(self._serve(handler, request, envelope, rid))
        self._serving[task] = (envelope, rid)
        task.add_done_callback(self._served)

    @property
    def serving(self) -> int:
        """Peer requests being answered now (requests forwarded to us, cache fetches)."""
        return len(self._serving)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._serving.pop(task, None)

    async def _serve(self, handler: Handler, request: PeerRequest, envelope: bytes,
                     rid: bytes) -> None:
        try:
            reply = await handler(request)
        except Refuse as refused:  # one name a clause: compiled, a name has one type
            self._reply(envelope, rid, ERR, {"reason": str(refused)}, ())
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.drops.drop(f"peer:handler-error:{request.kind}", repr(exc))
            self._reply(envelope, rid, ERR, {"reason": f"{request.kind} failed on the peer"}, ())
            return
        self._reply(envelope, rid, OK, reply.meta, reply.body)

    def _reply(self, envelope: bytes, rid: bytes, status: bytes, meta: dict[str, Any],
               body: tuple[bytes, ...]) -> None:
        if self._closed:
            return
        try:
            send_frames(self._router, [envelope, VERSION, status, rid, pack_meta(meta), *body])
            self.stats.outbound[f"reply:{status.decode()}"] += 1
        except zmq.ZMQError as exc:  # asker gone or its queue full: it will time out
            self.drops.drop("peer:reply-unsent", str(exc))
        self._router_drain.poke()

    # -- peer DEALERs (asking) -----------------------------------------------------
    async def request(self, endpoint: str, kind: str, meta: dict[str, Any] | None = None,
                      body: tuple[bytes, ...] = (),
                      timeout: float | None = None) -> PeerReply:  # noqa: ASYNC109
        """Ask the peer at `endpoint`; raise PeerTimeout, PeerRefused or PeerProtocolError."""
        if self._closed:
            raise PeerError("transport closed")
        link = self._links.get(endpoint) or self._connect(endpoint)
        rid = next(self._ids).to_bytes(_ID_LEN, "big")
        future: asyncio.Future[PeerReply] = asyncio.get_running_loop().create_future()
        link.pending[rid] = future
        try:
            send_frames(link.sock, [VERSION, kind.encode(), rid, pack_meta(meta or {}), *body])
        except zmq.ZMQError as exc:
            link.pending.pop(rid, None)
            raise PeerError(f"cannot send to {endpoint}: {exc}") from None
        link.drain.poke()
        self.stats.outbound[f"req:{kind}"] += 1
        limit = self.config.request_timeout if timeout is None else timeout
        started = self._clock()
        # A timer, not asyncio.wait_for (interpreted, and a task of its own in 3.11): the
        # future fails with TimeoutError at the limit, unless the reply came first.
        timer = asyncio.get_running_loop().call_later(limit, _expire, future)
        try:
            return await future
        except TimeoutError:
            self._timed_out(endpoint, link, started)
            raise PeerTimeout(f"{kind} to {endpoint}: no reply within {limit:.3g}s") from None
        finally:
            timer.cancel()
            link.pending.pop(rid, None)

    def _connect(self, endpoint: str) -> _PeerLink:
        sock = self._socket(zmq.DEALER)
        try:
            if self.config.secure is not None:
                self.config.secure(sock, endpoint)
            sock.connect(endpoint)
        except Exception as exc:  # a bad endpoint, or no key to verify it with
            sock.close()
            raise PeerError(f"bad peer endpoint {endpoint!r}: {exc}") from None
        holder: list[_PeerLink] = []
        drain = _Drain(sock, lambda frames: self._on_reply(holder[0], frames), self.config.batch)
        link = _PeerLink(sock, drain)
        holder.append(link)
        self._links[endpoint] = link
        return link

    def _timed_out(self, endpoint: str, link: _PeerLink, started: float) -> None:
        # Nothing heard from that peer since we asked: drop the socket so requests
        # queued for a dead peer are discarded, not delivered stale when it returns.
        if link.last_heard < started and self._links.get(endpoint) is link:
            del self._links[endpoint]
            self._fail(link, PeerTimeout(f"{endpoint} stopped answering"))
            link.drain.close()
            link.sock.close()

    @staticmethod
    def _fail(link: _PeerLink, exc: PeerError) -> None:
        for future in link.pending.values():
            if not future.done():
                future.set_exception(exc)
        link.pending.clear()

    def _on_reply(self, link: _PeerLink, frames: list[bytes]) -> None:
        if len(frames) < 4 or frames[0] != VERSION or frames[1] not in (OK, ERR):
            self.drops.drop("reply:malformed", f"{len(frames)} frames")
            return
        _, status, rid, raw_meta, *body = frames
        future = link.pending.get(rid)
        if future is None or future.done():
            self.stats.dropped["reply:late"] += 1  # we gave up on it: expected, not logged
            return
        link.last_heard = self._clock()
        self.stats.inbound[f"reply:{status.decode()}"] += 1
        try:
            meta = unpack_meta(raw_meta, self.config.max_meta_size)
        except ValueError as exc:
            self.drops.drop("reply:meta", str(exc))
            future.set_exception(PeerProtocolError(f"bad reply meta: {exc}"))
            return
        if status == ERR:
            future.set_exception(PeerRefused(str(meta.get("reason", "refused"))[:200]))
        else:
            future.set_result(PeerReply(meta, tuple(body)))
