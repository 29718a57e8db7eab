"""`--check-config` refuses what the node refuses at start, and checks the flags given with it.

Each config here printed "FILE: ok" (exit 0) although `scale0 node` then refused
it; the check now runs the node's own start-up checks (node.security, the
CurveZMQ key directory, the cache store's spec) without binding anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.checkconfig import check_file
from node.cli import main

HEAD = 'id = "a"\nroutes = ["a=b", "c=d", "e=f"]\n'


@pytest.mark.parametrize(("line", "expected"), [
    ('admin = "0.0.0.0:8081"',
     "--admin 0.0.0.0:8081: the admin listener on 0.0.0.0 is not loopback: "
     "give --admin-token-file"),
    ('curve = "/nonexist"', "curve /nonexist: no such directory"),
    ('admin_token_file = "/nonexist"', "--admin-token-file /nonexist: "),
    ('cache = "files:{d}?max=10XB"', "cache: cannot read '10XB' as a size"),
    ('cache = "files:{d}?bogus=1"', "cache: files store: unknown option(s) bogus; known: "),
    ('cache = "foo"', "cache: unknown cache store 'foo'; known stores: files, memory, mongo"),
    ('trusted_proxies = ["x"]', "trusted_proxies: 'x' is not an address or network"),
    ('[workers]\nendpoint = "127.0.0.1:7950"',
     "[workers] endpoint = 127.0.0.1:7950: expected tcp://HOST:PORT or ipc://PATH; "
     "did you mean tcp://127.0.0.1:7950?"),
])
def test_what_the_node_refuses_at_start_is_refused_at_its_line(
        tmp_path: Path, line: str, expected: str) -> None:
    f = tmp_path / "node.toml"
    f.write_text(HEAD + line.format(d=tmp_path / "cache") + "\n")
    ok, message = check_file(str(f))
    assert not ok
    where = f"{f}:{3 + line.count(chr(10))}: "  # the line of the key, after HEAD's two
    assert message.startswith(where), message
    assert expected in message
    assert not (tmp_path / "cache").exists()  # the store was built, never opened


def test_a_bad_token_file_is_named_once(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(HEAD + 'admin_token_file = "/nonexist"\n')
    ok, message = check_file(str(f))
    assert not ok and message.startswith(f"{f}:3: --admin-token-file /nonexist: "), message


def test_flags_given_with_it_are_laid_over_the_file(tmp_path: Path, capsys:
                                                    pytest.CaptureFixture[str]) -> None:
    """`--config a.toml --check-config --id zz --route x.com=q` checks what would run."""
    f = tmp_path / "a.toml"
    f.write_text(HEAD)
    code = main(["node", "--config", str(f), "--check-config", "--id", "zz",
                 "--route", "x.com=q"])
    out = capsys.readouterr().out
    assert code == 0
    assert out == f"{f}: ok (id zz, dc default, 1 route, services: none)\n"


def test_a_wrong_flag_fails_the_check_without_a_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.toml"
    f.write_text(HEAD)
    code = main(["node", "--check-config", str(f), "--seed", "127.0.0.1:7947"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"{f}: --seed 127.0.0.1:7947: expected tcp://HOST:PORT; "
                   "did you mean tcp://127.0.0.1:7947?\n")


def test_a_flag_can_make_a_good_file_fail_as_the_node_would(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text(HEAD)
    assert check_file(str(f))[0]
    ok, message = check_file(str(f), {"admin": "0.0.0.0:8081"})
    assert not ok and "give --admin-token-file" in message


def test_processes_whose_ports_collide_are_refused_at_their_line(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(HEAD + 'processes = 2\ngossip = "tcp://*:7946"\npeer = "tcp://*:8046"\n')
    ok, message = check_file(str(f))
    assert not ok
    assert message.startswith(f"{f}:3: --processes 2: process 1's gossip port 8046 is "
                              "process 0's peer port"), message
