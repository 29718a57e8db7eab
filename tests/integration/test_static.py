"""StaticFiles driven as a pipeline stage on real files in a temporary directory."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import os
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest

from node.body import read_body
from node.http import Headers, Request, Response
from node.static import IMMUTABLE, StaticConfig, StaticFiles

pytestmark = pytest.mark.timeout(60)

CSS = b"body { color: red; }\n" * 100  # compressible, above gzip_min


async def passthrough(request: Request) -> Response:
    return Response(299, body=b"next", outcome="local")


def call(
    stage: StaticFiles, target: str, method: str = "GET", **headers: str
) -> tuple[Response, bytes]:
    async def go() -> tuple[Response, bytes]:
        fields = Headers([(k.replace("_", "-"), v) for k, v in headers.items()])
        req = Request(method, target, fields)
        resp = await stage(req, passthrough)
        return resp, await read_body(resp.body, 1 << 30)

    return asyncio.run(go())


@pytest.fixture(params=[True, False], ids=["offload", "inline"])
def site(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[StaticFiles, Path]:
    root = tmp_path / "www"
    (root / "css").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "empty").mkdir()
    (root / "index.html").write_bytes(b"<h1>home</h1>")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "css" / "site.css").write_bytes(CSS)
    (root / "app.3f9a1c2b.js").write_bytes(b"console.log(1)")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "pre.js").write_bytes(b"var x = 1;" * 50)
    (root / "pre.js.br").write_bytes(brotli.compress(b"var x = 1;" * 50))
    (root / "pre.js.gz").write_bytes(gzip.compress(b"var x = 1;" * 50))
    (root / ".env").write_bytes(b"SECRET=1")
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    (root / "out").symlink_to(tmp_path / "secret.txt")
    (root / "outdir").symlink_to(tmp_path)
    config = StaticConfig(max_age=42, inline_max=1024, offload=request.param)
    stage = StaticFiles([("/static", str(root))], config)
    return stage, root


def test_plain_get(site: tuple[StaticFiles, Path]) -> None:
    stage, root = site
    resp, body = call(stage, "/static/data.bin")
    assert resp.status == 200 and body == (root / "data.bin").read_bytes()
    assert resp.outcome == "static"
    h = resp.headers
    assert h.get("Content-Type") == "application/octet-stream"
    assert h.get("Content-Length") == str(len(body))
    assert h.get("Cache-Control") == "public, max-age=42"
    assert h.get("Accept-Ranges") == "bytes"
    etag = h.get("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"')
    mtime = os.stat(root / "data.bin").st_mtime
    assert h.get("Last-Modified") == email.utils.formatdate(mtime, usegmt=True)


def test_not_mine_goes_next(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    for target in ("/other", "/staticx/a", "/"):
        resp, body = call(stage, target)
        assert (resp.status, body) == (299, b"next")


def test_conditional_by_etag_and_by_date(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    first, _ = call(stage, "/static/data.bin")
    etag = first.headers.get("ETag") or ""
    lm = first.headers.get("Last-Modified") or ""
    resp, body = call(stage, "/static/data.bin", If_None_Match=etag)
    assert resp.status == 304 and body == b"" and resp.headers.get("ETag") == etag
    resp, _ = call(stage, "/static/data.bin", If_None_Match=f'"x", W/{etag}')
    assert resp.status == 304
    resp, _ = call(stage, "/static/data.bin", If_Modified_Since=lm)
    assert resp.status == 304
    old = email.utils.formatdate(0, usegmt=True)
    resp, _ = call(stage, "/static/data.bin", If_Modified_Since=old)
    assert resp.status == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
    resp, _ = call(stage, "/static/data.bin", If_None_Match='"other"', If_Modified_Since=lm)
    assert resp.status == 200
    resp, _ = call(stage, "/static/data.bin", If_Modified_Since="garbage")
    assert resp.status == 200


def test_if_match_and_if_unmodified_since(site: tuple[StaticFiles, Path]) -> None:
    """RFC 9110 §13.1.1, §13.1.4 and §13.2.2's order, as nginx answers them."""
    stage, _ = site
    first, _ = call(stage, "/static/data.bin")
    etag = first.headers.get("ETag") or ""
    lm = first.headers.get("Last-Modified") or ""
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    for method in ("GET", "HEAD"):
        resp, _ = call(stage, "/static/data.bin", method, If_Match='"zz"')
        assert resp.status == 412
        resp, _ = call(stage, "/static/data.bin", method, If_Unmodified_Since=old)
        assert resp.status == 412
    for fields, status in (({"If_Match": f'"zz", {etag}'}, 200),
                           ({"If_Match": "*"}, 200),
                           ({"If_Match": f"W/{etag}"}, 412),
                           ({"If_Match": etag, "If_Unmodified_Since": old}, 200),
                           ({"If_Unmodified_Since": lm}, 200),
                           ({"If_Unmodified_Since": "garbage"}, 200),
                           ({"If_Unmodified_Since": old, "If_None_Match": etag}, 412),
                           ({"If_Match": etag, "If_None_Match": etag}, 304),
                           ({"If_Match": '"zz"', "Range": "bytes=0-3"}, 412),
                           ({"If_Match": etag, "Range": "bytes=0-3"}, 206)):
        resp, _ = call(stage, "/static/data.bin", **fields)
        assert resp.status == status, fields
    # the ETag compared is the representation's: gzipped on the fly, its own
    gz, _ = call(stage, "/static/css/site.css", Accept_Encoding="gzip")
    gz_etag = gz.headers.get("ETag") or ""
    resp, _ = call(stage, "/static/css/site.css", Accept_Encoding="gzip", If_Match=gz_etag)
    assert resp.status == 200
    resp, _ = call(stage, "/static/css/site.css", If_Match=gz_etag)
    assert resp.status == 412


