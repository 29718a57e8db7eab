"""Static files served by the node itself: a pipeline stage in front of the cache.

Each mount maps a URL prefix to a directory. The stage answers everything under
its prefixes (404 for what is missing, 405 for methods other than GET/HEAD) and
hands every other request to `call_next`.

Decisions are pure functions at the top of this module (which URL path names
which file, which byte range, which encoding, which Cache-Control), so
hypothesis can drive them; `StaticFiles` is the thin shell that stats, opens
and reads files. Safety rules:

- a URL path is split on "/" *before* percent-decoding, and a decoded segment
  holding "/", "\\", NUL or a control character, or starting with "." (so
  "..", "%2e%2e" and dotfiles such as .git), names nothing: 404;
- the candidate is then resolved with realpath and must stay under the
  mount's real root, so a symlink pointing out of the directory is a 404 too;
  the file is opened with O_NOFOLLOW and fstat'ed, so only regular files are
  served; a path ending in "/" names a directory only (nginx: a file asked for
  as `file.txt/` is a 404).

The mount's directory is resolved on every request, as nginx does its `root`: a
deploy that flips a `current` symlink to a new release is served at once. A file is
typed and judged fingerprinted by the name in the URL, never by where a symlink
points (`latest.js -> app.3f9a1c2b.js` is not immutable: it moves at each deploy).
A directory's redirect names the path with its empty segments dropped, so `//docs`
goes to `/docs/`, never to the protocol-relative `//docs/` (another host).

ETags are `"<size>-<mtime_ns>"` in hex (like nginx's, without the inode) so
that every node of the mesh serving the same deployed tree gives the same
validator — deploy with mtimes preserved (rsync -a, COPY). Precompressed
siblings (`file.br`, `file.gz`) are trusted to hold the same content as the
file; they get their own ETag suffix because they are another representation.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import math
import mimetypes
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

from node import preconditions
from node.filestream import FileStream
from node.http import Headers, Request, Response
from node.stage import Next

if TYPE_CHECKING:
    from node.statichits import StaticHits

IMMUTABLE = "public, max-age=31536000, immutable"
ALLOW = "GET, HEAD"

# Types that gzip well; images, fonts (woff2), archives and media do not.
_COMPRESSIBLE = (
    "text/",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/wasm",
    "application/manifest+json",
    "image/svg+xml",
    "image/x-icon",
)
_TEXTUAL = ("text/", "application/javascript", "application/json", "application/xml",
            "image/svg+xml", "application/manifest+json")
# Explicit answers for the web's common types, so the host's /etc/mime.types cannot change them.
_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".map": "application/json",
    ".txt": "text/plain", ".xml": "application/xml", ".svg": "image/svg+xml",
    ".wasm": "application/wasm", ".woff2": "font/woff2", ".woff": "font/woff",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json", ".pdf": "application/pdf",
}
_CONTAINERS = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
               "xz": "application/x-xz", "compress": "application/x-compress"}
_FINGERPRINT = re.compile(r"[.\-_][0-9a-fA-F]{8,}(?=\.)")


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """How static mounts answer. One per node; reloaded as a whole."""

    max_age: int = 60  # Cache-Control max-age for files without a fingerprint
    index: str = "index.html"  # served for a directory; a directory without it is a 404
    chunk_size: int = 256 * 1024  # bytes per read when streaming a file
    inline_max: int = 64 * 1024  # files up to this size are read in one go, not streamed
    gzip_min: int = 256  # smaller files are not worth compressing on the fly
    gzip_max: int = 1024 * 1024  # larger files are sent as they are unless a .gz sibling exists
    gzip_cache_bytes: int = 16 * 1024 * 1024  # memory kept for files compressed on the fly
    # Stat, open and small reads in a worker thread (safe on slow or network disks). False
    # does them on the event loop: 2-3x cheaper per request from the page cache (~75-95 vs
    # ~190-370 µs through the stage, measured on a busy 2-core box), at the risk of
    # stalling the loop whenever the disk stalls.
    offload: bool = True


# -- pure decisions -----------------------------------------------------------


def safe_parts(url_path: str) -> tuple[str, ...] | None:
    """The file-system path segments a URL path (still percent-encoded) names, or None.

    None for anything that could climb out or hide a separator: a segment that
    decodes to something holding "/", "\\", NUL or a control character, one
    that starts with ".", or one that is not valid UTF-8. Empty segments
    ("//") are ignored."""
    parts: list[str] = []
    for raw in url_path.split("/"):
        if not raw:
            continue
        try:
            seg = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
        if seg.startswith(".") or len(seg) > 255:
            return None
        if any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            return None
        parts.append(seg)
    return tuple(parts)


def resolve(root: str, url_path: str) -> str | None:
    """The real path under `root` (already a realpath) that `url_path` names, or None.

    Reads the file system (realpath follows symlinks) but opens nothing; the
    answer, when not None, is `root` itself or lies inside it."""
    parts = safe_parts(url_path)
    if parts is None:
        return None
    real = os.path.realpath(os.path.join(root, *parts))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return real


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """One `Range: bytes=...` against a file of `size` bytes.

    (first, last) inclusive for one satisfiable range; None to ignore the
    header and send the whole file (absent, malformed, other unit, several
    ranges); False when it is unsatisfiable (416)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    for num in (first_s, last_s):
        if num and not (num.isascii() and num.isdigit()):
            return None
    if not dash:
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            return False
        return (max(0, size - suffix), size - 1)
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # syntactically invalid: RFC 9110 says ignore
    if first >= size:
        return False
    return (first, min(int(last_s), size - 1) if last_s else size - 1)


