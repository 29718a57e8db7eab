"""The static path resolver never leaves its root; range and encoding parsing hold their rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.static import (
    acceptable,
    accepted_encodings,
    content_type,
    fingerprinted,
    parse_range,
    resolve,
    safe_parts,
)

# Characters that matter for traversal, mixed with ordinary ones.
_ATOMS = st.sampled_from(
    ["/", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%00", "\x00", "a", "b", "in",
     "secret", "out", "link", "%", "%c0%ae", "%25", "~", "..%2f", "%2e%2e", "index.html", "//"]
)
_PATHS = st.one_of(st.text(max_size=40), st.lists(_ATOMS, max_size=12).map("".join))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("static")
    root = base / "root"
    (root / "in" / "deep").mkdir(parents=True)
    (root / "in" / "a").write_text("a")
    (root / "index.html").write_text("i")
    (base / "secret").write_text("s")
    (root / "link").symlink_to(base)  # a symlink out of the root
    (root / "in" / "ok").symlink_to(root / "in" / "a")  # a symlink that stays inside
    return os.path.realpath(root), str(base)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


@given(_PATHS)
def test_resolve_never_leaves_root(tree: tuple[str, str], url_path: str) -> None:
    root, _ = tree
    got = resolve(root, url_path)
    assert got is None or _inside(root, got)


@given(_PATHS)
def test_safe_parts_are_plain_names(url_path: str) -> None:
    parts = safe_parts(url_path)
    if parts is not None:
        for p in parts:
            assert p and not p.startswith(".")
            assert "/" not in p and "\\" not in p and "\x00" not in p


@pytest.mark.parametrize(
    "url_path",
    ["/../secret", "/%2e%2e/secret", "/%2E%2e/secret", "/in/..%2f..%2fsecret", "/in%2f..%2f..",
     "/..\\secret", "/in\\..\\..\\secret", "/secret%00.html", "/link/secret", "/link",
     "/.hidden", "/%c0%ae%c0%ae/secret", "/in/%ff"],
)
def test_traversal_variants_are_refused(tree: tuple[str, str], url_path: str) -> None:
    root, _ = tree
    assert resolve(root, url_path) is None


def test_plain_paths_resolve(tree: tuple[str, str]) -> None:
    root, _ = tree
    assert resolve(root, "/in/a") == os.path.join(root, "in", "a")
    assert resolve(root, "//in//a") == os.path.join(root, "in", "a")
    assert resolve(root, "/in/ok") == os.path.join(root, "in", "a")
    assert resolve(root, "/") == root
    assert resolve(root, "/in/%61") == os.path.join(root, "in", "a")
    assert Path(root, "in", "a").read_text() == "a"


@given(st.integers(min_value=0, max_value=10**6), st.text(max_size=30))
def test_parse_range_any_header(size: int, header: str) -> None:
    got = parse_range(header, size)
    if isinstance(got, tuple):
        first, last = got
        assert 0 <= first <= last < size


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=2 * 10**6),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2 * 10**6)),
)
def test_parse_range_rules(size: int, first: int, last: int | None) -> None:
    header = f"bytes={first}-{'' if last is None else last}"
    got = parse_range(header, size)
    if last is not None and last < first:
        assert got is None
    elif first >= size:
        assert got is False
    else:
        end = size - 1 if last is None else min(last, size - 1)
        assert got == (first, end)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=2 * 10**6))
def test_parse_suffix_range(size: int, n: int) -> None:
    got = parse_range(f"bytes=-{n}", size)
    if n == 0 or size == 0:
        assert got is False
    else:
        assert got == (max(0, size - n), size - 1)


def test_parse_range_ignored_forms() -> None:
    for header in (None, "", "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=-", "bytes=5",
                   "bytes=\u0661-2"):
        assert parse_range(header, 100) is None


@given(st.text(max_size=60))
def test_accept_encoding_never_raises(header: str) -> None:
    acc = accepted_encodings(header)
    assert all(isinstance(q, float) for q in acc.values())


def test_accept_encoding_q_values() -> None:
    acc = accepted_encodings("gzip;q=0, br;q=0.5, *;q=0.1")
    assert not acceptable(acc, "gzip")
    assert acceptable(acc, "br")
    assert acceptable(acc, "zstd")
    assert not acceptable(accepted_encodings("*;q=0, gzip"), "br")
    assert acceptable(accepted_encodings("x-gzip"), "gzip")
    assert not acceptable(accepted_encodings(None), "gzip")


def test_content_types_and_fingerprints() -> None:
    assert content_type("a.html") == "text/html; charset=utf-8"
    assert content_type("a.js") == "text/javascript; charset=utf-8"
    assert content_type("a.svg") == "image/svg+xml; charset=utf-8"
    assert content_type("a.png") == "image/png"
    assert content_type("noext") == "application/octet-stream"
    # A compressed file asked for by name is the container, never the type inside it.
    assert content_type("pre.css.gz") == "application/gzip"
    assert content_type("backup.tar.gz") == content_type("a.tgz") == "application/gzip"
    assert content_type("pre.css.br") == "application/octet-stream"
    assert content_type("dump.sql.xz") == "application/x-xz"
    assert fingerprinted("app.3f9a1c2b.js", "")
    assert fingerprinted("app-3f9a1c2b.min.js", "")
    assert fingerprinted("app.js", "v=12")
    assert not fingerprinted("app.js", "v=")
    assert not fingerprinted("app.js", "")
    assert not fingerprinted("app.3f9a1c.js", "")  # too short a hash


@given(st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=12),
       st.sampled_from([".css", ".html", ".csv", ".js", ".json", ".tar", ".txt", ""]))
def test_a_gz_file_is_never_labelled_as_its_contents(stem: str, inner: str) -> None:
    assert content_type(f"{stem}{inner}.gz") == "application/gzip"
