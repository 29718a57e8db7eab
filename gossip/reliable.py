"""Reliable delivery over lossy PUB/SUB: per-publisher sequence, gap detection, resend.

PUB/SUB drops silently under pressure (the ZeroMQ guide, Zyre's
``zyre_peer_messages_lost``). A publisher numbers its ``Reliable`` envelopes and
keeps the last few in an ``Outbox``; its beats repeat the newest ``rseq``. A
subscriber's ``Inbox`` delivers each publisher's envelopes in order, exactly once,
buffers what arrives early, and says which range to ask the publisher for again. A
gap that cannot be filled (the publisher forgot it, or is gone) is skipped after
``give_up`` seconds and counted. Pure: no clock read here.

**Lives.** Sequence numbers mean something only within one life (one process) of
the publisher: a node killed with -9 and restarted numbers from the start again,
and a stream keyed by member id alone took its new envelopes for duplicates of the
old life's and dropped them, silently, until the new numbers caught up (issue:
purges lost after a quick restart). So the life is part of every number:
``rseq = life << SEQ_BITS | n``, with ``life`` the publisher's incarnation when its
process started (wall-clock milliseconds, gossip/agent.py: a restart always has a
higher one) and ``n = 1, 2, 3 ...`` within the life. This is TCP's answer to the
same problem (a clock-driven initial sequence number, RFC 793/6528), and Kafka's
producer epoch folded into the number. Why in ``rseq`` and not a new field or the
membership view:

* the membership view cannot tell the lives apart: the new life's first envelopes
  can arrive before its beat raised the incarnation we know, a late envelope of the
  old life after it, and a refutation raises the incarnation within one life;
* every place a reliable number travels carries its life with no wire change: the
  envelope, the resend, and the beat's ``rseq`` (so a new life is noticed, and its
  first envelopes re-requested, even when PUB dropped them all before our
  subscription reconnected);
* the decoder of older versions checks field counts exactly: a new field would make
  every envelope a decode error for them. An older *receiver* here sees the new
  life as a jump ahead, asks for the gap, and after ``resend_give_up`` skips it
  (counted) and delivers — late, not lost. An older *sender* (life 0) behaves as
  before: its restarts still lose envelopes at our end until it is upgraded.

An ``Inbox`` keeps one stream per publisher, at the newest life it has seen. A
newer life closes the old stream — what it still buffers is delivered in order, its
unfilled gaps counted as skipped — and starts at the new life's ``n = 1``; anything
later from an older life is dropped and counted (``dropped["stale_life"]``), as are
duplicates and envelopes past the buffer: nothing is dropped without a count.
After ``2**SEQ_BITS - 1`` envelopes a publisher moves to ``life + 1``, which its
receivers take as a new life (a restart's incarnation is milliseconds of uptime
higher, far past that).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gossip.messages import MAX_INT, Reliable

MAX_PENDING = 256  # early envelopes buffered per publisher
MAX_REMEMBERED = 65_536  # streams no longer followed whose position is kept (max members)
SEQ_BITS = 22  # envelopes per life: ~4.2 million; wall-clock ms lives fit in the other 42
SEQ_MASK = (1 << SEQ_BITS) - 1
# Roll-overs (below) one process may make: 2**10 of them take 2**32 envelopes. A restart's
# life is its start in wall-clock milliseconds, so a life more than this past one heard from
# a process is a later process (`later_process`): a restart at least ~1 s after the last.
ROLLOVERS = 1024
MAX_LIFE = (MAX_INT >> SEQ_BITS) - ROLLOVERS  # room left for roll-overs within one life


def life_of(rseq: int) -> int:
    """The publisher life an ``rseq`` belongs to (0: a sender that does not say)."""
    return rseq >> SEQ_BITS


def first_of(life: int) -> int:
    """The first ``rseq`` of ``life``."""
    return life << SEQ_BITS | 1


def later_process(known: int, life: int) -> bool:
    """Whether a publisher whose process was heard at life ``known`` now speaks as a later
    process (a restart) at ``life``, not the same one after roll-overs (up to ``ROLLOVERS``
    past it) nor an older one's late word. 0 is "not said" (an older sender): never."""
    return known > 0 and life > known + ROLLOVERS


class Outbox:
    """The publisher side: numbering within this life and a bounded history for resends."""

    def __init__(self, keep: int, life: int = 0) -> None:
        self._history: deque[Reliable] = deque(maxlen=keep)
        self.first_life = min(max(life, 0), MAX_LIFE)
        self.last = self.first_life << SEQ_BITS  # "nothing yet" in this life

    def owns(self, life: int) -> bool:
        """Whether ``life`` is one of this process's: the one it started with, or one it
        rolled over to since."""
        return 0 < self.first_life <= life <= life_of(self.last)

    def next(self, sender: str, seq: int, kind: str, payload: bytes) -> Reliable:
        self.last += 1
        if not self.last & SEQ_MASK:  # this life's numbers are used up: roll over
            self.last += 1
        msg = Reliable(sender, seq, self.last, kind, payload)
        self._history.append(msg)
        return msg

    def resend(self, first: int, last: int) -> list[Reliable]:
        """What is still held of ``first..last`` (bounded by the history size)."""
        return [m for m in self._history if first <= m.rseq <= last]


