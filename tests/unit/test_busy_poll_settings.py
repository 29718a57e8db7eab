"""`busy_poll` / `--busy-poll on|off` (node.busypoll): from the file or the flag (the flag
wins), nonsense refused at its line, a change needs a restart; the worker's flag."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from node.checkconfig import check_file
from node.cli import _given, build_parser
from node.config import NodeConfig, load_config
from node.reload import needs_restart
from node.worker.cli import add_worker_parser


def flags(*argv: str) -> dict[str, object]:
    return _given(build_parser().parse_args(["node", *argv]))


def test_off_by_default_and_the_flag_wins_over_the_file(tmp_path: Path) -> None:
    assert NodeConfig().busy_poll is False
    assert flags("--busy-poll", "on") == {"busy_poll": True}
    assert flags("--busy-poll", "off") == {"busy_poll": False}
    f = tmp_path / "node.toml"
    f.write_text("busy-poll = true\n")
    assert load_config(str(f)).busy_poll is True
    assert load_config(str(f), flags("--busy-poll", "off")).busy_poll is False
    assert load_config(str(f), flags("--id", "n")).busy_poll is True


def test_a_word_for_a_boolean_is_refused_at_its_line(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('id = "a"\nbusy_poll = "on"\n')
    ok, message = check_file(str(f))
    assert not ok
    assert message == f"{f}:2: 'busy_poll' must be a bool, not 'on'", message
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "--busy-poll", "yes"])


def test_a_reload_leaves_it_to_a_restart() -> None:
    old = NodeConfig()
    assert "busy_poll" in needs_restart(old, dataclasses.replace(old, busy_poll=True))


def test_the_workers_flag() -> None:
    parser = argparse.ArgumentParser()
    add_worker_parser(parser.add_subparsers())
    args = parser.parse_args(["worker", "--node", "tcp://127.0.0.1:1", "--service", "s",
                              "--app", "m:a"])
    assert args.busy_poll == "off"
    args = parser.parse_args(["worker", "--node", "tcp://127.0.0.1:1", "--service", "s",
                              "--app", "m:a", "--busy-poll", "on"])
    assert args.busy_poll == "on"
