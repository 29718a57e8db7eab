"""ZeroMQ sockets on the asyncio loop: `ZmqPump` drains a socket through its FD, `Outbox`
batches what one loop turn sends to each peer.

Shared by the broker (node side) and the worker SDK: both talk the worker
protocol over one socket each. Draining the FD in a loop costs one wake-up per
burst instead of a future per message (`zmq.asyncio`): about three times the
round trips here (bench/bench_dispatch.py). One loop, one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import zmq

from node.protocol import encode_batch, encode_packed, packable

log = logging.getLogger("scale0.zmq")
_MORE: Final = int(zmq.NOBLOCK | zmq.SNDMORE)
_LAST: Final = int(zmq.NOBLOCK)
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)
# pyzmq's Python `Socket.send`/`recv_multipart` wrap the Cython methods with DRAFT
# options and an enum conversion per frame (getsockopt(RCVMORE)): calling the
# Cython base directly halves the per-frame cost (0.44 → 0.20 µs a send here).
_base_send: Final[Any] = zmq.backend.Socket.send
_base_recv: Final[Any] = zmq.backend.Socket.recv
_base_get: Final[Any] = zmq.backend.Socket.get


SEND_BATCH: Final = 20  # messages per BATCH we send (a peer accepts up to its Limits.max_batch)


class Outbox:
    """Messages for batching peers, held until the end of this loop turn.

    Everything one loop turn produces for one peer leaves as one zmq message
    (a BATCH when there are several), so one I/O-thread wake-up carries them
    all. Order per peer is kept. `send(key, frames)` sends one message (with
    a ROUTER identity in front when key is not b""); its failure is reported
    to `failed(key, tags)` with the tags of every message that did not leave.
    A batch for a peer that `packs(key)` (it announced PACKED) goes as PACKED when
    its frames are small, else as BATCH."""

    def __init__(self, send: Callable[[list[bytes]], bool],
                 failed: Callable[[bytes, list[int]], None],
                 packs: Callable[[bytes], bool] = lambda _key: False) -> None:
        self._send = send
        self._failed = failed
        self._packs = packs
        self._queued: dict[bytes, list[list[bytes]]] = {}
        self._tags: dict[bytes, list[int]] = {}
        self._loop = asyncio.get_running_loop()
        self._scheduled = False

    def put(self, key: bytes, frames: list[bytes], tag: int | None = None) -> None:
        q = self._queued.get(key)
        if q is None:
            q = self._queued[key] = []
        q.append(frames)
        if tag is not None:
            tags = self._tags.get(key)
            if tags is None:  # not setdefault: its default list would be made every time
                tags = self._tags[key] = []
            tags.append(tag)
        if len(q) >= SEND_BATCH:
            # Full: send now, so the peer starts on these while we make the rest
            # (one batch per turn made the two processes take turns, idle half the time).
            self._send_one(key, q, self._tags.pop(key, []))
            del self._queued[key]
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def holds(self, key: bytes) -> bool:
        """Whether messages for `key` wait for the end of this loop turn (a message sent
        past the Outbox now would overtake them)."""
        return key in self._queued

    def clear(self) -> None:
        self._queued.clear()
        self._tags.clear()

    def flush(self) -> None:
        self._scheduled = False
        queued, tags = self._queued, self._tags
        self._queued, self._tags = {}, {}
        for key, msgs in queued.items():
            self._send_one(key, msgs, tags.get(key, []))

    def _send_one(self, key: bytes, msgs: list[list[bytes]], tags: list[int]) -> None:
        if len(msgs) == 1:
            frames = msgs[0]
        elif self._packs(key) and packable(msgs):
            frames = encode_packed(msgs)
        else:
            frames = encode_batch(msgs)
        if not self._send([key, *frames] if key else frames):
            self._failed(key, tags)


class ZmqPump:
    """Receives a zmq socket's messages on the asyncio loop by draining its FD.

    The FD is edge-triggered: it only says "events changed", so every wake-up
    drains until EAGAIN (its first message at once, the rest after the handlers that
    one scheduled), and every send schedules one more drain (a send can consume the
    edge that announced incoming messages). Batches are bounded so one busy peer
    cannot starve the loop. One loop, one thread."""

    BATCH = 256

    def __init__(self, sock: zmq.Socket[bytes], on_message: Callable[[list[bytes]], None]) -> None:
        self.sock = sock
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._closed = False
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self._wake)
        self._schedule()

    def _wake(self) -> None:
        # The FD says events changed. The first message is taken now, not a loop turn
        # later (at low load a turn is an epoll_wait and the loop's idle handlers); the
        # rest waits for a drain after the handlers that message scheduled. So the task
        # a lone REPLY (or REQUEST) wakes writes its answer before libzmq is asked for
        # more: that getsockopt is a poll(2) and two getpid(2) here, on the critical
        # path of every request at low load. A drain already scheduled (after a send)
        # will run anyway.
        if not self._scheduled and not self._closed:
            self._take(1)

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if not self._closed:
            self._take(self.BATCH)

    def _take(self, limit: int) -> None:
        """Hand on up to `limit` messages; schedule a drain when more may be waiting."""
        sock = self.sock
        for _ in range(limit):
            try:
                # Ask first: ending every drain on a raised zmq.Again (an exception object
                # built in Python) cost more than this getsockopt, which also processes
                # libzmq's pending commands as the edge-triggered FD requires.
                if not _base_get(sock, _EVENTS) & _POLLIN:
                    return
                # A Frame says `more` itself (zmq_msg_more); get(RCVMORE) would convert the
                # option to an enum in Python for every frame (~0.7 µs a frame here).
                frame = _base_recv(sock, _LAST, False)
                frames = [frame.bytes]
                while frame.more:
                    frame = _base_recv(sock, _LAST, False)
                    frames.append(frame.bytes)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("receive failed: %s", exc)
                return
            try:
                self._on_message(frames)
            except Exception:  # a handler bug must not kill the pump
                log.exception("message handler failed")
            if self._closed:
                return
        self._schedule()  # more may be waiting: continue after other tasks had a turn

    def send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False if the peer is unknown/gone or its queue is full."""
        if self._closed:
            return False
        sock = self.sock
        try:
            # send_multipart's enum arithmetic costs more than the sends here: plain ints.
            for frame in frames[:-1]:
                _base_send(sock, frame, _MORE, len(frame) < 65536)
            _base_send(sock, frames[-1], _LAST, len(frames[-1]) < 65536)
            return True
        except zmq.ZMQError:
            return False
        finally:
            self._schedule()

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; `linger_ms` lets what was just sent still leave (a goodbye)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        self.sock.close(linger=linger_ms)
