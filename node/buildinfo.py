"""Which form of the hot path runs: compiled (`make compiled`: the modules listed in
scripts/compiled.txt as C extensions next to their .py files, built by mypyc) or pure Python.

`check()` runs once, when the `node` package is imported (every compiled module, in `cache`
too, loads the shared library `node.compiled__mypyc` and so imports `node` first): an
extension older than its .py would run code that is no longer the source, so that stops
the import at once with what to do. It costs one directory listing per package and two
stat calls per extension found.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("node", "cache")  # where compiled modules live
_found: list[str] | None = None


class StaleBuild(SystemExit):
    """A compiled module's .py changed after its extension was built: the process exits
    with this one line (a SystemExit, so every entry point and pytest show just that)."""


def compiled_modules(root: str = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The modules that import from an extension, as paths ('node/http.py'), sorted.

    Raises StaleBuild when one's .py is newer than its extension. An extension with no .py
    beside it (the shared library) is not a module of ours and is not counted.
    """
    found: list[str] = []
    for package in packages:
        try:
            entries = list(os.scandir(os.path.join(root, package)))
        except FileNotFoundError:
            continue
        for entry in entries:
            suffix = next((s for s in EXTENSION_SUFFIXES if entry.name.endswith(s)), None)
            if suffix is None:
                continue
            source = f"{package}/{entry.name[: -len(suffix)]}.py"
            try:
                written = os.stat(os.path.join(root, source)).st_mtime_ns
            except FileNotFoundError:
                continue
            if written > entry.stat().st_mtime_ns:
                raise StaleBuild(f"{source} changed after it was compiled: run make compiled, "
                                 "or make pure to run pure Python")
            found.append(source)
    return sorted(found)


def check() -> None:
    """Fail the import when a compiled module is stale; remember what is compiled."""
    global _found
    _found = compiled_modules()


def describe() -> str:
    """'compiled(N)' when N modules run from extensions, 'pure' when none does (the ready
    log line's `build=`)."""
    found = compiled_modules() if _found is None else _found
    return f"compiled({len(found)})" if found else "pure"
