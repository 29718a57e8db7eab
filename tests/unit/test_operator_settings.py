"""Per-service timeouts become deadlines; the access log goes where the config says."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from node.accesslog import access_log
from node.config import from_mapping
from node.http import Headers, Request, Response
from node.logsetup import configure, flush
from node.pipeline import ServiceTimeouts
from node.reload import build


def _request(service: str, deadline: float = 0.0) -> Request:
    return Request("GET", "/", Headers(), received=100.0, deadline=deadline, service=service)


def test_service_timeout_sets_a_deadline_only_when_none_was_given() -> None:
    settings = build(from_mapping({"services": {"api": {"timeout": 2.5}}}))
    stage = ServiceTimeouts(settings.timeouts)
    seen: list[float] = []

    async def call_next(request: Request) -> Response:
        seen.append(request.deadline)
        return Response(200)

    async def run() -> None:
        await stage(_request("api"), call_next)
        await stage(_request("api", deadline=150.0), call_next)  # a forwarded request's own
        await stage(_request("www"), call_next)  # no timeout: the broker's default applies

    asyncio.run(run())
    assert seen == [102.5, 150.0, 0.0]


def test_access_log_to_a_file_as_json_then_off(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    try:
        log = configure(from_mapping({"log_format": "json", "access_log_file": str(path)}), "n1")
        assert log is not None
        request = Request("GET", "/x?y", Headers([("Cookie", "secret=1")]), client="10.0.0.1")
        log.log(request, Response(200, outcome="hit", served_by="n1"), sent_bytes=5,
                duration=0.002)
        assert path.read_text() == ""  # buffered: written by the node's 1 s flush
        flush()
        line = json.loads(path.read_text().splitlines()[-1])
        assert (line["target"], line["status"], line["outcome"], line["node"]) == (
            "/x?y", 200, "hit", "n1")
        assert "secret" not in path.read_text()
        assert configure(from_mapping({"access_log": False}), "n1") is None
        assert access_log.disabled
        handlers = [h for h in access_log.handlers if isinstance(h, logging.FileHandler)]
        assert handlers == []  # the file was closed when the setting changed
    finally:  # leave the shared logger as other tests expect it
        configure(from_mapping({"access_log": False}), "n1")
        access_log.disabled = False
        access_log.propagate = True