def accepted_encodings(header: str | None) -> dict[str, float]:
    """Accept-Encoding as {coding: q}, lower-cased ("x-gzip" counts as "gzip")."""
    out: dict[str, float] = {}
    if not header:
        return out
    for item in header.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        name = name.lower()
        name = "gzip" if name == "x-gzip" else name
        if name and not math.isnan(q):
            out[name] = q
    return out


def acceptable(accepts: dict[str, float], coding: str) -> bool:
    """Whether `coding` may be sent: named with q > 0, or unnamed and "*" has q > 0."""
    if coding in accepts:
        return accepts[coding] > 0
    return accepts.get("*", 0.0) > 0


def content_type(name: str) -> str:
    """Content-Type for a file name, with charset=utf-8 for text.

    A compressed file asked for by its own name (`data.csv.gz`, `x.tar.gz`) is sent as
    the container it is — `mimetypes` calls it text/csv plus an encoding, and a browser
    told text/csv would show the compressed bytes (nginx: application/gzip too)."""
    ext = os.path.splitext(name)[1].lower()
    inner, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        ctype = _CONTAINERS.get(encoding, "application/octet-stream")
    else:
        ctype = _TYPES.get(ext) or inner or "application/octet-stream"
    if ctype.startswith(_TEXTUAL):
        ctype += "; charset=utf-8"
    return ctype


def compressible(ctype: str) -> bool:
    return ctype.startswith(_COMPRESSIBLE)


def fingerprinted(name: str, query: str) -> bool:
    """True for versioned URLs: `?v=...` or a hex hash of 8+ chars in the file name."""
    if any(v for v in parse_qs(query).get("v", [])):
        return True
    return _FINGERPRINT.search(name) is not None


def gzip_on_the_fly(accepts: dict[str, float], ctype: str, size: int, ranged: bool,
                    config: StaticConfig) -> bool:
    """Whether a file without a chosen precompressed sibling is gzipped for this request:
    the client accepts gzip, the type compresses, the size is worth it, no Range."""
    return (acceptable(accepts, "gzip") and compressible(ctype)
            and config.gzip_min <= size <= config.gzip_max and not ranged)


BR, GZIP = 1, 2  # codings_accepted's bits


def codings_accepted(header: str | None) -> int:
    """All the stage reads of Accept-Encoding (the joined value), as bits: BR and GZIP for
    the codings it may choose that the client accepts. Requests with the same bits get the
    same answer, so the fast wire keys prepared answers by them (node.statichits)."""
    accepts = accepted_encodings(header)
    return (BR if acceptable(accepts, "br") else 0) | (GZIP if acceptable(accepts, "gzip") else 0)


def varies_by_coding(ctype: str, size: int, siblings: bool, config: StaticConfig) -> bool:
    """Whether a whole answer for a file depends on Accept-Encoding at all: a precompressed
    sibling may be chosen, or it may be gzipped on the fly (`gzip_on_the_fly`)."""
    return siblings or (compressible(ctype) and config.gzip_min <= size <= config.gzip_max)


def make_etag(size: int, mtime_ns: int, coding: str = "") -> str:
    return f'"{size:x}-{mtime_ns:x}{"-" + coding if coding else ""}"'


