"""The mesh JSON as a rich Table: the picture `scale0 mesh` draws.

Two pure steps. `parse_mesh_json` checks a `/_scale0/mesh` document — it comes
over the network from a node that may be another version, or not a Scale0
node at all — and turns it into rows, or raises `MeshJSONError` naming the
first bad field (the remote side's fault). Unknown extra keys are ignored so an
older CLI can read a newer node. `render_table` draws rows sorted by dc then
node, one column per service, states coloured: alive green, suspect yellow,
dead red, left dim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from gossip.load import ServiceLoad
from mesh.loadtable import STATES, NodeRow

STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
# Bounds on what we accept from a remote admin listener: far above any real mesh,
# low enough that a hostile answer cannot make the terminal draw forever.
MAX_NODES = 10_000
MAX_SERVICES = 256
MAX_ADDRESSES = 32
MAX_TEXT = 256
STALE_AFTER_S = 3.0  # a report older than a few beats is worth a glance

_INT_FIELDS = ("workers", "slots", "in_flight", "queued")
_FLOAT_FIELDS = ("p50_ms", "rps", "fwd_in_rps", "fwd_out_rps")


class MeshJSONError(ValueError):
    """The mesh document is not in the documented shape (the remote node's fault)."""


@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    self_id: str
    nodes: tuple[NodeRow, ...]


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MeshJSONError(f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise MeshJSONError(f"{where}: longer than {MAX_TEXT} characters")
    # Control characters would reach the operator's terminal as escape sequences.
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise MeshJSONError(f"{where}: contains control characters")
    return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MeshJSONError(f"{where}: expected a non-negative integer, got {value!r:.40}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeshJSONError(f"{where}: expected a number, got {value!r:.40}")
    f = float(value)
    if not math.isfinite(f) or f < 0:
        raise MeshJSONError(f"{where}: expected a finite non-negative number, got {value!r:.40}")
    return f


def _object(value: object, where: str, limit: int) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise MeshJSONError(f"{where}: expected an object, got {type(value).__name__}")
    if len(value) > limit:
        raise MeshJSONError(f"{where}: more than {limit} entries")
    return value


def _service(value: object, where: str) -> ServiceLoad:
    obj = _object(value, where, 64)
    ints = [_count(obj.get(k, 0), f"{where}.{k}") for k in _INT_FIELDS]
    floats = [_number(obj.get(k, 0.0), f"{where}.{k}") for k in _FLOAT_FIELDS]
    return ServiceLoad(*ints, *floats)  # positional: the order of _INT_FIELDS, _FLOAT_FIELDS


def _node(value: object, where: str, self_id: str) -> NodeRow:
    obj = _object(value, where, 64)
    node_id = _text(obj.get("id"), f"{where}.id")
    state = _text(obj.get("state"), f"{where}.state")
    if state not in STATES:
        raise MeshJSONError(f"{where}.state: {state!r} is not one of {', '.join(STATES)}")
    addresses = _object(obj.get("addresses", {}), f"{where}.addresses", MAX_ADDRESSES)
    services = _object(obj.get("services", {}), f"{where}.services", MAX_SERVICES)
    return NodeRow(
        id=node_id,
        dc=_text(obj.get("dc", ""), f"{where}.dc"),
        state=state,
        incarnation=_count(obj.get("incarnation", 0), f"{where}.incarnation"),
        age_s=_number(obj.get("age_s", 0.0), f"{where}.age_s"),
        addresses={
            _text(k, f"{where}.addresses key"): _text(v, f"{where}.addresses.{k}")
            for k, v in addresses.items()
        },
        services={
            _text(k, f"{where}.services key"): _service(v, f"{where}.services.{k}")
            for k, v in services.items()
        },
        is_self=node_id == self_id,
    )


def parse_mesh_json(doc: object) -> MeshSnapshot:
    """Check a `/_scale0/mesh` document; rows sorted by dc then id."""
    top = _object(doc, "mesh", 16)
    self_id = _text(top.get("self"), "self")
    nodes = top.get("nodes")
    if not isinstance(nodes, list):
        raise MeshJSONError(f"nodes: expected a list, got {type(nodes).__name__}")
    if len(nodes) > MAX_NODES:
        raise MeshJSONError(f"nodes: more than {MAX_NODES} nodes")
    rows = [_node(n, f"nodes[{i}]", self_id) for i, n in enumerate(nodes)]
    rows.sort(key=lambda r: (r.dc, r.id))
    return MeshSnapshot(self_id=self_id, nodes=tuple(rows))


def _service_cell(load: ServiceLoad | None) -> Text:
    if load is None:
        return Text("—", style="dim")
    busy = "bold red" if load.slots and load.free == 0 else ""
    cell = Text()
    cell.append(f"{load.in_flight}/{load.slots}", style=busy)
    cell.append(f" q{load.queued} w{load.workers}\n")
    cell.append(f"p50 {load.p50_ms:.0f}ms {load.rps:.1f}/s\n")
    cell.append(f"fwd in {load.fwd_in_rps:.1f} out {load.fwd_out_rps:.1f}", style="cyan")
    return cell


def _short_addresses(addresses: Mapping[str, str]) -> str:
    """What an operator dials: the HTTP front door and the peer socket (`--seed`).

    The other endpoints are in `--json`; showing them all made rows four lines tall."""
    shown = [addresses[k] for k in ("http", "peer") if addresses.get(k)]
    if not shown:  # a node that names its endpoints differently: show what there is
        shown = [f"{k} {v}" for k, v in sorted(addresses.items())]
    return "\n".join(shown)


def render_snapshot(snap: MeshSnapshot, title: str | None = None) -> Table:
    """One table row per node; one column per service any node offers."""
    service_names = sorted({name for row in snap.nodes for name in row.services})
    alive = sum(1 for row in snap.nodes if row.state == "alive")
    table = Table(
        title=title,
        caption=f"{len(snap.nodes)} node{'' if len(snap.nodes) == 1 else 's'}, {alive} alive; "
                f"* = {snap.self_id}",
        header_style="bold",
    )
    table.add_column("node", no_wrap=True)
    table.add_column("dc", no_wrap=True)
    table.add_column("state", no_wrap=True)
    # No incarnation column: 13 digits of start-up milliseconds took the width the
    # addresses need at 80 columns (it is in --json, and a restart shows as a new age).
    table.add_column("age", justify="right", no_wrap=True, min_width=5)
    table.add_column("http / peer", style="dim", no_wrap=True)
    for name in service_names:
        table.add_column(f"{name}\nbusy/slots")
    for row in snap.nodes:
        age_style = "yellow" if row.age_s > STALE_AFTER_S else ""
        table.add_row(
            Text(row.id + (" *" if row.is_self else ""), style="bold" if row.is_self else ""),
            Text(row.dc),
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            Text(f"{row.age_s:.1f}s", style=age_style),
            Text(_short_addresses(row.addresses)),
            *(_service_cell(row.services.get(name)) for name in service_names),
        )
    return table


def render_table(doc: object, title: str | None = None) -> Table:
    """Check and draw a mesh document (raises `MeshJSONError` when malformed)."""
    return render_snapshot(parse_mesh_json(doc), title=title)
