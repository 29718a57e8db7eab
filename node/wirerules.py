"""HTTP/1.1 request-head checks and response framing for the fast wire, as pure functions.

llhttp (httptools) parses the bytes; it is strict about most things but lenient
where Tornado is not, so `check_request_head` adds what it lacks, to keep the
rule "everything Tornado >= 6.5.3 rejects, the fast wire rejects too":
HTTP/0.9 and HTTP/2.0 request lines (llhttp accepts both), any
Transfer-Encoding other than exactly `chunked` (llhttp accepts `gzip, chunked`),
and the Host rules Tornado applies in HTTPServerRequest (required in 1.1, one
only, no comma, URI characters only). llhttp itself refuses CL+TE, duplicate
or non-digit Content-Length, obs-fold, CR/NUL/CTL in values, bad chunk sizes
and bare LF. It is stricter than Tornado in a few places (unknown or lower-case
methods, duplicate identical Content-Length, non-ASCII targets, bare LF): those
get a 400 here, never a silent difference in framing.

`frame_response_head` is Tornado's HTTP1Connection.write_headers decision
(node.responsehead.frame, rule for rule), so a handler gets the same bytes on
either server.
Nothing here does I/O; errors are node.errors families carrying their status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http.client import responses as _PHRASES
from typing import Final

from tornado import httputil

from node.errors import ClientError
from node.proxyheaders import is_valid_host
from node.responsehead import FieldMap, Framing, frame, normal_name

# Tornado's field checks (HTTPHeaders.add), over all names / values of a head at once.
_NAMES: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
# What a field value may hold: a tab, visible ASCII, space, obs-text (not the controls and DEL
# Tornado refuses). Deleting these from the joined values leaves nothing for a plain head:
# bytes.translate is a C loop, a quarter of a regex search over a browser's values.
_VALUE_BYTES: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# HTTPHeaders keeps each normalised name's values in `_as_list` (Tornado >= 6.5); without
# it (a future Tornado) request_headers takes the public, slower way.
_AS_LIST: Final = isinstance(getattr(httputil.HTTPHeaders(), "_as_list", None), dict)
_HOST: Final = re.compile(r"(?:[\[\]:A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?")
_DIGITS: Final = re.compile(r"[0-9]+")
# Host values that passed both checks below. A site answers few hosts, and each check is a
# regex call (about half a microsecond) on every request; bounded, so random valid hosts
# cost what they did before.
_ACCEPTED_HOSTS: Final[set[str]] = set()
_ACCEPTED_HOSTS_KEPT: Final = 1024
_VERSIONS: Final = frozenset({"HTTP/1.0", "HTTP/1.1"})


# HeadFacts and PlainHead, values made per request, are not frozen (a frozen __init__ sets
# each field through object.__setattr__) and write their __init__ out (init=False): mypyc
# leaves the one dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True, init=False)
class HeadFacts:
    """What the framing of one request's body and connection depends on."""

    content_length: int | None  # None: no Content-Length (chunked, or no body)
    chunked: bool
    keep_alive: bool
    expect_continue: bool

    def __init__(self, content_length: int | None, chunked: bool, keep_alive: bool,
                 expect_continue: bool) -> None:
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


# Field-name lists that passed `_NAMES`: clients send the same names request after request,
# and a dict lookup costs a fraction of the regex. Bounded like the hosts above.
_NAMES_SEEN: Final[set[bytes]] = set()
_NAMES_SEEN_KEPT: Final = 1024
_NAMES_SEEN_LONGEST: Final = 2048


def plain_fields(fields: list[tuple[bytes, bytes]]) -> bool:
    """Every field name a token and no value with a control character (Tornado's rules:
    the slow path answers 400 otherwise)."""
    names = b"\n".join([n for n, _ in fields])
    if names not in _NAMES_SEEN:
        if _NAMES.fullmatch(names) is None:
            return False
        if len(names) <= _NAMES_SEEN_LONGEST:
            if len(_NAMES_SEEN) >= _NAMES_SEEN_KEPT:
                _NAMES_SEEN.clear()
            _NAMES_SEEN.add(names)
    return not b"\t".join([v for _, v in fields]).translate(None, _VALUE_BYTES)