def test_ranges(site: tuple[StaticFiles, Path]) -> None:
    stage, root = site
    data = (root / "data.bin").read_bytes()
    resp, body = call(stage, "/static/data.bin", Range="bytes=10-19")
    assert resp.status == 206 and body == data[10:20]
    assert resp.headers.get("Content-Range") == f"bytes 10-19/{len(data)}"
    assert resp.headers.get("Content-Length") == "10"
    resp, body = call(stage, "/static/data.bin", Range="bytes=-5")
    assert resp.status == 206 and body == data[-5:]
    resp, body = call(stage, "/static/data.bin", Range="bytes=1000-")
    assert resp.status == 206 and body == data[1000:]
    resp, body = call(stage, "/static/data.bin", Range=f"bytes={len(data)}-")
    assert resp.status == 416 and resp.headers.get("Content-Range") == f"bytes */{len(data)}"
    resp, body = call(stage, "/static/data.bin", Range="bytes=0-1,5-6")
    assert resp.status == 200 and body == data
    etag = resp.headers.get("ETag") or ""
    resp, body = call(stage, "/static/data.bin", Range="bytes=0-1", If_Range=etag)
    assert resp.status == 206 and body == data[:2]
    resp, body = call(stage, "/static/data.bin", Range="bytes=0-1", If_Range='"stale"')
    assert resp.status == 200 and body == data


