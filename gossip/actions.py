"""What the membership core asks its shell to do: the actions ``Membership`` returns.

Pure data; gossip/agent.py (sockets) and gossip/sim.py (the simulator) perform them.
Re-exported by gossip/membership.py, where callers have always found them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.messages import Addresses, LoadReport, Message


@dataclass(frozen=True, slots=True)
class MemberView:
    """One row of the membership, as the load table sees it."""

    id: str
    dc: str
    state: str  # alive | suspect | dead | left
    incarnation: int
    addresses: Addresses
    last_heard: float | None  # our clock; None if never heard directly
    load: LoadReport
    # The member's process, as its own beats say (gossip/reliable.py "Lives"): the first
    # life heard from it, which changes only when a later process (a restart) speaks. 0
    # until a beat of it was heard, or from a sender that does not say.
    life: int = 0


@dataclass(frozen=True, slots=True)
class Publish:
    """Send ``msg`` on our PUB socket."""

    msg: Message


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send ``msg`` to one member's peer socket (``address``), best effort."""

    member_id: str
    address: str
    msg: Message


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Connect our SUB socket to this gossip endpoint."""

    address: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    address: str


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A member's state, incarnation, addresses or process (`MemberView.life`) changed."""

    view: MemberView


@dataclass(frozen=True, slots=True)
class Deliver:
    """A reliable envelope of another layer's ``kind`` arrived in order (e.g. a purge)."""

    sender: str
    kind: str
    payload: bytes


Action = Publish | SendTo | Subscribe | Unsubscribe | MemberChanged | Deliver