def request_headers(fields: list[tuple[bytes, bytes]], *,
                    plain: bool = False) -> httputil.HTTPHeaders:
    """The HTTPHeaders Tornado's own parser would make of a request's fields (values
    trimmed of spaces around them); HTTPInputError, as Tornado raises it, for a field it
    refuses. A browser sends a dozen fields: HTTPHeaders.add per field (two regexes and
    three normalisations each) was a tenth of a request, so fields that pass Tornado's
    checks all at once (`plain_fields`, two regex calls) are filled in directly.
    `plain`: the caller already saw `plain_fields(fields)` hold."""
    headers = httputil.HTTPHeaders()
    if not _AS_LIST or not (plain or plain_fields(fields)):
        for name, value in fields:  # the public way, which says what it refuses
            headers.add(name.decode("latin1"), value.decode("latin1").strip(" \t"),
                        _chars_are_bytes=False)
        return headers
    as_list: dict[str, list[str]] = headers._as_list
    for raw_name, raw_value in fields:
        norm = normal_name(raw_name.decode("latin1"))
        text = raw_value.decode("latin1").strip(" \t")
        known = as_list.get(norm)
        if known is None:
            as_list[norm] = [text]
        else:
            known.append(text)
    return headers


_LANE_METHODS: Final = frozenset({b"GET", b"HEAD"})
_LANE_REFUSED: Final = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
_BAD_TARGET: Final = re.compile(rb"[ \t\r\n\x00]")


@dataclass(slots=True, init=False)
class PlainHead:
    """A request head the lane may serve without Tornado's objects (see `plain_head`)."""

    method: str
    target: str  # origin-form, as sent
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    host: str  # lower-cased, port kept
    fields: list[tuple[str, str]]  # in the client's order and case; Host lower-cased
    keep_alive: bool

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, method: str, target: str, version: str, host: str, fields: list[tuple[str, str]],
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.host = host
        self.fields = fields
        self.keep_alive = keep_alive


def plain_head(method: bytes, version: str, url: bytes, fields: list[tuple[bytes, bytes]], *,
               plain: bool = False, no_keep_alive: bool = False) -> PlainHead | None:
    """The head of a bodyless GET or HEAD in origin form that passes every check
    `check_request_head`, `request_headers` and node.proxyheaders.normalise_target make,
    as a request's parts; None when the request needs the Tornado-shaped path: a body
    (or Expect), an upgrade, another method or form, anything those would refuse or
    treat specially. Values are trimmed of spaces around them, as Tornado trims them;
    names keep the client's case (nginx passes them on so). `plain`: the caller already
    saw `plain_fields(fields)` hold."""
    if (method not in _LANE_METHODS or version not in ("1.1", "1.0")
            or not url.startswith(b"/") or _BAD_TARGET.search(url) is not None):
        return None
    if not (plain or plain_fields(fields)):
        return None
    host: str | None = None
    connection: str | None = None
    out: list[tuple[str, str]] = []
    for raw_name, raw_value in fields:
        lname = raw_name.lower()
        value = raw_value.strip(b" \t").decode("latin1")
        if lname == b"host":
            if host is not None:
                return None  # the slow path answers 400
            if value not in _ACCEPTED_HOSTS:
                if "," in value or not _HOST.fullmatch(value) or not is_valid_host(value):
                    return None  # the slow path answers 400
                if len(_ACCEPTED_HOSTS) >= _ACCEPTED_HOSTS_KEPT:
                    _ACCEPTED_HOSTS.clear()
                _ACCEPTED_HOSTS.add(value)
            host = value.lower()
            out.append(("Host", host))
            continue
        if lname in _LANE_REFUSED:
            return None
        if lname == b"connection":  # as HTTPHeaders.get joins repeated fields
            connection = value if connection is None else f"{connection},{value}"
        out.append((raw_name.decode("latin1"), value))
    if host is None:
        return None  # 1.1 refuses it; 1.0 without a Host is rare enough for the slow path
    text_method = method.decode("latin1")
    full_version = "HTTP/" + version
    keep = not no_keep_alive and can_keep_alive(text_method, full_version, connection, False)
    return PlainHead(text_method, url.decode("latin1"), full_version, host, out, keep)


