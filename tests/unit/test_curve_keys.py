"""CurveZMQ key files: layout errors say what is wrong; certificate metadata never crashes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.curve import AUTHORIZED, CurveError, CurveKeys, _metadata, keygen
from node.keygen import add_keygen_parser


def test_keygen_writes_a_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path, "a")
    assert public.name == "a.key" and secret.name == "a.key_secret"
    assert secret.stat().st_mode & 0o077 == 0
    with pytest.raises(CurveError, match="exists"):
        keygen(tmp_path, "a")
    with pytest.raises(CurveError, match="bad key name"):
        keygen(tmp_path, "../x")


def test_cli_records_where_a_peer_listens(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_keygen_parser(parser.add_subparsers())
    args = parser.parse_args(["keygen", str(tmp_path / "b"), "--name", "b",
                              "--endpoint", "tcp://10.0.0.6:7946", "--host", "10.0.0.7"])
    assert args.func(args) == 0
    assert args.func(args) == 1  # exists: an error message, not a traceback
    node = tmp_path / "n"
    keygen(node)
    (node / AUTHORIZED).mkdir()
    (tmp_path / "b" / "b.key").rename(node / AUTHORIZED / "b.key")
    keys = CurveKeys.load(node)
    key = next(iter(keys.authorized))
    assert keys.server_key_for("tcp://10.0.0.6:7946") == key
    assert keys.server_key_for("tcp://10.0.0.7:1") == key
    with pytest.raises(CurveError, match="no authorized key"):
        keys.server_key_for("tcp://10.0.0.8:7946")


def test_layout_errors_are_the_operators(tmp_path: Path) -> None:
    with pytest.raises(CurveError, match="no such directory"):
        CurveKeys.load(tmp_path / "missing")
    keygen(tmp_path, "w")
    with pytest.raises(CurveError, match=r"node\.key"):
        CurveKeys.load(tmp_path)
    (tmp_path / "node.key").write_text("garbage\n")
    with pytest.raises(CurveError):
        CurveKeys.load(tmp_path)


def test_a_node_keydir_without_authorized_is_said_at_load(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No authorized/ lets nobody in: enforced, but an operator who forgot to copy the
    workers' keys should read why every worker is refused in the node's first lines."""
    keygen(tmp_path)
    with caplog.at_level(logging.WARNING, logger="scale0"):
        assert CurveKeys.load(tmp_path).authorized == frozenset()
    assert any(f"{tmp_path / AUTHORIZED} does not exist" in r.getMessage()
               for r in caplog.records), caplog.records
    caplog.clear()
    (tmp_path / AUTHORIZED).mkdir()
    with caplog.at_level(logging.WARNING, logger="scale0"):
        CurveKeys.load(tmp_path)
    assert not caplog.records


def test_a_bad_authorized_file_is_skipped(tmp_path: Path) -> None:
    keygen(tmp_path)
    (tmp_path / AUTHORIZED).mkdir()
    (tmp_path / AUTHORIZED / "junk.key").write_bytes(b"\xff\x00 not a cert")
    keygen(tmp_path / AUTHORIZED, "ok")
    assert len(CurveKeys.load(tmp_path).authorized) == 1


@given(st.text(max_size=400))
def test_metadata_parser_takes_any_text(tmp_path_factory: pytest.TempPathFactory,
                                        text: str) -> None:
    path = tmp_path_factory.mktemp("m") / "x.key"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    meta = _metadata(path)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
