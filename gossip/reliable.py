"""Reliable delivery over lossy PUB/SUB: per-publisher sequence, gap detection, resend.

PUB/SUB drops silently under pressure (the ZeroMQ guide, Zyre's
``zyre_peer_messages_lost``). A publisher numbers its ``Reliable`` envelopes
``rseq = 1, 2, 3 ...`` and keeps the last few in an ``Outbox``; its beats repeat
the newest ``rseq``. A subscriber's ``Inbox`` delivers each publisher's envelopes in
order, exactly once, buffers what arrives early, and says which range to ask the
publisher for again. A gap that cannot be filled (the publisher forgot it, or is
gone) is skipped after ``give_up`` seconds and counted. Pure: no clock read here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gossip.messages import Reliable

MAX_PENDING = 256  # early envelopes buffered per publisher


class Outbox:
    """The publisher side: numbering and a bounded history for resends."""

    def __init__(self, keep: int) -> None:
        self._history: deque[Reliable] = deque(maxlen=keep)
        self.last = 0

    def next(self, sender: str, seq: int, kind: str, payload: bytes) -> Reliable:
        self.last += 1
        msg = Reliable(sender, seq, self.last, kind, payload)
        self._history.append(msg)
        return msg

    def resend(self, first: int, last: int) -> list[Reliable]:
        """What is still held of ``first..last`` (bounded by the history size)."""
        return [m for m in self._history if first <= m.rseq <= last]


@dataclass(slots=True)
class _Stream:
    expected: int  # next rseq to deliver
    pending: dict[int, Reliable] = field(default_factory=dict)
    gap_since: float | None = None
    head: int = 0  # newest rseq the publisher said it has


class Inbox:
    """The subscriber side, for every publisher it hears."""

    def __init__(self, give_up: float) -> None:
        self._streams: dict[str, _Stream] = {}
        self._give_up = give_up
        self.skipped = 0  # envelopes never recovered

    def _stream(self, publisher: str, head: int) -> _Stream:
        s = self._streams.get(publisher)
        if s is None:
            # first contact: history before it is not ours to replay
            s = self._streams[publisher] = _Stream(expected=head)
        return s

    def accept(self, msg: Reliable, now: float) -> tuple[list[Reliable], tuple[int, int] | None]:
        """File ``msg``; return what is now deliverable in order, and a range to re-request."""
        s = self._stream(msg.sender, msg.rseq)
        if msg.rseq >= s.expected and len(s.pending) < MAX_PENDING:
            s.pending.setdefault(msg.rseq, msg)
        return self._drain(s), self._gap(s, now)

    def head(self, publisher: str, rseq: int, now: float) -> tuple[int, int] | None:
        """A beat says the publisher's newest envelope is ``rseq``: anything missing?"""
        s = self._stream(publisher, rseq + 1)
        s.head = max(s.head, rseq)
        if rseq >= s.expected:
            return self._gap(s, now, rseq)
        return None

    def _drain(self, s: _Stream) -> list[Reliable]:
        out = []
        while s.expected in s.pending:
            out.append(s.pending.pop(s.expected))
            s.expected += 1
        if not s.pending:
            s.gap_since = None
        return out

    def _gap(self, s: _Stream, now: float, head: int = 0) -> tuple[int, int] | None:
        top = max([head, *s.pending])
        if top < s.expected:
            return None
        if s.gap_since is None:
            s.gap_since = now
        return s.expected, top

    def expire(self, now: float) -> list[Reliable]:
        """Skip gaps older than ``give_up``; return envelopes that become deliverable."""
        out: list[Reliable] = []
        for s in self._streams.values():
            if s.gap_since is not None and now - s.gap_since >= self._give_up:
                nxt = min(s.pending) if s.pending else s.head + 1
                self.skipped += max(0, nxt - s.expected)
                s.expected = max(s.expected, nxt)
                s.gap_since = None
                out.extend(self._drain(s))
        return out

    def forget(self, publisher: str) -> None:
        self._streams.pop(publisher, None)
