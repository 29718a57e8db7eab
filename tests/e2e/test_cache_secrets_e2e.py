"""A MongoDB URL's password never reaches the node's stderr (the journal), and a store
that cannot be opened stops the node with one line that says so, not a traceback."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from testkit.procs import free_port, scale0_bin

from cache import stores

pytest.importorskip("pymongo")
SECRET = "s3cretPW-QA"


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (f"mongo:mongodb://user:{SECRET}@db1:27017,db2/x?w=1", "mongo:mongodb://user:***@db1:27017,db2/x?w=1"),
        (f"mongo:mongodb://u:{SECRET}/x@y@h/db", "mongo:mongodb://u:***@h/db"),
        ("mongo:mongodb://h:27017/db", "mongo:mongodb://h:27017/db"),
        ("files:/var/cache/scale0?max=1GiB", "files:/var/cache/scale0?max=1GiB"),
    ],
)
def test_redact(spec: str, shown: str) -> None:
    assert stores.redact(spec) == shown


def run_node(tmp: Path, spec: str) -> subprocess.CompletedProcess[str]:
    args = [scale0_bin(), "node", "--id", "s", "--http", f"127.0.0.1:{free_port()}",
            "--admin", f"127.0.0.1:{free_port()}", "--workers", f"tcp://127.0.0.1:{free_port()}",
            "--gossip", f"tcp://127.0.0.1:{free_port()}", "--peer",
            f"tcp://127.0.0.1:{free_port()}", "--cache", spec]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp, check=False)


def test_unreachable_mongo_stops_the_node_in_one_line_without_the_password(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    # The URL's own server-selection timeout is kept (a node gives 5 s otherwise).
    url = f"mongodb://user:{SECRET}@127.0.0.1:{closed}/db?serverSelectionTimeoutMS=300"
    began = time.monotonic()
    done = run_node(tmp_path, f"mongo:{url}")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert time.monotonic() - began < 5, out
    assert SECRET not in out and "Traceback" not in out, out
    assert "cannot open the MongoDB store" in out and f"127.0.0.1:{closed}" in out, out


def test_bad_mongo_url_is_refused_without_the_password(tmp_path: Path) -> None:
    done = run_node(tmp_path, f"mongo:mongodb://user:{SECRET}@127.0.0.1:notaport/db")
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "user:***@" in out, out
    assert SECRET not in out, out
