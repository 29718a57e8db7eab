"""The load table: one node's view of every node's state and per-service load.

Pure and not safe for concurrent use: the gossip shell feeds it reports and state
changes, the admin listener reads `to_json`, the routing policy reads
`effective_free`, all from one event loop. Time is an argument (`reported_at`,
`now`), never read here, so tests and the simulator drive it with any clock.

A report replaces the previous one for that node only when it is newer: ordered
by (incarnation, seq, reported_at), where `seq` is the publisher's sequence
number when the shell has one (0 otherwise) and `reported_at` is when *this*
node received it, on the same clock as `now`. Anything not newer is a reordered
or replayed message and is ignored. Membership may still move a node's
state (`mark`) between reports — suspect, dead and left come from the failure
detector, not from the node itself.

Anti-herding (issue 5): a report says how many slots a peer had free when it
was sent; every node that believed it would pile onto that peer until the next
report. So the table counts what this node sent to each peer since that peer's
last accepted report and subtracts it (`effective_free`). A new report resets
the count, because the peer's own numbers now include what we sent. A request
that comes back before the next report gave its slot back, so `note_done`
takes it off again (only while the report it was counted against is still the
one held): otherwise a peer could take at most its free slots per gossip
interval, however fast it answers (40 req/s to a 4-slot peer at 1 s beats).

`to_json` is the documented `/_scale0/mesh` shape (docs: mesh JSON):

    {"self": ID, "nodes": [{"id", "dc", "state", "incarnation", "age_s",
      "addresses": {NAME: ENDPOINT},
      "services": {NAME: {"workers", "slots", "in_flight", "queued", "p50_ms",
                          "rps", "fwd_in_rps", "fwd_out_rps"}}}]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from gossip.load import ServiceLoad

STATES = ("alive", "suspect", "dead", "left")
# An alive peer as the overflow path reads it: (id, dc, addresses, services).
PeerEntry = tuple[str, str, Mapping[str, str], Mapping[str, ServiceLoad]]
# Only alive peers take routed work; a suspect peer may be gone already, and the
# failure detector decides faster than a client's deadline would.
ROUTABLE_STATES = frozenset({"alive"})


class MemberLike(Protocol):
    """What `LoadTable.sync` needs of a membership row (gossip.membership.MemberView)."""

    @property
    def id(self) -> str: ...
    @property
    def dc(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def addresses(self) -> Any: ...  # a Mapping or a dataclass of endpoint strings
    @property
    def last_heard(self) -> float | None: ...  # our clock; None if never heard directly
    @property
    def load(self) -> Iterable[tuple[str, ServiceLoad]]: ...


def _address_map(addresses: Any) -> dict[str, str]:
    if isinstance(addresses, Mapping):
        pairs = addresses.items()
    elif dataclasses.is_dataclass(addresses) and not isinstance(addresses, type):
        pairs = dataclasses.asdict(addresses).items()
    else:
        raise LoadTableError(f"addresses must be a mapping or a dataclass, not {addresses!r:.60}")
    return {str(k): str(v) for k, v in pairs if v}  # unadvertised endpoints are ""


class LoadTableError(ValueError):
    """The caller passed a value the table cannot hold (the caller's fault)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node's line in the table, as of `now` in `LoadTable.rows(now)`."""

    id: str
    dc: str
    state: str
    incarnation: int
    age_s: float  # seconds since its last accepted report; never negative
    addresses: Mapping[str, str]
    services: Mapping[str, ServiceLoad]
    is_self: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dc": self.dc,
            "state": self.state,
            "incarnation": self.incarnation,
            "age_s": round(self.age_s, 3),
            "addresses": dict(self.addresses),
            "services": {name: service_json(load) for name, load in sorted(self.services.items())},
        }


def service_json(load: ServiceLoad) -> dict[str, Any]:
    """One service's load in the documented JSON shape."""
    return {
        "workers": load.workers,
        "slots": load.slots,
        "in_flight": load.in_flight,
        "queued": load.queued,
        "p50_ms": round(load.p50_ms, 3),
        "rps": round(load.rps, 3),
        "fwd_in_rps": round(load.fwd_in_rps, 3),
        "fwd_out_rps": round(load.fwd_out_rps, 3),
    }


@dataclass(slots=True)
class _Entry:
    dc: str
    state: str
    incarnation: int
    addresses: Mapping[str, str]
    services: Mapping[str, ServiceLoad]
    reported_at: float
    seq: int
    sent: dict[str, int] = field(default_factory=dict)  # service -> sent since this report
    report_no: int = 0  # which accepted report this is (tokens of note_sent/note_done)
    # service -> our forwards that this report counted busy and that have since come back
    freed: dict[str, int] = field(default_factory=dict)


def _check_state(state: str) -> None:
    if state not in STATES:
        raise LoadTableError(f"unknown node state {state!r}; expected one of {', '.join(STATES)}")


class LoadTable:
    """Every known node's last report, keyed by node id. See the module docstring."""

    def __init__(self, self_id: str) -> None:
        if not self_id:
            raise LoadTableError("the load table needs this node's id")
        self.self_id = self_id
        self._nodes: dict[str, _Entry] = {}
        # Bumped on every visible change, so a watcher can tell "changed" from
        # "only older" without diffing (the dashboard pushes on change).
        self.version = 0
        self._reports = 0  # accepted reports so far: numbers each _Entry
        self._services_at: tuple[int, frozenset[str]] = (-1, frozenset())
        self._peers_at: tuple[int, tuple[PeerEntry, ...]] = (-1, ())

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def update(  # noqa: PLR0917 - the documented positional order of a report
        self,
        node_id: str,
        dc: str,
        state: str,
        incarnation: int,
        addresses: Mapping[str, str],
        services: Mapping[str, ServiceLoad],
        reported_at: float,
        *,
        seq: int = 0,
    ) -> bool:
        """Take a node's report; False when it is not newer than the one held (ignored).

        `reported_at` is the receive time on this node's clock (ages are measured
        against it); `seq` the publisher's sequence number, if known."""
        if not node_id:
            raise LoadTableError("a report needs a node id")
        _check_state(state)
        if incarnation < 0:
            raise LoadTableError(f"incarnation must be >= 0, got {incarnation}")
        old = self._nodes.get(node_id)
        if old is not None and (incarnation, seq, reported_at) <= (
            old.incarnation,
            old.seq,
            old.reported_at,
        ):
            return False
        self._nodes[node_id] = _Entry(
            dc=dc,
            state=state,
            incarnation=incarnation,
            addresses=MappingProxyType(dict(addresses)),
            services=MappingProxyType(dict(services)),
            reported_at=reported_at,
            seq=seq,
            report_no=self._reports + 1,
        )
        self._reports += 1
        self.version += 1
        return True

    def mark(self, node_id: str, state: str) -> bool:
        """Set a known node's state (from the failure detector); False if unknown."""
        _check_state(state)
        entry = self._nodes.get(node_id)
        if entry is None:
            return False
        if entry.state != state:
            entry.state = state
            self.version += 1
        return True

    def remove(self, node_id: str) -> bool:
        """Forget a node (e.g. long after it left); False if it was not known."""
        if self._nodes.pop(node_id, None) is None:
            return False
        self.version += 1
        return True

    def apply_member(self, view: MemberLike, now: float) -> bool:
        """Fold one membership row in; True when it carried a newer report.

        Age counts from when we last heard the node itself (`last_heard`); a
        node known only from others' news keeps the age it had. Our own row is
        always fresh. A row that is not newer still moves the state."""
        old = self._nodes.get(view.id)
        if view.id == self.self_id:
            heard = now
        elif view.last_heard is not None:
            heard = view.last_heard
        else:
            heard = old.reported_at if old is not None else now
        accepted = self.update(
            view.id,
            view.dc,
            view.state,
            view.incarnation,
            _address_map(view.addresses),
            dict(view.load),
            heard,
            seq=old.seq if old is not None else 0,
        )
        if not accepted:
            self.mark(view.id, view.state)
        return accepted

    def sync(self, views: Iterable[MemberLike], now: float) -> None:
        """Make the table match the membership: fold every row in, drop the rest."""
        seen = set()
        for view in views:
            self.apply_member(view, now)
            seen.add(view.id)
        for gone in [node_id for node_id in self._nodes if node_id not in seen]:
            self.remove(gone)

    def alive_peers(self) -> tuple[PeerEntry, ...]:
        """Every other node whose state is alive, as (id, dc, addresses, services), in
        `rows`' order; recomputed only after a change. The overflow path asks once per
        request while the local workers are saturated: `rows` builds a sorted NodeRow a
        node for it (ages included), which that question does not need."""
        at, peers = self._peers_at
        if at != self.version:
            peers = tuple((node_id, e.dc, e.addresses, e.services)
                          for node_id, e in sorted(self._nodes.items(),
                                                   key=lambda item: (item[1].dc, item[0]))
                          if node_id != self.self_id and e.state == "alive")
            self._peers_at = (self.version, peers)
        return peers

    def services(self) -> frozenset[str]:
        """Every service some node in the table offers (any state); recomputed only
        after a change, since the request path asks for it."""
        at, known = self._services_at
        if at != self.version:
            known = frozenset(s for e in self._nodes.values() for s in e.services)
            self._services_at = (self.version, known)
        return known

    def state(self, node_id: str) -> str | None:
        entry = self._nodes.get(node_id)
        return None if entry is None else entry.state

    def peer_endpoint(self, node_id: str) -> str | None:
        """The peer socket of `node_id` while its state is routable; None otherwise (a
        lookup, not `rows`: the overflow path asks it for every forward)."""
        entry = self._nodes.get(node_id)
        if entry is None or entry.state not in ROUTABLE_STATES:
            return None
        return entry.addresses.get("peer")

    def rows(self, now: float) -> list[NodeRow]:
        """Every node, sorted by dc then id, with the age of its report at `now`."""
        out = [
            NodeRow(
                id=node_id,
                dc=e.dc,
                state=e.state,
                incarnation=e.incarnation,
                # A report stamped in our future (clock skew) is fresh, not negative-old.
                age_s=max(0.0, now - e.reported_at),
                addresses=e.addresses,
                services=e.services,
                is_self=node_id == self.self_id,
            )
            for node_id, e in self._nodes.items()
        ]
        out.sort(key=lambda r: (r.dc, r.id))
        return out

    def to_json(self, now: float) -> dict[str, Any]:
        """The documented `/_scale0/mesh` JSON (module docstring)."""
        return {"self": self.self_id, "nodes": [row.to_json() for row in self.rows(now)]}

    # -- anti-herding: what we sent since each peer's last report -------------

    def note_sent(self, peer: str, service: str, count: int = 1) -> int:
        """Count `count` requests sent to `peer` for `service` since its last report.

        Returns a token naming that report, for `note_done` (0: peer unknown)."""
        if count < 0:
            raise LoadTableError(f"cannot send a negative number of requests ({count})")
        entry = self._nodes.get(peer)
        if entry is None:
            return 0  # nothing to subtract from; the next report starts clean anyway
        entry.sent[service] = entry.sent.get(service, 0) + count
        return entry.report_no

    def note_done(self, peer: str, service: str, token: int, count: int = 1) -> None:
        """`count` requests sent under report `token` came back: their slots are free again.

        Sent under the current report, they stop counting against it. Sent under an
        older one, the current report may have counted them busy (they were in flight
        when the peer reported): their slots come back as a credit, capped at what the
        report counted busy, so a slow report interval does not hide a peer's room
        (an overestimate is bounded and met by the peer's "busy")."""
        if count < 0:
            raise LoadTableError(f"cannot finish a negative number of requests ({count})")
        entry = self._nodes.get(peer)
        if entry is None or token == 0:
            return
        if entry.report_no == token:
            entry.sent[service] = max(0, entry.sent.get(service, 0) - count)
            return
        load = entry.services.get(service)
        if token < entry.report_no and load is not None:
            entry.freed[service] = min(load.in_flight, entry.freed.get(service, 0) + count)

    def sent_since_report(self, peer: str, service: str) -> int:
        entry = self._nodes.get(peer)
        return 0 if entry is None else entry.sent.get(service, 0)

    def effective_free(self, peer: str, service: str) -> int:
        """Slots `peer` reported free for `service`, plus those our earlier forwards freed
        since, minus what we sent since; never < 0, never above its slots.

        Zero for unknown peers, unknown services and peers not alive."""
        entry = self._nodes.get(peer)
        if entry is None or entry.state not in ROUTABLE_STATES:
            return 0
        load = entry.services.get(service)
        if load is None:
            return 0
        room = min(load.slots, load.free + entry.freed.get(service, 0))
        return max(0, room - entry.sent.get(service, 0))