def if_range_holds(header: str | None, etag: str, last_modified: str) -> bool:
    """If-Range: the range applies only if the validator still matches (strong compare)."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith('"') or header.startswith("W/"):
        return header == etag
    return header == last_modified


# -- I/O shell ----------------------------------------------------------------


class StaticFiles:
    """A Stage serving files under each (prefix, directory) mount."""

    def __init__(self, mounts: list[tuple[str, str]], config: StaticConfig | None = None) -> None:
        self.config = config or StaticConfig()
        self._mounts: list[tuple[str, str]] = []
        for prefix, directory in mounts:
            if not prefix.startswith("/"):
                raise ValueError(f"static prefix {prefix!r} must start with '/'")
            if not os.path.isdir(directory):
                raise ValueError(f"static directory {directory!r} ({prefix!r}) is not a directory")
            if any(mounted == prefix.rstrip("/") for mounted, _ in self._mounts):
                raise ValueError(f"static prefix {prefix!r} is mounted twice (the second "
                                 "would never serve a file)")
            # Kept as given (absolute), resolved per request: a symlink may be flipped.
            self._mounts.append((prefix.rstrip("/"), os.path.abspath(directory)))
        self._mounts.sort(key=lambda m: len(m[0]), reverse=True)  # longest prefix wins
        self._gz: OrderedDict[tuple[int, int, int, int], bytes] = OrderedDict()
        self._gz_bytes = 0
        self._gz_lock = threading.Lock()
        # Prepared answers for the fast wire (node/statichits.py), set by node.server.
        self.prepared: StaticHits | None = None

    def match(self, path: str) -> tuple[str, str] | None:
        """(directory, rest of the path) of the mount owning `path`, or None."""
        for prefix, root in self._mounts:
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                return root, path[len(prefix):]
        return None

    async def __call__(self, request: Request, call_next: Next) -> Response:
        found = self.match(request.path)
        if found is None:
            return await call_next(request)
        if request.method not in ("GET", "HEAD"):
            resp = Response.error(405, "static files answer GET and HEAD only")
            resp.headers.add("Allow", ALLOW)
            return _static(resp)
        prepared = self.prepared  # asked on the loop: it is not thread-safe
        hold = prepared.max_body if prepared is not None and prepared.wants(request) else 0
        # Every stat, open and small read happens in one hop to a thread: a slow
        # or network disk must not stall the event loop for other requests.
        if self.config.offload:
            resp, ready, varies = await asyncio.to_thread(self._respond, request, *found, hold)
        else:
            resp, ready, varies = self._respond(request, *found, hold)
        if ready and prepared is not None:  # the fast wire answers the next one itself
            prepared.offer(request, resp, varies=varies)
        return _static(resp)

    def _respond(self, request: Request, directory: str, rest: str,
                 hold: int = 0) -> tuple[Response, bool, bool]:
        """The answer, whether it may be prepared (a whole 200 of a file of at most `hold`
        bytes) and whether it varies on Accept-Encoding."""
        root = os.path.realpath(directory)  # now: a deploy may have flipped a symlink
        real = resolve(root, rest)
        if real is None:
            return Response.error(404, "not found"), False, False
        parts = safe_parts(rest) or ()
        name = parts[-1] if parts else ""  # the name the client asked for
        if os.path.isdir(real):
            if not request.path.endswith("/"):
                return _redirect_to_directory(request.path, request.query), False, False
            real = resolve(root, rest + "/" + self.config.index)
            if real is None:
                return Response.error(404, "not found"), False, False
            name = self.config.index
        elif rest.endswith("/"):
            return Response.error(404, "not found"), False, False  # a file is no directory
        opened = _open_regular(real)
        if opened is None:
            return Response.error(404, "not found"), False, False
        accepts = accepted_encodings(request.headers.get_joined("Accept-Encoding"))
        fd, st, coding, siblings = _pick_encoding(real, opened, accepts)
        varies = varies_by_coding(content_type(name), st.st_size, siblings, self.config)
        ready = hold > 0 and st.st_size <= hold
        try:
            resp, keep_fd = self._file_response(
                request, name, fd, st, coding=coding, siblings=siblings,
                inline_max=st.st_size if ready else self.config.inline_max)
            gzipped = not coding and "Content-Encoding" in resp.headers  # on the fly
            ready = ready and resp.status == 200 and _whole(resp.body, fd, st, not gzipped)
        except BaseException:
            os.close(fd)
            raise
        if not keep_fd:
            os.close(fd)
        return resp, ready, varies

    def _file_response(
        self,
        request: Request,
        name: str,
        fd: int,
        st: os.stat_result,
        *,
        coding: str,
        siblings: bool,
        inline_max: int,
    ) -> tuple[Response, bool]:
        """The response for an open regular file; True if its body now owns `fd`. Bodies up
        to `inline_max` bytes are read at once, larger ones streamed."""
        ctype = content_type(name)
        cfg = self.config
        accepts = accepted_encodings(request.headers.get_joined("Accept-Encoding"))
        headers = Headers([("Content-Type", ctype), ("Accept-Ranges", "bytes")])
        if coding:
            headers.add("Content-Encoding", coding)
        if siblings or compressible(ctype):
            headers.add("Vary", "Accept-Encoding")
        immutable = fingerprinted(name, request.query)
        headers.add("Cache-Control", IMMUTABLE if immutable else f"public, max-age={cfg.max_age}")
        headers.add("X-Content-Type-Options", "nosniff")
        size = st.st_size
        want_gzip = not coding and gzip_on_the_fly(
            accepts, ctype, size, request.headers.get("Range") is not None, cfg)
        tag = {"br": "br", "gzip": "gz"}.get(coding, "gz" if want_gzip else "")
        etag = make_etag(size, st.st_mtime_ns, tag)
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        headers.add("ETag", etag)
        headers.add("Last-Modified", last_modified)
        fields = request.headers
        decided = preconditions.evaluate(
            etag, st.st_mtime, if_match=fields.get_joined("If-Match"),
            if_unmodified_since=fields.get("If-Unmodified-Since"),
            if_none_match=fields.get_joined("If-None-Match"),
            if_modified_since=fields.get("If-Modified-Since"))
        if decided == preconditions.PRECONDITION_FAILED:
            return Response.error(412, "precondition failed"), False
        if decided == preconditions.NOT_MODIFIED:
            return Response(304, headers), False
        if want_gzip:
            body = self._gzipped(fd, st)
            headers.add("Content-Encoding", "gzip")
            headers.add("Content-Length", str(len(body)))
            return Response(200, headers, b"" if request.method == "HEAD" else body), False
        status, first, length = 200, 0, size
        if if_range_holds(request.headers.get("If-Range"), etag, last_modified):
            rng = parse_range(request.headers.get("Range"), size)
            if rng is False:
                resp = Response.error(416, "range not satisfiable")
                resp.headers.add("Content-Range", f"bytes */{size}")
                return resp, False
            if isinstance(rng, tuple):
                status, first, length = 206, rng[0], rng[1] - rng[0] + 1
                headers.add("Content-Range", f"bytes {rng[0]}-{rng[1]}/{size}")
        headers.add("Content-Length", str(length))
        if request.method == "HEAD" or length == 0:
            return Response(status, headers), False
        if length <= inline_max:
            return Response(status, headers, os.pread(fd, length, first)), False
        return Response(status, headers, FileStream(fd, first, length, cfg.chunk_size)), True

    def _gzipped(self, fd: int, st: os.stat_result) -> bytes:
        """The file gzipped, from a small LRU keyed by its identity (runs in a thread)."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._gz_lock:
            hit = self._gz.get(key)
            if hit is not None:
                self._gz.move_to_end(key)
                return hit
        body = gzip.compress(os.pread(fd, st.st_size, 0), compresslevel=6, mtime=0)
        cap = self.config.gzip_cache_bytes
        with self._gz_lock:
            if len(body) <= cap and key not in self._gz:
                self._gz[key] = body
                self._gz_bytes += len(body)
                while self._gz_bytes > cap:
                    _, old = self._gz.popitem(last=False)
                    self._gz_bytes -= len(old)
        return body


