"""docs/in-node-handlers.md, run as a reader runs it: its "Try it" block in bash from the
repository's top folder, on ports other than the defaults (a reader whose 8080 is taken
changes the block's first line, and nothing else), each curl's output equal to the
answer written after it; its refused `--app` specs with the very lines the node prints;
its config-file form accepted by `--check-config`. The block's defaults are README.md's
"Ports" table's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "in-node-handlers.md").read_text()
DEFAULTS = {"HTTP": 8080, "ADMIN": 8081, "WORKERS": 7950, "GOSSIP": 7946, "PEER": 7947}
PORTS_LINE = " ".join(f"{name}={port}" for name, port in DEFAULTS.items())


def env() -> dict[str, str]:
    """The reader's shell: the venv's commands first on PATH, docs/examples importable."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": "docs/examples"}


def try_it_block() -> list[str]:
    found = re.search(r"^Try it\b.*?^```\w*\n(.*?)^```$", DOC, re.DOTALL | re.MULTILINE)
    assert found, "no Try it block"
    return found.group(1).splitlines()


def test_the_block_names_its_ports_in_its_first_line_with_readmes_defaults() -> None:
    assert try_it_block()[0] == PORTS_LINE
    readme = (ROOT / "README.md").read_text()
    for row, port in (("HTTP", 8080), ("admin", 8081), ("workers", 7950), ("gossip", 7946),
                      ("peer", 7947)):
        line = next(x for x in readme.splitlines() if x.startswith(f"| {row} | "))
        assert f":{port}`" in line, line


def test_try_it_runs_on_other_ports_and_answers_as_written() -> None:
    lines = try_it_block()
    assert lines[0] == PORTS_LINE
    ports = {name: free_port() for name in DEFAULTS}
    script, expected = [" ".join(f"{n}={p}" for n, p in ports.items())], []
    for line in lines[1:]:
        if line.startswith("curl "):  # its output, between markers, against its comment
            answer = line.partition("  # ")[2].strip()
            assert answer, f"no answer written after {line!r}"
            expected.append(answer.replace(str(DEFAULTS["HTTP"]), str(ports["HTTP"])))
            script += ["echo @@curl", line, "echo"]
        else:
            script.append(line)
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    prelude, *outputs = done.stdout.split("@@curl\n")
    assert prelude == "", done.stdout
    assert [out.strip() for out in outputs] == expected, done.stderr
    assert f"127.0.0.1:{ports['HTTP']}" in done.stderr  # the node's access lines


def test_the_refused_specs_are_the_lines_the_node_prints() -> None:
    refused = [line for line in DOC.splitlines() if line.startswith("scale0: --app '")]
    assert len(refused) == 4
    for line in refused:
        spec = line.split("'")[1]
        done = subprocess.run(["scale0", "node", "--app", spec], cwd=ROOT, env=env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        assert (done.returncode, done.stderr) == (2, line + "\n"), done


def test_the_config_file_form_is_accepted(tmp_path: Path) -> None:
    found = re.search(r"^```toml\n(app = .*?)\n```$", DOC, re.MULTILINE)
    assert found
    conf = tmp_path / "node.toml"
    conf.write_text(found.group(1) + "\n")
    done = subprocess.run(["scale0", "node", "--check-config", str(conf)], cwd=ROOT,
                          env=env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith(f"{conf}: ok "), done
