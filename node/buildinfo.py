"""Which form of the hot path runs: compiled (the modules listed in scripts/compiled.txt as C
extensions next to their .py files, built by mypyc: `make compiled` in a source checkout, or
a compiled wheel) or pure Python.

`check()` runs once, when the `node` package is imported (every compiled module, in `cache`
too, loads the shared library `node.compiled__mypyc` and so imports `node` first): in a
source checkout an extension older than its .py would run code that is no longer the
source, so that stops the import at once with what to do. It costs one directory listing
per package and two stat calls per extension found.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("node", "cache", "mesh", "gossip")  # where compiled modules may live, at any depth
# Beside the packages in a source checkout only: the list `make compiled` builds from.
CHECKOUT_MARK = os.path.join("scripts", "compiled.txt")
_found: list[str] | None = None


class StaleBuild(SystemExit):
    """A compiled module's .py changed after its extension was built: the process exits
    with this one line (a SystemExit, so every entry point and pytest show just that)."""


def is_checkout(root: str = ROOT) -> bool:
    """Whether the packages under `root` are a source checkout's, where the .py files are
    edited and `make compiled` builds each extension beside its own.

    Only there can an extension be stale, and only there do file times tell: in an installed
    package (a compiled wheel) the .py files and extensions came out of one build, and the
    installer wrote them in its own order at its own times (pip: as it unpacks each), so
    comparing them there would refuse a sound install at random. A checkout is known by
    scripts/compiled.txt, the list the build reads, which no wheel carries. A marker written
    at wheel build time would say the same from the other side, but every way of building
    (wheel, sdist, editable) would have to write it and one that did not would misfire again;
    the list is beside the packages wherever extensions are built next to edited sources
    (a checkout, an unpacked sdist, an editable install).
    """
    return os.path.isfile(os.path.join(root, CHECKOUT_MARK))


def _package_entries(root: str, packages: tuple[str, ...]
                     ) -> list[tuple[str, list[os.DirEntry[str]]]]:
    """Each package and subpackage (a folder with an __init__.py) under `root`, as its path
    ('node/worker') and its entries."""
    out: list[tuple[str, list[os.DirEntry[str]]]] = []
    todo = list(packages)
    while todo:
        package = todo.pop()
        try:
            entries = list(os.scandir(os.path.join(root, package)))
        except FileNotFoundError:
            continue
        if not any(e.name == "__init__.py" for e in entries):
            continue  # data (node/static), not a package
        out.append((package, entries))
        todo += [f"{package}/{e.name}" for e in entries
                 if e.is_dir() and not e.name.startswith(("_", "."))]
    return out


def compiled_modules(root: str = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The modules that import from an extension, as paths ('node/http.py'), sorted.

    Raises StaleBuild when, in a source checkout, one's .py is newer than its extension. An
    extension with no .py beside it (the shared library) is not a module of ours and is not
    counted.
    """
    checked = is_checkout(root)
    found: list[str] = []
    for package, entries in _package_entries(root, packages):
        for entry in entries:
            suffix = next((s for s in EXTENSION_SUFFIXES if entry.name.endswith(s)), None)
            if suffix is None:
                continue
            source = f"{package}/{entry.name[: -len(suffix)]}.py"
            try:
                written = os.stat(os.path.join(root, source)).st_mtime_ns
            except FileNotFoundError:
                continue
            if checked and written > entry.stat().st_mtime_ns:
                raise StaleBuild(f"{source} changed after it was compiled: run make compiled, "
                                 "or make pure to run pure Python")
            found.append(source)
    return sorted(found)


def check() -> None:
    """Fail the import when a checkout's compiled module is stale; remember what is
    compiled."""
    global _found
    _found = compiled_modules()


def describe() -> str:
    """'compiled(N)' when N modules run from extensions, 'pure' when none does (the ready
    log line's `build=`)."""
    found = compiled_modules() if _found is None else _found
    return f"compiled({len(found)})" if found else "pure"
