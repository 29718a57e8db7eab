"""`return_memory_after` / `--return-memory-after` (node.heaptrim): from the file or the flag
(the flag wins), nonsense refused at its line, applied by a reload; the worker's flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from node.checkconfig import check_file
from node.cli import _given, build_parser, main
from node.config import NodeConfig, from_mapping, load_config
from node.errors import ConfigError
from node.reload import needs_restart
from node.worker.cli import add_worker_parser


def flags(*argv: str) -> dict[str, object]:
    return _given(build_parser().parse_args(["node", *argv]))


def test_default_flag_and_file(tmp_path: Path) -> None:
    assert NodeConfig().return_memory_after == 10.0
    assert flags("--return-memory-after", "2.5") == {"return_memory_after": 2.5}
    f = tmp_path / "node.toml"
    f.write_text("return-memory-after = 30\n")  # - or _, an int as seconds
    assert load_config(str(f)).return_memory_after == 30.0
    assert load_config(str(f), flags("--return-memory-after", "0")).return_memory_after == 0.0
    assert load_config(str(f), flags("--id", "n")).return_memory_after == 30.0


@pytest.mark.parametrize(("value", "message"), [
    (-1, "node.toml: 'return_memory_after' must not be negative, got -1.0"),
    ("10s", "node.toml: 'return_memory_after' must be a float, not '10s'"),
    (float("nan"), "node.toml: 'return_memory_after' must be a number of seconds (0: never), "
                   "not nan"),
    (float("inf"), "node.toml: 'return_memory_after' must be a number of seconds (0: never), "
                   "not inf"),
])
def test_nonsense_is_refused_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"return_memory_after": value}, "node.toml")
    assert str(err.value) == message


def test_check_config_points_at_the_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "node.toml"
    f.write_text('id = "a"\nreturn_memory_after = nan\n')
    ok, message = check_file(str(f))
    assert not ok and message.startswith(f"{f}:2: 'return_memory_after' must be"), message
    f.write_text('id = "a"\nreturn_memory_after = 0\n')
    assert check_file(str(f))[0]
    assert main(["node", "--check-config", str(f), "--return-memory-after", "inf"]) == 2
    assert capsys.readouterr().err == (f"{f}: command line: --return-memory-after must be a "
                                       "number of seconds (0: never), not inf\n")


def test_a_reload_applies_it() -> None:
    assert needs_restart(from_mapping({}), from_mapping({"return_memory_after": 0})) == []


def test_help_says_what_it_does_for_a_newcomer() -> None:
    node = build_parser()._subparsers._group_actions[0].choices["node"]  # type: ignore[union-attr]
    text = " ".join(node.format_help().split())
    assert "--return-memory-after SECONDS" in text
    assert "give the memory the spike left back to the OS" in text
    assert "0 = never; default: 10" in text
    assert "logging and return_memory_after" in text  # what SIGHUP reloads


def worker_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_worker_parser(parser.add_subparsers())
    return parser.parse_args(["worker", "--node", "tcp://127.0.0.1:9", "--service", "www",
                              "--upstream", "http://127.0.0.1:9", *argv])


def test_the_worker_flag() -> None:
    assert worker_args().return_memory_after == 10.0
    assert worker_args("--return-memory-after", "0").return_memory_after == 0.0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            worker_args("--return-memory-after", bad)