def _redirect_to_directory(path: str, query: str) -> Response:
    """301 to the directory `path` names, with a slash: empty segments dropped, so the
    Location never starts with "//" (a protocol-relative URL: another host)."""
    loc = "/" + "".join(seg + "/" for seg in path.split("/") if seg)
    headers = Headers([("Location", loc + ("?" + query if query else "")),
                       ("Content-Length", "0")])
    return Response(301, headers)


def _pick_encoding(
    real: str, opened: tuple[int, os.stat_result], accepts: dict[str, float]
) -> tuple[int, os.stat_result, str, bool]:
    """The file or its best precompressed sibling the client accepts: (fd, stat, coding,
    whether any sibling exists). Closes every descriptor it does not return."""
    fd, st = opened
    coding = ""
    siblings = False
    for enc, ext in (("br", ".br"), ("gzip", ".gz")):
        sib = _open_regular(real + ext)
        if sib is None:
            continue
        siblings = True
        if coding or not acceptable(accepts, enc):
            os.close(sib[0])
            continue
        os.close(fd)
        fd, st = sib
        coding = enc
    return fd, st, coding, siblings


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """An fd and its stat for a regular file; None if missing, a directory, or a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _whole(body: object, fd: int, st: os.stat_result, sized: bool) -> bool:
    """Whether `body` is all of the file as `st` saw it (`sized`: byte for byte, not
    gzipped): not torn by a write meanwhile (a prepared answer is served for up to its
    hold; one torn read must not be)."""
    if not isinstance(body, bytes) or (sized and len(body) != st.st_size):
        return False
    try:
        now = os.fstat(fd)
    except OSError:
        return False
    return (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _static(resp: Response) -> Response:
    resp.outcome = "static"
    return resp
