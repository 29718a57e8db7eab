"""Circuit breaking per peer: stop sending to a peer that keeps failing, for a while.

Pure and clock-injected. `failures` consecutive failures or timeouts open the
circuit for `open_for` seconds; after that one trial request is let through
(half-open): success closes the circuit, failure opens it again for twice as
long (capped), so a peer that is down costs us one request per period.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures: int = 5
    open_for: float = 2.0
    max_open_for: float = 30.0


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    opened_at: float | None = None
    open_for: float = 0.0
    trial_in_flight: bool = False


@dataclass
class Breakers:
    """One circuit per peer id."""

    config: BreakerConfig = field(default_factory=BreakerConfig)
    _peers: dict[str, _State] = field(default_factory=dict)

    def allows(self, peer: str, now: float) -> bool:
        """Whether a request may be sent to `peer` now (reserves the half-open trial)."""
        s = self._peers.get(peer)
        if s is None or s.opened_at is None:
            return True
        if now - s.opened_at < s.open_for or s.trial_in_flight:
            return False
        s.trial_in_flight = True
        return True

    def is_open(self, peer: str, now: float) -> bool:
        """Whether `peer` is shut off now (does not reserve anything)."""
        s = self._peers.get(peer)
        if s is None or s.opened_at is None:
            return False
        return now - s.opened_at < s.open_for or s.trial_in_flight

    def success(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def failure(self, peer: str, now: float) -> None:
        s = self._peers.setdefault(peer, _State())
        s.consecutive += 1
        if s.opened_at is not None:  # the half-open trial failed: open again, longer
            s.open_for = min(self.config.max_open_for, s.open_for * 2)
            s.opened_at = now
        elif s.consecutive >= self.config.failures:
            s.open_for = self.config.open_for
            s.opened_at = now
        s.trial_in_flight = False

    def release(self, peer: str) -> None:
        """The request `allows` let through ended with no verdict (its client left, or it
        was never sent): give the half-open trial back, so the next request may be it.
        Kept, it would shut the peer out for good."""
        s = self._peers.get(peer)
        if s is not None:
            s.trial_in_flight = False

    def forget(self, peer: str) -> None:
        """Drop the state of a peer that left the mesh."""
        self._peers.pop(peer, None)
