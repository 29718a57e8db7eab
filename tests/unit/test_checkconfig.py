"""`--check-config`: errors point at FILE:LINE; `locate` finds keys in generated files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.checkconfig import check_file, locate

idents = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@st.composite
def toml_files(draw: st.DrawFn) -> tuple[str, dict[tuple[tuple[str, ...], str], int]]:
    """A TOML text of tables and keys, blank and comment lines, and where each key is."""
    lines: list[str] = []
    where: dict[tuple[tuple[str, ...], str], int] = {}
    tables: list[tuple[str, ...]] = [()]
    tables += draw(st.lists(st.tuples(idents) | st.tuples(idents, idents), max_size=4,
                            unique=True))
    for table in tables:
        if table:
            lines.append("[" + ".".join(table) + "]  # a comment")
        for key in draw(st.lists(idents, max_size=4, unique=True)):
            if draw(st.booleans()):
                lines.append("# " + key + " = 1")  # a commented-out key is not the key
            if draw(st.booleans()):
                lines.append("")
            lines.append(f"{key} = {draw(st.integers(0, 9))}")
            where.setdefault((table, key), len(lines))
    return "\n".join(lines) + "\n", where


@given(toml_files())
def test_locate_finds_every_key(doc: tuple[str, dict[tuple[tuple[str, ...], str], int]]) -> None:
    text, where = doc
    for (table, key), line in where.items():
        assert locate(text, table, key) == line
        assert key in text.splitlines()[line - 1]


@given(st.text(max_size=200), st.lists(idents, max_size=2).map(tuple), idents)
def test_locate_never_fails_on_any_text(text: str, table: tuple[str, ...], key: str) -> None:
    line = locate(text, table, key)
    assert line is None or 1 <= line <= len(text.splitlines())


def test_locate_falls_back_to_the_table_header() -> None:
    text = 'id = "a"\n\n[services.www]\ntimeout = 3\n[services."api.v2"]\n'
    assert locate(text, ("services", "www"), "overflow") == 3
    assert locate(text, ("services",), "www") == 3  # a table named by its parent
    assert locate(text, ("services", "api.v2"), "x") == 5
    assert locate(text, (), "route") is None
    assert locate('route = ["a=b"]\n', (), "routes") == 1  # the flag's singular name


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('id = "a"\nhttp = 8080\n', 2, "'http' must be a str"),
    ('id = "a"\n\n[limits]\nmax_body_size = -3\n', 4, "must not be negative"),
    ('id = "a"\n[services.www]\nroutes = ["w.test"]\noverflow = "up"\n', 4, "all, dc or none"),
    ('[services.www]\nroutes = ["w w"]\n', 2, "characters a host name"),
    ('route = ["nonsense"]\n', 1, "HOST[/PREFIX]=SERVICE"),
    ('static = ["/s=/does/not/exist"]\n', 1, "not a directory"),
    ('[cache]\nstore = "memory"\nmax_object_size = 0\n', 3, "max_object_size"),
    ('[cache]\nstore = "memory"\nno_such = 1\n', 3, "no_such"),
    ('cache = "tape:/dev/st0"\n', 1, "unknown cache store"),
    ('app = "no_such_module_here:routes"\n', 1, "not on the Python path"),
    ('[replication]\nscope = "galaxy"\n', 2, "scope"),
    ('id = "a"\nhttps = ":8443"\n', 2, "needs both"),
    ('id = "a"\nid = "b"\n', 2, "not valid TOML"),
    ('log_format = "xml"\n', 1, "text or json"),
])
def test_bad_files_point_at_the_line(tmp_path: Path, text: str, line: int,
                                     fragment: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    ok, message = check_file(str(path))
    assert not ok
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


def test_good_file(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    path = tmp_path / "node.toml"
    path.write_text(f'id = "a"\nstatic = ["/s={tmp_path / "public"}"]\n[cache]\nstore = "memory"\n'
                    '[services.www]\nroutes = ["www.test"]\nstale_if_error = 60\n')
    ok, message = check_file(str(path))
    assert ok and message == f"{path}: ok (id a, dc default, 1 route, services: www)"


def test_unreadable_file(tmp_path: Path) -> None:
    ok, message = check_file(str(tmp_path / "missing.toml"))
    assert not ok and "cannot read" in message
