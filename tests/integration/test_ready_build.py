"""The node's ready line tells operators which form runs: `build=compiled(N)` when N hot
modules run from their C extensions (`make compiled`), `build=pure` otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from testkit.nodeproc import node_from
from testkit.nodetoml import loopback_listeners

import node.http
from node import buildinfo

pytestmark = pytest.mark.timeout(60)


async def test_the_ready_line_says_compiled_or_pure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scale0.node")
    async with node_from(tmp_path, f'dc = "east"\ncache = "memory"\n{loopback_listeners("n1")}'):
        pass
    ready = [r.getMessage() for r in caplog.records if " ready: http=" in r.getMessage()]
    assert len(ready) == 1
    compiled = buildinfo.compiled_modules()
    if node.http.__file__.endswith(".py"):
        assert not compiled and ready[0].endswith(" build=pure")
    else:
        assert ready[0].endswith(f" build=compiled({len(compiled)})") and compiled