@dataclass(slots=True)
class _Stream:
    life: int
    expected: int  # next rseq to deliver
    pending: dict[int, Reliable] = field(default_factory=dict)
    gap_since: float | None = None
    head: int = 0  # newest rseq the publisher said it has


class Inbox:
    """The subscriber side, for every publisher it hears."""

    def __init__(self, give_up: float) -> None:
        self._streams: dict[str, _Stream] = {}
        # (life, next rseq) of a stream no longer followed: followed again in the same
        # life, it resumes there, and what was published meanwhile is asked for as a gap
        # (a partition: the purges of its minutes are delivered after the heal).
        self._lives: dict[str, tuple[int, int]] = {}
        self._give_up = give_up
        self.skipped = 0  # envelopes never recovered
        self.restarts = 0  # streams closed because their publisher's newer life spoke
        # Envelopes refused, by reason (the shell counts them as drops): stale_life: from
        # an older life than one already heard; duplicate: delivered or buffered already
        # (a resend crossing the original); overflow: past MAX_PENDING early envelopes.
        self.dropped = {"stale_life": 0, "duplicate": 0, "overflow": 0}

    def _stream(self, publisher: str, rseq: int, start: int
                ) -> tuple[_Stream | None, list[Reliable]]:
        """The stream ``rseq`` belongs to, opened at ``start`` on first contact, and what a
        closed older life still delivers; None for a number from an older life."""
        life = life_of(rseq)
        s = self._streams.get(publisher)
        closed: list[Reliable] = []
        if s is None:
            known, resume = self._lives.get(publisher, (None, 0))
            if known is not None and life < known:
                return None, closed
            if known is not None and life > known:
                start = first_of(life)  # a new life of someone we followed: all of it is news
            elif known is not None:
                start = resume  # the life we followed: from where we were
            # else first contact in this life: history before it is not ours to replay
            self._lives.pop(publisher, None)
            s = self._streams[publisher] = _Stream(life, start)
        elif life < s.life:
            return None, closed
        elif life > s.life:
            closed = self._close(s)
            self.restarts += 1
            s = self._streams[publisher] = _Stream(life, first_of(life))
        return s, closed

    def accept(self, msg: Reliable, now: float) -> tuple[list[Reliable], tuple[int, int] | None]:
        """File ``msg``; return what is now deliverable in order, and a range to re-request."""
        s, out = self._stream(msg.sender, msg.rseq, msg.rseq)
        if s is None:
            self.dropped["stale_life"] += 1
            return out, None
        if msg.rseq < s.expected or msg.rseq in s.pending:
            self.dropped["duplicate"] += 1
        elif len(s.pending) >= MAX_PENDING:
            self.dropped["overflow"] += 1
        else:
            s.pending[msg.rseq] = msg
        out += self._drain(s)
        return out, self._gap(s, now)

    def head(self, publisher: str, rseq: int, now: float
             ) -> tuple[list[Reliable], tuple[int, int] | None]:
        """A beat says the publisher's newest envelope is ``rseq``: what a newer life's word
        closes, and anything missing? (A late beat of an older life says nothing.)"""
        s, out = self._stream(publisher, rseq, rseq + 1)
        if s is None:
            return out, None
        s.head = max(s.head, rseq)
        if rseq >= s.expected:
            return out, self._gap(s, now, rseq)
        return out, None

    def _drain(self, s: _Stream) -> list[Reliable]:
        out = []
        while s.expected in s.pending:
            out.append(s.pending.pop(s.expected))
            s.expected += 1
        if not s.pending:
            s.gap_since = None
        return out

    def _close(self, s: _Stream) -> list[Reliable]:
        """An older life ended: what it left buffered, in order; its gaps will never fill."""
        top = max([s.head, *s.pending])
        self.skipped += max(0, top - s.expected + 1) - len(s.pending)
        out = [s.pending[r] for r in sorted(s.pending)]
        s.pending.clear()
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

    def forget(self, publisher: str, *, keep_life: bool = True) -> None:
        """Stop tracking ``publisher`` (no longer followed, or reaped). With ``keep_life``
        its life and position are remembered (the last ``MAX_REMEMBERED`` publishers), so
        when we follow it again the same life resumes where we were — what it published
        meanwhile is a gap, asked for and delivered — a newer one is heard from its start
        and an older one stays refused; without, nothing is kept."""
        s = self._streams.pop(publisher, None)
        if s is not None:
            if keep_life:
                self._lives[publisher] = (s.life, s.expected)  # what it buffered: asked again
                while len(self._lives) > MAX_REMEMBERED:
                    del self._lives[next(iter(self._lives))]  # the longest forgotten
            else:
                self.skipped += len(s.pending)
        if not keep_life:
            self._lives.pop(publisher, None)