def test_cache_control(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    resp, body = call(stage, "/static/app.3f9a1c2b.js")
    assert resp.headers.get("Cache-Control") == IMMUTABLE and body == b"console.log(1)"
    assert resp.headers.get("Content-Type") == "text/javascript; charset=utf-8"
    resp, _ = call(stage, "/static/css/site.css?v=abc")
    assert resp.headers.get("Cache-Control") == IMMUTABLE
    resp, _ = call(stage, "/static/css/site.css")
    assert resp.headers.get("Cache-Control") == "public, max-age=42"


def test_precompressed_siblings(site: tuple[StaticFiles, Path]) -> None:
    stage, root = site
    plain = (root / "pre.js").read_bytes()
    resp, body = call(stage, "/static/pre.js", Accept_Encoding="gzip, br")
    assert resp.headers.get("Content-Encoding") == "br"
    assert brotli.decompress(body) == plain
    assert resp.headers.get("Vary") == "Accept-Encoding"
    br_etag = resp.headers.get("ETag")
    resp, body = call(stage, "/static/pre.js", Accept_Encoding="gzip")
    assert resp.headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == plain
    assert resp.headers.get("ETag") != br_etag
    resp, body = call(stage, "/static/pre.js", Accept_Encoding="br;q=0, gzip;q=0")
    assert resp.headers.get("Content-Encoding") is None and body == plain
    assert resp.headers.get("Vary") == "Accept-Encoding"
    resp, _ = call(stage, "/static/pre.js", Accept_Encoding="br", If_None_Match=br_etag or "")
    assert resp.status == 304


def test_gzip_on_the_fly(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    resp, body = call(stage, "/static/css/site.css", Accept_Encoding="gzip")
    assert resp.headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == CSS
    assert resp.headers.get("Content-Length") == str(len(body))
    assert resp.headers.get("Content-Type") == "text/css; charset=utf-8"
    again, body2 = call(stage, "/static/css/site.css", Accept_Encoding="gzip")
    assert body2 == body and again.headers.get("ETag") == resp.headers.get("ETag")
    # not compressible: sent as is
    resp, _ = call(stage, "/static/data.bin", Accept_Encoding="gzip")
    assert resp.headers.get("Content-Encoding") is None


def test_directories(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    resp, body = call(stage, "/static/docs/")
    assert resp.status == 200 and body == b"<h1>docs</h1>"
    resp, _ = call(stage, "/static/docs?x=1")
    assert resp.status == 301 and resp.headers.get("Location") == "/static/docs/?x=1"
    resp, body = call(stage, "/static/")
    assert body == b"<h1>home</h1>"
    resp, _ = call(stage, "/static/empty/")
    assert resp.status == 404


@pytest.mark.parametrize(
    "target",
    ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/css/..%2f..%2fsecret.txt",
     "/static/..%5csecret.txt", "/static/css\\..\\..\\secret.txt", "/static/out",
     "/static/outdir/secret.txt", "/static/.env", "/static/index.html%00.js",
     "/static/missing.txt", "/static/%ff"],
)
def test_traversal_and_missing_are_404(site: tuple[StaticFiles, Path], target: str) -> None:
    stage, _ = site
    resp, body = call(stage, target)
    assert resp.status == 404
    assert b"secret" not in body.lower()


def test_methods(site: tuple[StaticFiles, Path]) -> None:
    stage, _ = site
    resp, body = call(stage, "/static/data.bin", method="HEAD")
    assert resp.status == 200 and body == b"" and resp.headers.get("Content-Length") == "1024"
    resp, _ = call(stage, "/static/data.bin", method="POST")
    assert resp.status == 405 and resp.headers.get("Allow") == "GET, HEAD"


def test_big_file_is_streamed(tmp_path: Path) -> None:
    size = 5 * 1024 * 1024 + 17
    blob = os.urandom(size)
    (tmp_path / "big.bin").write_bytes(blob)
    stage = StaticFiles([("/", str(tmp_path))], StaticConfig(chunk_size=64 * 1024))

    async def go() -> tuple[int, int, bytes]:
        resp = await stage(Request("GET", "/big.bin", Headers()), passthrough)
        assert not isinstance(resp.body, bytes)  # a stream, not the whole file in memory
        chunks = []
        biggest = 0
        while chunk := await resp.body.read():
            biggest = max(biggest, len(chunk))
            chunks.append(chunk)
        return len(chunks), biggest, b"".join(chunks)

    n, biggest, got = asyncio.run(go())
    assert got == blob and biggest <= 64 * 1024 and n >= size // (64 * 1024)


def test_cancelled_stream_closes_its_file(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (2 * 1024 * 1024))
    stage = StaticFiles([("/", str(tmp_path))])

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def go() -> None:
        before = open_fds()
        resp = await stage(Request("GET", "/big.bin", Headers()), passthrough)
        assert not isinstance(resp.body, bytes)
        assert await resp.body.read()
        assert open_fds() == before + 1
        resp.body.cancel()
        assert open_fds() == before
        assert await resp.body.read() == b""

    asyncio.run(go())


def test_bad_mounts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with"):
        StaticFiles([("static", str(tmp_path))])
    with pytest.raises(ValueError, match="not a directory"):
        StaticFiles([("/s", str(tmp_path / "nope"))])
