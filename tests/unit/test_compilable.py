"""What mypyc needs of the modules `make compiled` builds, beyond `mypy --strict`.

mypy lets every `except X as name` of a function bind `name` afresh, but mypyc gives the
name one C variable typed by the first clause and checks each later exception against that
type: a second clause catching another compiled class, or a built-in like OSError, then
raises TypeError instead of running. The compiled front once cut an HTTP/1.0 client's
connection instead of answering 502 that way (test_front's HTTP/1.0 test). One name, one
exception type per function keeps the compiled form doing what the source says.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[Path]:
    lines = (line.split("#", 1)[0].strip()
             for line in (ROOT / "scripts" / "compiled.txt").read_text().splitlines())
    return [ROOT / line for line in lines if line]


def reused_exception_names(source: str) -> list[str]:
    """`function: name bound to A, B` for each except-name caught as different types."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        caught: dict[str, set[str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and node.name:
                what = ast.unparse(node.type) if node.type else "BaseException"
                caught.setdefault(node.name, set()).add(what)
        found += [f"{fn.name}: {name} bound to {', '.join(sorted(types))}"
                  for name, types in caught.items() if len(types) > 1]
    return found


def test_the_rule_finds_a_reused_name_and_passes_distinct_ones() -> None:
    reused = ("def f():\n    try:\n        g()\n    except KeyError as exc:\n        pass\n"
              "    except OSError as exc:\n        pass\n")
    assert reused_exception_names(reused) == ["f: exc bound to KeyError, OSError"]
    distinct = reused.replace("OSError as exc", "OSError as failed")
    same_type = reused.replace("OSError as exc", "KeyError as exc")
    assert reused_exception_names(distinct) == reused_exception_names(same_type) == []


def test_no_compiled_module_binds_one_except_name_to_two_types() -> None:
    modules = compiled_modules()
    assert len(modules) > 20 and all(m.is_file() for m in modules)
    problems = [f"{m.relative_to(ROOT)} {p}" for m in modules
                for p in reused_exception_names(m.read_text())]
    assert not problems, "give each except clause its own name (see this file's docstring):\n" \
        + "\n".join(problems)
