"""The mesh view: the JSON decoder's limits and the rendered table's content."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from gossip.load import ServiceLoad
from mesh.loadtable import STATES, LoadTable
from mesh.view import STATE_STYLES, MeshJSONError, parse_mesh_json, render_table

node_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
loads = st.builds(
    ServiceLoad,
    workers=st.integers(0, 9),
    slots=st.integers(0, 99),
    in_flight=st.integers(0, 99),
    queued=st.integers(0, 9),
    p50_ms=st.floats(0, 1e4, allow_nan=False),
    rps=st.floats(0, 1e4, allow_nan=False),
)
nodes = st.dictionaries(
    node_ids,
    st.tuples(
        st.sampled_from(["east", "west"]),
        st.sampled_from(STATES),
        st.dictionaries(st.sampled_from(["www", "api"]), loads, max_size=2),
    ),
    min_size=1,
    max_size=8,
)


def _doc(spec: dict[str, tuple[str, str, dict[str, ServiceLoad]]]) -> dict[str, Any]:
    self_id = sorted(spec)[0]
    t = LoadTable(self_id)
    for node_id, (dc, state, services) in spec.items():
        t.update(node_id, dc, state, 1, {"peer": f"tcp://{node_id}:7947"}, services, 0.0)
    return json.loads(json.dumps(t.to_json(2.5)))  # type: ignore[no-any-return]


def _text(doc: object, width: int = 220) -> str:
    console = Console(record=True, width=width, color_system="truecolor")
    console.print(render_table(doc))
    return console.export_text()


def _cells(text: str) -> dict[str, list[str]]:
    """First-line cells of each table row, keyed by node id (the self marker dropped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            out[cells[0].removesuffix(" *")] = cells
    return out


@given(nodes)
def test_rendered_table_contains_every_node_and_state(spec: dict) -> None:  # type: ignore[type-arg]
    rows = _cells(_text(_doc(spec)))
    assert set(rows) == set(spec)
    for node_id, (dc, state, _) in spec.items():
        assert rows[node_id][1:3] == [dc, state]


def test_addresses_stay_whole_at_80_columns() -> None:
    """A split port (`127.0.0.1:1838` / `0`) reads as another address."""
    t = LoadTable("east-1")
    for i, node in enumerate(("east-1", "east-2", "west-1")):
        t.update(node, "east", "alive", 1_764_300_000_000 + i,
                 {"http": f"127.0.0.1:1838{i}", "peer": f"tcp://127.0.0.1:1834{i}"},
                 {"default": ServiceLoad(workers=1, slots=4), "api": ServiceLoad(slots=2)}, 0.0)
    text = _text(json.loads(json.dumps(t.to_json(1.0))), width=80)
    for i in range(3):
        assert f"127.0.0.1:1838{i}" in text and f"tcp://127.0.0.1:1834{i}" in text, text


@given(nodes)
def test_the_caption_counts_nodes_in_words(spec: dict) -> None:  # type: ignore[type-arg]
    alive = sum(1 for _, state, _ in spec.values() if state == "alive")
    noun = "node" if len(spec) == 1 else "nodes"
    assert f"{len(spec)} {noun}, {alive} alive;" in _text(_doc(spec))


@given(nodes)
def test_parse_round_trips_the_load_table_json(spec: dict) -> None:  # type: ignore[type-arg]
    doc = _doc(spec)
    snap = parse_mesh_json(doc)
    assert [n.id for n in snap.nodes] == [n["id"] for n in doc["nodes"]]
    for row, node in zip(snap.nodes, doc["nodes"], strict=True):
        assert row.state == node["state"]
        assert {k: v.slots for k, v in row.services.items()} == {
            k: v["slots"] for k, v in node["services"].items()
        }


def test_states_are_coloured() -> None:
    doc = _doc(
        {
            "a": ("east", "alive", {}),
            "b": ("east", "suspect", {}),
            "c": ("west", "dead", {}),
            "d": ("west", "left", {}),
        }
    )
    console = Console(width=200, color_system="truecolor")
    segments = list(console.render(render_table(doc)))
    assert list(_cells(_text(doc))) == ["a", "b", "c", "d"]  # sorted by dc, then id
    assert STATE_STYLES == {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    for state, style in STATE_STYLES.items():
        (seg,) = [s for s in segments if s.text.strip() == state]
        assert seg.style is not None
        if style == "dim":
            assert seg.style.dim
        else:
            assert seg.style.color is not None and seg.style.color.name == style


def test_services_become_columns() -> None:
    doc = _doc(
        {
            "a": ("east", "alive", {"www": ServiceLoad(workers=2, slots=8, in_flight=3)}),
            "b": ("west", "alive", {"api": ServiceLoad(slots=1)}),
        }
    )
    text = _text(doc)
    header = text.splitlines()[1]
    assert "api" in header and "www" in header
    assert "3/8" in text and "w2" in text


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "mesh: expected an object"),
        ({"self": "a"}, "nodes: expected a list"),
        ({"self": 3, "nodes": []}, "self: expected a string"),
        ({"self": "a", "nodes": [{"id": "a", "state": "zombie"}]}, r"nodes\[0\]\.state"),
        (
            {"self": "a", "nodes": [{"id": "a", "state": "alive", "incarnation": -1}]},
            r"nodes\[0\]\.incarnation",
        ),
        (
            {
                "self": "a",
                "nodes": [{"id": "a", "state": "alive", "services": {"www": {"slots": "many"}}}],
            },
            r"nodes\[0\]\.services\.www\.slots",
        ),
        (
            {
                "self": "a",
                "nodes": [
                    {"id": "a", "state": "alive", "services": {"www": {"rps": float("inf")}}}
                ],
            },
            "finite",
        ),
        ({"self": "a", "nodes": [{"id": "\x1b[2J", "state": "alive"}]}, "control characters"),
        ({"self": "a", "nodes": [{"id": "x" * 300, "state": "alive"}]}, "longer than"),
        (
            {"self": "a", "nodes": [{"id": "a", "state": "alive", "incarnation": True}]},
            "non-negative integer",
        ),
    ],
)
def test_malformed_documents_name_the_bad_field(doc: object, where: str) -> None:
    with pytest.raises(MeshJSONError, match=where):
        parse_mesh_json(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
near_docs = st.fixed_dictionaries(
    {
        "self": json_values | node_ids,
        "nodes": st.lists(
            st.fixed_dictionaries(
                {"id": json_values | node_ids, "state": json_values | st.sampled_from(STATES)},
                optional={
                    "dc": json_values,
                    "incarnation": json_values,
                    "age_s": json_values,
                    "addresses": json_values,
                    "services": json_values,
                },
            ),
            max_size=4,
        )
        | json_values,
    }
)


@given(json_values | near_docs)
def test_decoder_never_raises_anything_but_mesh_json_error(doc: object) -> None:
    try:
        snap = parse_mesh_json(doc)
    except MeshJSONError:
        return
    _text({"self": snap.self_id, "nodes": [r.to_json() for r in snap.nodes]})
