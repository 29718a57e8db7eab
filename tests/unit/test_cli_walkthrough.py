"""What a newcomer types, checked against the real `scale0` parser and commands.

Each test here is a mismatch found by following README.md and every `--help`
from a fresh clone: the forms the docs (or habit from `nginx -t -c FILE`) lead
an operator to type must work, and each `--help` must show an example.
"""

from __future__ import annotations

import contextlib
import io
import select
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.procs import free_port

from node.cli import build_parser, main

GOOD = 'id = "a"\ndc = "east"\nroutes = ["www.example.com=www"]\n'


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusals
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("form", [
    ["node", "--check-config", "{f}"],
    ["node", "--config", "{f}", "--check-config"],
    ["node", "--check-config", "--config", "{f}"],
])
def test_check_config_takes_the_file_either_way(tmp_path: Path, form: list[str]) -> None:
    f = tmp_path / "node.toml"
    f.write_text(GOOD)
    code, out, err = run([a.format(f=f) for a in form])
    assert (code, err) == (0, "")
    assert out.startswith(f"{f}: ok")


def test_check_config_with_the_config_flag_reports_the_line(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(GOOD + "procesess = 2\n")
    code, out, err = run(["node", "--config", str(f), "--check-config"])
    assert code == 2 and out == ""
    assert err.startswith(f"{f}:4: unknown key 'procesess'")


def test_check_config_without_any_file_says_what_it_needs() -> None:
    code, out, err = run(["node", "--check-config"])
    assert code == 2 and out == ""
    assert err.strip() == "scale0: --check-config needs a FILE (or --config FILE)"


def help_text(command: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return str(sub.format_help())


@pytest.mark.parametrize("command", ["node", "worker", "mesh", "purge", "keygen", "demo"])
def test_every_command_help_shows_an_example(command: str) -> None:
    text = help_text(command)
    assert "example" in text and f"scale0 {command}" in text.split("example", 1)[1]


def test_node_help_says_how_flags_become_file_keys() -> None:
    text = help_text("node")
    for needed in ("[workers]", "seeds = [...]", "access_log = true|false", "--check-config"):
        assert needed in text, needed


def test_worker_curve_help_names_the_whole_key_layout() -> None:
    text = " ".join(help_text("worker").split())
    for needed in ("scale0 keygen KEYDIR --name NAME", "node.key", "authorized/"):
        assert needed in text, needed


def test_worker_says_connecting_not_serving_before_the_node_answers() -> None:
    """A worker the node refuses (an unlisted --curve key) must not have logged "serving"."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nobody there: the node never answers
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "worker", "--node", endpoint, "--service", "www",
         "--upstream", "http://127.0.0.1:9"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "the worker logged nothing in 30 s"
        first = proc.stderr.readline()  # its first log line
    finally:
        proc.kill()
        proc.wait(10)
    assert f"connecting to {endpoint} to serve www" in first
    assert "serving" not in first
