"""Static files through a whole `Node` in this process (fast wire, real loopback sockets,
real files and symlinks), where nginx and Scale0 used to part ways: a directory asked
for with doubled slashes, a file asked for as a directory, a symlink to a fingerprinted
name, and a mount whose directory is a symlink a deploy flips to a new release."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from testkit.nodeproc import node_from
from testkit.nodetoml import loopback_listeners
from testkit.rawhttp import read_answer

from node.server import Node

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    for release, text in (("r1", b"one\n"), ("r2", b"two\n")):
        www = tmp_path / release
        (www / "docs").mkdir(parents=True)
        (www / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
        (www / "v.txt").write_bytes(text)
        (www / "app.3f9a1c2b.js").write_bytes(b"console.log(1)")
        (www / "latest.js").symlink_to("app.3f9a1c2b.js")
        (www / "latest").symlink_to("app.3f9a1c2b.js")
    (tmp_path / "current").symlink_to(tmp_path / "r1")
    toml = f"""
http_server = "fast"
cache = "off"
access_log = false
static = ["/s={tmp_path / 'current'}", "/={tmp_path / 'current'}"]
{loopback_listeners("n1")}
"""
    async with node_from(tmp_path, toml) as n:
        yield n


async def get(node: Node, target: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
    head, body = await read_answer(reader)
    writer.close()
    lines = head.decode("latin1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


@pytest.mark.parametrize(("target", "location"), [
    ("//docs", "/docs/"),  # was "//docs/": a protocol-relative URL, a redirect to host "docs"
    ("//docs?x=1", "/docs/?x=1"),
    ("/s//docs", "/s/docs/"),
    ("/s/docs", "/s/docs/"),
])
async def test_a_directory_redirect_never_names_another_host(
        node: Node, target: str, location: str) -> None:
    status, fields, _ = await get(node, target)
    assert (status, fields.get("location")) == (301, location)


@pytest.mark.parametrize("target", ["/s/v.txt/", "/s/docs/index.html/", "/v.txt/"])
async def test_a_file_asked_for_as_a_directory_is_not_found(node: Node, target: str) -> None:
    status, _, body = await get(node, target)  # nginx: 404 (ENOTDIR); it used to be the file
    assert status == 404, body


async def test_a_symlink_is_cached_by_its_own_name_not_its_targets(node: Node) -> None:
    status, fields, body = await get(node, "/s/latest.js")
    assert status == 200 and body == b"console.log(1)"
    # latest.js is repointed at each deploy: its URL is not fingerprinted, never immutable
    assert fields["cache-control"] == "public, max-age=60"
    assert fields["content-type"].startswith("text/javascript")
    status, fields, _ = await get(node, "/s/latest")  # typed by its URL, as nginx does
    assert status == 200 and fields["content-type"] == "application/octet-stream"
    status, fields, _ = await get(node, "/s/app.3f9a1c2b.js")
    assert status == 200 and "immutable" in fields["cache-control"]


async def test_a_mount_follows_its_symlink_when_a_deploy_flips_it(
        node: Node, tmp_path: Path) -> None:
    # A range request takes the slow path each time (never a prepared answer).
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    ask = b"GET /s/v.txt HTTP/1.1\r\nHost: a.test\r\nRange: bytes=0-2\r\n\r\n"
    writer.write(ask)
    assert (await read_answer(reader))[1] == b"one"
    flip = tmp_path / "current.new"
    flip.symlink_to(tmp_path / "r2")
    os.replace(flip, tmp_path / "current")  # an atomic deploy, as Capistrano does it
    writer.write(ask)
    assert (await read_answer(reader))[1] == b"two"  # nginx: the new release at once
    writer.close()
