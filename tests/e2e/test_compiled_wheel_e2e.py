"""The wheels this tree builds, installed somewhere fresh and run from there.

With SCALE0_COMPILED=1 (`make wheel`, the container image's build stage: both run
`scripts/build_compiled.py --wheel`) the wheel carries the modules of scripts/compiled.txt as
extensions beside their .py files, and a real `scale0 node` run from the install says
`build=compiled(N)`, even when the installer left every .py newer than its extension (the
stale check is for source checkouts). Without the opt-in, `pip wheel .` builds pure Python
in pip's own isolated environment, which has neither mypy nor a use for a compiler.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest
from testkit.nodetoml import loopback_listeners
from testkit.procs import Gone, Proc, wait_until

ROOT = Path(__file__).resolve().parents[2]
# The compiled wheel takes about 12 s where `make compiled` left build/mypyc (make test), and
# 40 s to a minute on 2 cores from nothing (after `make pure`).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _build_script() -> ModuleType:
    """scripts/build_compiled.py, the one place that knows the list and the opt-in."""
    spec = importlib.util.spec_from_file_location("build_compiled",
                                                  ROOT / "scripts" / "build_compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_script()
NO_TOOLCHAIN = build.missing_toolchain()  # why no extension can be built here, or None
SUFFIX = EXTENSION_SUFFIXES[0]  # what build_ext names an extension: .cpython-311-x86_64-...so
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def members(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def pip_install(wheel: Path, target: Path) -> None:
    """The wheel alone into `target`, as a fresh install: on PYTHONPATH it wins over the
    tree's editable install (whose finder comes after the path)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, timeout=120)


def imported_from(site: Path, cwd: Path) -> dict[str, str]:
    """Where `node` and `node.http` come from with only `site` added, and the build they
    report. `cwd` must not hold this tree (a -c script puts it first on the path)."""
    script = ("import json, node, node.http; from node import buildinfo; print(json.dumps("
              "{'node': node.__file__, 'http': node.http.__file__,"
              " 'build': buildinfo.describe()}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    return found


def as_if_the_installer_wrote_sources_last(site: Path) -> None:
    """Every .py a minute newer than every extension: a stale build by the file times."""
    later = time.time_ns() + 60 * 10**9
    for source in site.rglob("*.py"):
        os.utime(source, ns=(later, later))


def ready_line(site: Path, tmp_path: Path) -> str:
    """A real `scale0 node` (python -m node) from `site`: its ready line, then SIGTERM."""
    config = tmp_path / "node.toml"
    config.write_text(f'dc = "east"\ncache = "memory"\n{loopback_listeners("wheel")}')
    node = Proc([sys.executable, "-m", "node", "node", "--config", str(config)],
                tmp_path / "node.log", env={"PYTHONPATH": str(site)}, cwd=tmp_path)

    def ready() -> str | None:
        line = next((ln for ln in node.output().splitlines() if " ready: http=" in ln), None)
        if line is None and not node.alive():
            raise Gone(f"the node exited before it was ready:\n{node.output()}")
        return line

    try:
        line = wait_until(ready, timeout=30, what="the node's ready line")
        assert node.terminate() == 0, node.output()
        return line
    finally:
        node.stop()


@pytest.mark.skipif(NO_TOOLCHAIN is not None,
                    reason=f"{NO_TOOLCHAIN}: the compiled wheel cannot be built here")
def test_the_compiled_wheel_runs_the_listed_modules_from_their_extensions(
        tmp_path: Path) -> None:
    listed: list[str] = build.listed()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_compiled.py"),
                           "--wheel", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    wheel = Path(done.stdout.strip())
    assert wheel.parent == tmp_path / "dist" and wheel.name.endswith(".whl")
    assert f"-{TAG}-{TAG}-" in wheel.name, wheel.name  # a platform wheel, for this Python
    names = members(wheel)
    for module in listed:
        assert {module, module.removesuffix(".py") + SUFFIX} <= names, module
    assert f"node/compiled__mypyc{SUFFIX}" in names  # the library they share
    assert not any(name.startswith("scripts/") for name in names)

    site = tmp_path / "site"
    pip_install(wheel, site)
    as_if_the_installer_wrote_sources_last(site)
    found = imported_from(site, tmp_path)
    assert found["node"] == str(site / "node" / "__init__.py")
    assert found["http"] == str(site / "node" / f"http{SUFFIX}")
    assert found["build"] == f"compiled({len(listed)})"
    assert ready_line(site, tmp_path).endswith(f" build=compiled({len(listed)})")


def test_without_the_opt_in_the_wheel_is_pure(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != build.OPT_IN}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
                   env=env, check=True, timeout=120)
    [wheel] = (tmp_path / "dist").glob("scale0-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = members(wheel)
    assert not [n for n in names if any(n.endswith(s) for s in EXTENSION_SUFFIXES)]
    assert "node/http.py" in names

    site = tmp_path / "site"
    pip_install(wheel, site)
    found = imported_from(site, tmp_path)
    assert found == {"node": str(site / "node" / "__init__.py"),
                     "http": str(site / "node" / "http.py"), "build": "pure"}
