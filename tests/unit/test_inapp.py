"""load_app's errors and InNodeApp's route matching, on real modules written to disk."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.web
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ConfigError
from node.inapp import InNodeApp, load_app, load_value, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

MODULE = '''
import tornado.web

class H(tornado.web.RequestHandler):
    def get(self, *args):
        self.write("ok")

routes = [(r"/a", H), (r"/items/(\\d+)", H)]
app = tornado.web.Application(routes)
app.add_handlers(r"admin\\.example\\.com", [(r"/only-admin", H)])
def factory():
    return [(r"/made", H)]
def broken_factory():
    raise RuntimeError("no database")
not_rules = 42
bad_rules = [("/x",)]
'''


@pytest.fixture()
def modpath(tmp_path: Path) -> Iterator[str]:
    name = f"inapp_mod_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    (tmp_path / "inapp_broken_import.py").write_text("import does_not_exist_xyz\n")
    (tmp_path / "inapp_raises.py").write_text("raise ValueError('bad setting')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for mod in (name, "inapp_broken_import", "inapp_raises"):
            sys.modules.pop(mod, None)


def test_loads_rules_list_app_and_factory(modpath: str) -> None:
    rules = load_app(f"{modpath}:routes")
    assert len(rules) == 2
    app = InNodeApp(rules)
    assert app.matches("/a") and app.matches("/a?x=1") and app.matches("/items/12")
    assert not app.matches("/items/x") and not app.matches("/b") and not app.matches("")
    made = InNodeApp.from_spec(f"{modpath}:factory")
    assert made.matches("/made") and not made.matches("/a")
    assert len(load_app(f"{modpath}:app")) == 2


def test_application_keeps_host_rules(modpath: str) -> None:
    value = load_value(f"{modpath}:app")
    assert isinstance(value, tornado.web.Application)
    mounted = InNodeApp.from_spec(f"{modpath}:app")
    assert mounted.application is value
    assert mounted.matches("/only-admin", host="admin.example.com")
    assert not mounted.matches("/only-admin", host="www.example.com")
    assert mounted.matches("/a", host="www.example.com")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nocolon", "expected MODULE:ATTR"),
        (":routes", "expected MODULE:ATTR"),
        ("mod:", "expected MODULE:ATTR"),
        ("my-mod:routes", "not a Python name"),
        ("no_such_module_xyz:routes", "no module named 'no_such_module_xyz'"),
        ("inapp_broken_import:routes", "importing inapp_broken_import failed"),
        ("inapp_raises:routes", "ValueError: bad setting"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:not_rules", "got int"),
        ("{mod}:bad_rules", "not valid Tornado URL rules"),
        ("{mod}:broken_factory", "calling broken_factory() failed: RuntimeError"),
    ],
)
def test_bad_specs_say_why(modpath: str, spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_app(spec.format(mod=modpath))
    assert says in str(err.value)


@given(st.text(max_size=40))
def test_parse_spec_any_text(spec: str) -> None:
    try:
        module, attr = parse_spec(spec)
    except ConfigError:
        return
    assert all(p.isidentifier() for p in (*module.split("."), *attr.split(".")))


@given(st.text(max_size=40))
def test_matches_never_raises(path: str) -> None:
    app = InNodeApp([(r"/a/(\w+)", tornado.web.RequestHandler)])
    assert app.matches(path) in (True, False)
    if app.matches("/" + path):
        assert path.startswith("a/")


def test_the_documented_example_mounts() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        app = InNodeApp.from_spec("hello_app:routes")
        assert app.matches("/hello") and app.matches("/echo/abc") and app.matches("/time")
        assert not app.matches("/echo/ABC") and not app.matches("/")
        whole = InNodeApp.from_spec("hello_app:application")
        assert whole.matches("/hello?name=x")
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("hello_app", None)
