"""Compiled or pure (node/buildinfo.py): which modules run from an extension, and in a source
checkout a stale one (its .py changed after it was built) stops the import with one line
saying what to do; an installed package's file times are the installer's, and not judged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import node
import node.http
from node import buildinfo

SUFFIX = EXTENSION_SUFFIXES[0]
STALE = ("node/http.py changed after it was compiled: run make compiled, "
         "or make pure to run pure Python")


def tree(root: Path, *, stale: bool = False, checkout: bool = True) -> Path:
    """node/ and cache/ with one compiled module each, the shared library, a pure module; a
    source checkout's (scripts/compiled.txt beside them) or, if not, an installed one's."""
    if checkout:
        (root / "scripts").mkdir()
        (root / "scripts" / "compiled.txt").write_text("node/http.py\ncache/key.py\n")
    for package in ("node", "cache"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    for source in ("node/http.py", "cache/key.py", "node/config.py"):
        (root / source).write_text("")
    for built in (f"node/http{SUFFIX}", f"cache/key{SUFFIX}", f"node/compiled__mypyc{SUFFIX}"):
        (root / built).write_bytes(b"")
    written = os.stat(root / f"node/http{SUFFIX}").st_mtime_ns
    later, earlier = written + 1_000_000_000, written - 1_000_000_000
    os.utime(root / "node/http.py", ns=(later, later) if stale else (earlier, earlier))
    os.utime(root / "cache/key.py", ns=(earlier, earlier))
    return root


def test_the_extensions_with_a_source_are_the_compiled_modules(tmp_path: Path) -> None:
    assert buildinfo.compiled_modules(str(tree(tmp_path))) == ["cache/key.py", "node/http.py"]


def test_subpackages_and_every_package_count_and_data_folders_do_not(tmp_path: Path) -> None:
    root = tree(tmp_path)
    for package in ("node/worker", "mesh"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "sdk.py").write_text("")
        (root / package / f"sdk{SUFFIX}").write_bytes(b"")
        os.utime(root / package / "sdk.py", ns=(0, 0))
    (root / "node" / "static").mkdir()  # not a package: files served, never imported
    (root / "node" / "static" / "x.py").write_text("")
    (root / "node" / "static" / f"x{SUFFIX}").write_bytes(b"")
    assert buildinfo.compiled_modules(str(root)) == [
        "cache/key.py", "mesh/sdk.py", "node/http.py", "node/worker/sdk.py"]
    later = os.stat(root / "node" / "worker" / f"sdk{SUFFIX}").st_mtime_ns + 1_000_000_000
    os.utime(root / "node" / "worker" / "sdk.py", ns=(later, later))
    with pytest.raises(buildinfo.StaleBuild, match=r"node/worker/sdk\.py changed after"):
        buildinfo.compiled_modules(str(root))


def test_none_built_is_pure(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "http.py").write_text("")
    assert buildinfo.compiled_modules(str(tmp_path)) == []


def test_a_source_newer_than_its_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(buildinfo.StaleBuild) as refused:
        buildinfo.compiled_modules(str(tree(tmp_path, stale=True)))
    assert str(refused.value) == STALE


def test_an_installed_package_is_not_judged_by_its_file_times(tmp_path: Path) -> None:
    """A wheel's .py files and extensions come from one build; the installer wrote them in
    its own order, so a .py newer than its extension says nothing there."""
    root = tree(tmp_path, stale=True, checkout=False)
    assert not buildinfo.is_checkout(str(root))
    assert buildinfo.compiled_modules(str(root)) == ["cache/key.py", "node/http.py"]


def test_this_tree_is_a_checkout() -> None:
    assert buildinfo.is_checkout()


def test_a_stale_extension_stops_the_import_of_node_with_one_line(tmp_path: Path) -> None:
    root = tree(tmp_path, stale=True)
    for name in ("__init__.py", "buildinfo.py"):  # the real package's start, on the fake tree
        shutil.copy(Path(node.__file__).parent / name, root / "node" / name)
    done = subprocess.run([sys.executable, "-c", "import node"], cwd=root, check=False,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert (done.returncode, done.stderr) == (1, STALE + "\n")


def test_describe_says_what_this_process_runs() -> None:
    compiled = not node.http.__file__.endswith(".py")
    expected = f"compiled({len(buildinfo.compiled_modules())})" if compiled else "pure"
    assert buildinfo.describe() == expected
    assert ("node/http.py" in buildinfo.compiled_modules()) == compiled