def check_request_head(method: str, target: str, version: str,
                       headers: httputil.HTTPHeaders, *, no_keep_alive: bool = False) -> HeadFacts:
    """Validate a parsed request head; ClientError (400) says what is wrong with it."""
    if version not in _VERSIONS:
        raise ClientError(f"unsupported HTTP version {version[:20]!r}")
    if not target or any(c in target for c in " \t\r\n\x00"):
        raise ClientError("invalid request target")
    te = headers.get_list("Transfer-Encoding")
    cl = headers.get_list("Content-Length")
    chunked = False
    if te:
        if cl:
            raise ClientError("both Content-Length and Transfer-Encoding: an ambiguous body")
        joined = ",".join(te)
        if len(te) != 1 or joined.strip(" \t").lower() != "chunked":
            raise ClientError(f"unsupported Transfer-Encoding {joined[:60]!r}")
        chunked = True
    length: int | None = None
    if cl:
        if len(cl) != 1 or not _DIGITS.fullmatch(cl[0]):
            raise ClientError(f"invalid Content-Length {', '.join(cl)[:60]!r}")
        length = int(cl[0])
    hosts = headers.get_list("Host")
    if len(hosts) > 1:
        raise ClientError("more than one Host header")
    if not hosts and version == "HTTP/1.1":
        raise ClientError("missing Host header (required in HTTP/1.1)")
    if hosts and ("," in hosts[0] or not _HOST.fullmatch(hosts[0])):
        raise ClientError(f"invalid Host header {hosts[0][:100]!r}")
    keep = not no_keep_alive and can_keep_alive(method, version, headers.get("Connection"),
                                                 length is not None or chunked)
    expect = headers.get("Expect") == "100-continue"
    return HeadFacts(length, chunked, keep, expect)


def can_keep_alive(method: str, version: str, connection: str | None, framed: bool) -> bool:
    """Tornado's rule: 1.1 unless `Connection: close`; 1.0 only if asked and delimited."""
    if version == "HTTP/1.1":  # Tornado compares the whole value; a `close` token is enough
        return not connection or "close" not in {t.strip().lower() for t in connection.split(",")}
    if framed or method in ("HEAD", "GET"):
        return (connection or "").lower() == "keep-alive"
    return False


def frame_response_head(request: httputil.RequestStartLine, request_connection: str | None,
                        close: bool, start_line: httputil.ResponseStartLine,
                        headers: httputil.HTTPHeaders) -> Framing:
    """Tornado's server-side write_headers for `headers` (node.responsehead.frame, the
    one implementation). ValueError on CR or LF in a line."""
    fields: FieldMap = {}
    for name, value in headers.get_all():
        fields.setdefault(name, []).append(value)
    return frame(request.method, request.version, start_line.code, start_line.reason, fields,
                 request_connection=request_connection, close=close)


def format_chunk(chunk: bytes, chunking: bool) -> bytes:
    """One piece of body on the wire; an empty chunk writes nothing (0 ends the body)."""
    if chunking and chunk:
        return b"%x\r\n%b\r\n" % (len(chunk), chunk)
    return chunk


def error_response(status: int, reason: str) -> bytes:
    """A complete short plain-text answer that also closes the connection."""
    body = (reason + "\n").encode("utf-8", "replace")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (status, _PHRASES.get(status, "Error").encode(), len(body), body))
