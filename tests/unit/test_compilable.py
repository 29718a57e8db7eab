"""What mypyc needs of the modules `make compiled` builds, beyond `mypy --strict`.

mypy lets every `except X as name` of a function bind `name` afresh, but mypyc gives the
name one C variable typed by the first clause and checks each later exception against that
type: a second clause catching another compiled class, or a built-in like OSError, then
raises TypeError instead of running. The compiled front once cut an HTTP/1.0 client's
connection instead of answering 502 that way (test_front's HTTP/1.0 test). One name, one
exception type per function keeps the compiled form doing what the source says.

A dataclass's generated `__init__` runs interpreted even compiled, so the classes made per
request write theirs out (`@dataclass(init=False)`, docs/ARCHITECTURE.md "Compiled or
pure"). Nothing checks such an `__init__` against the fields: it must take them all, in
their order (positional calls and `decode`'s `cls(*values)` rely on it), and a default
factory must still give each instance an object of its own.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

from node.http import Headers, Request, Response
from node.workerpool import Decisions

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


def _init_false(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("dataclass")
            and any(k.arg == "init" and isinstance(k.value, ast.Constant)
                    and k.value.value is False for k in decorator.keywords))


def unlike_fields(source: str) -> list[str]:
    """`Class: why` for each `@dataclass(init=False)` whose `__init__` does not take its
    fields, in their order, and set each one."""
    found = []
    for cls in ast.walk(ast.parse(source)):
        if not (isinstance(cls, ast.ClassDef) and any(map(_init_false, cls.decorator_list))):
            continue
        fields = [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)
                  and isinstance(s.target, ast.Name) and "ClassVar" not in ast.unparse(s)]
        init = next((s for s in cls.body
                     if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
        if init is None:
            found.append(f"{cls.name}: no __init__")
            continue
        args = init.args
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs][1:]
        assigned = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Attribute)
                    and ast.unparse(t.value) == "self"}
        if params != fields:
            found.append(f"{cls.name}: __init__ takes {params}, the fields are {fields}")
        elif not assigned.issuperset(fields):
            found.append(f"{cls.name}: __init__ leaves {sorted(set(fields) - assigned)} unset")
    return found


def test_the_init_rule_finds_a_field_missed_or_moved() -> None:
    good = ("@dataclass(slots=True, init=False)\nclass C:\n    a: int\n    b: str\n"
            "    def __init__(self, a: int, b: str = '') -> None:\n"
            "        self.a = a\n        self.b = b\n")
    assert unlike_fields(good) == []
    assert unlike_fields(good.replace("a: int, b: str = ''", "b: str, a: int")) == [
        "C: __init__ takes ['b', 'a'], the fields are ['a', 'b']"]
    assert unlike_fields(good.replace("self.b = b", "pass")) == ["C: __init__ leaves ['b'] unset"]
    assert unlike_fields(good.replace("init=False", "init=True")) == []


def test_each_written_init_takes_its_dataclass_fields_in_order() -> None:
    problems = [f"{m.relative_to(ROOT)} {p}" for m in compiled_modules()
                for p in unlike_fields(m.read_text())]
    assert not problems, "\n".join(problems)


def test_written_inits_give_each_instance_its_own_default_objects() -> None:
    """A default factory became `None` and a new object in the written __init__ (a mutable
    default in its signature would be one object shared by every instance); an object
    given is kept as it is, even an empty one, and so is a given `received` of 0."""
    first, second = Decisions(), Decisions()
    for name in ("assign", "fail", "dead", "retried"):
        assert getattr(first, name) == [] and getattr(first, name) is not getattr(second, name)
    given: list[int] = []
    assert Decisions(retried=given).retried is given
    one, other = Response(200), Response(200)
    one.headers.add("X-One", "1")
    assert one.headers is not other.headers and len(other.headers) == 0
    headers = Headers()
    assert Response(200, headers).headers is headers
    before = time.monotonic()
    assert before <= Request("GET", "/", headers).received <= time.monotonic()
    assert Request("GET", "/", headers, received=0.0).received == 0.0
