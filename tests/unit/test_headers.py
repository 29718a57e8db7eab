"""node.http.Headers against the plainest model of an ordered, case-insensitive
multi-map: a list of pairs scanned with str.lower on every call."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from node.http import Headers, Request

NAMES = st.sampled_from(["Host", "host", "HOST", "Set-Cookie", "set-cookie", "Via", "X-A", "x-a",
                         "Straße", "İ"])  # non-ASCII names: str.lower must agree on both sides
VALUES = st.sampled_from(["", "1", "a b", "x"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), NAMES, VALUES),
    st.tuples(st.just("set"), NAMES, VALUES),
    st.tuples(st.just("remove"), NAMES, st.just("")),
    st.tuples(st.just("remove_many"), st.sets(NAMES.map(str.lower), max_size=3), st.just("")),
), max_size=20)


class Model:
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = list(items)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.items if k.lower() == name.lower()), None)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.items if k.lower() == name.lower()]

    def apply(self, op: str, name: object, value: str) -> None:
        if op == "add":
            self.items.append((str(name), value))
        elif op == "set":
            n = str(name)
            out, placed = [], False
            for k, v in self.items:
                if k.lower() != n.lower():
                    out.append((k, v))
                elif not placed:
                    out.append((n, value))
                    placed = True
            self.items = out if placed else [*out, (n, value)]
        elif op == "remove":
            self.items = [(k, v) for k, v in self.items if k.lower() != str(name).lower()]
        else:
            assert isinstance(name, set)
            self.items = [(k, v) for k, v in self.items if k.lower() not in name]


@given(st.lists(st.tuples(NAMES, VALUES), max_size=6), OPS)
def test_headers_behave_like_the_plain_model(start: list[tuple[str, str]],
                                             ops: list[tuple[str, object, str]]) -> None:
    headers, model = Headers(start), Model(start)
    for op, name, value in ops:
        getattr(headers, op)(name, value) if op in ("add", "set") else getattr(headers, op)(name)
        model.apply(op, name, value)
        assert headers.items() == model.items
        copy = headers.copy()
        assert copy == headers and copy.items() == model.items
        for probe in ("host", "Set-Cookie", "X-A", "missing", "straße"):
            assert headers.get(probe) == model.get(probe)
            assert headers.get_all(probe) == model.get_all(probe)
            assert (probe in headers) == (model.get(probe) is not None)
        for start_of in ("set-", "x", "st", "\x00"):
            assert headers.has_prefixed(start_of) == any(
                k.lower().startswith(start_of) for k, _ in model.items)
    assert len(headers) == len(model.items) and list(headers) == model.items
    for drop in ({"host"}, {"x-a", "via"}, set()):
        for prefix in ("set-", "", None):  # None: without a prefix (nothing goes by prefix)
            kept = headers.without(drop, prefix) if prefix is not None else headers.without(drop)
            assert kept.items() == [
                (k, v) for k, v in model.items
                if k.lower() not in drop and not (prefix is not None
                                                  and k.lower().startswith(prefix))]
            for probe in ("x-a", "host", "via"):  # its lookups agree with its fields
                assert kept.get_all(probe) == [v for k, v in kept.items() if k.lower() == probe]
            kept.add("X-New", "1")  # a copy: the original does not change with it
            assert headers.items() == model.items


def test_a_copy_is_independent() -> None:
    a = Headers([("X-A", "1")])
    b = a.copy()
    b.add("x-a", "2")
    b.set("Via", "v")
    assert a.get_all("x-a") == ["1"] and "via" not in a
    assert b.get_all("X-A") == ["1", "2"]


def test_with_headers_keeps_every_other_field() -> None:
    r = Request("POST", "/a?b", Headers([("Host", "h")]), b"body", "https", "h", "10.0.0.1",
                "rid", 5.0, 9.0, 1, "svc", True)
    other = Headers([("X", "1")])
    assert r.with_headers(other) == dataclasses.replace(r, headers=other)
    assert len(dataclasses.fields(Request)) == 13  # a new field must be added to with_headers
