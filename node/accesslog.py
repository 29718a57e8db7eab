"""The access log: one line per request, as text or JSON, through the `scale0.access` logger.

Fields: time (UTC, ms), request id, client, method, target, status, bytes
sent, duration in ms, outcome (local, forwarded, hit, ...), serving node,
worker; then service and host, and any extra request headers the operator
asked for. Building the record and formatting it are pure (the clock is an
argument); `AccessLog.log` only adds the logger call, and skips even the
formatting when the logger is disabled.

Every value comes from the client or a worker, so the text format escapes
quotes, backslashes, spaces in free fields and every control character (no
forged lines via a CR/LF in the target); JSON is `json.dumps`. Credentials
are never written: Authorization, Proxy-Authorization, Cookie and Set-Cookie
values show as "[redacted]" even when listed in `extra_headers`, a password in an
absolute-form target's user info as `***@`, and the values of secret query parameters
as `***` (node.querysecrets: the operator's `access_log_redact` names, or its defaults).

Tornado writes a line of its own to `tornado.access` for every request a
`tornado.web.Application` handles (in-node apps, the admin listener), at INFO
and above. `quiet_log_function` is the `log_function` setting the node gives
those applications: the same line at DEBUG, so load-balancer health checks do
not flood the log; this module's line is the record of a public request.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from node.http import Request, Response
from node.querysecrets import (
    DEFAULT_SECRETS,
    hide_secrets,
    logged_target,
    secret_names,
    shown_target,
)

if TYPE_CHECKING:
    from tornado.web import RequestHandler

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
REDACTED = "[redacted]"

access_log = logging.getLogger("scale0.access")
tornado_access = logging.getLogger("tornado.access")


def quiet_log_function(handler: RequestHandler) -> None:
    """Tornado's access line at DEBUG (an Application's `log_function` setting), its
    target shown as ours are, with the default secret names (it has no config at hand)."""
    if tornado_access.isEnabledFor(logging.DEBUG):
        r = handler.request
        tornado_access.debug("%d %s %s (%s) %.2fms", handler.get_status(), r.method,
                             logged_target(r.uri or ""), r.remote_ip,
                             1000.0 * r.request_time())


@dataclass(slots=True)  # a value, not frozen: one per request, a frozen __init__ is ~3 µs
class AccessRecord:
    time: str  # ISO 8601, UTC, milliseconds
    request_id: str
    client: str
    method: str
    target: str
    status: int
    bytes: int  # body bytes sent to the client
    duration_ms: float
    outcome: str
    node: str  # the node that served it (a peer's id when forwarded)
    worker: str
    service: str = ""
    host: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # extra_headers, redacted


_second: list[tuple[int, str]] = [(-1, "")]  # the last whole second formatted, reused


def iso_time(wall: float) -> str:
    """UTC time with milliseconds, e.g. 2026-11-27T17:45:01.123Z (one line per request:
    the date part is formatted once per second, not per line)."""
    sec = math.floor(wall)
    micros = round((wall - sec) * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        sec, micros = sec + 1, micros - 1_000_000
    cached_sec, text = _second[0]
    if cached_sec != sec:
        text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (sec, text)
    return f"{text}.{micros // 1000:03d}Z"


def record_of(
    request: Request,
    response: Response,
    *,
    sent_bytes: int,
    duration: float,
    wall: float,
    node: str = "",
    status: int | None = None,
    extra_headers: Sequence[str] = (),
    secrets: frozenset[str] = DEFAULT_SECRETS,
) -> AccessRecord:
    """The access record of one finished request. `status` overrides the response's
    (the front door may have answered something else, e.g. 499 when the client left);
    the values of the query parameters named in `secrets` are shown as `***`."""
    headers: dict[str, str] = {}
    for name in extra_headers:
        value = request.headers.get_joined(name)
        if value is not None:
            headers[name.lower()] = REDACTED if name.lower() in SENSITIVE else value
    return AccessRecord(
        time=iso_time(wall),
        request_id=request.request_id,
        client=request.client,
        method=request.method,
        target=hide_secrets(shown_target(request.target), secrets),
        status=response.status if status is None else status,
        bytes=max(0, sent_bytes),
        duration_ms=round(max(0.0, duration) * 1000.0, 3),
        outcome=response.outcome,
        node=response.served_by or node,
        worker=response.worker,
        service=request.service,
        host=request.host,
        headers=headers,
    )


_PLAIN = re.compile(r'[!#-\[\]-~]*')  # printable ASCII without space, " and \\
_PLAIN_QUOTED = re.compile(r'[ !#-\[\]-~]*')  # the same, space allowed


def _escape(value: str, quote: bool = False) -> str:
    """Printable ASCII stays; `"`, `\\`, controls and non-ASCII become escapes."""
    if (_PLAIN_QUOTED if quote else _PLAIN).fullmatch(value):
        return value  # the common case, without a loop over the characters
    out: list[str] = []
    for ch in value:
        o = ord(ch)
        if ch in '"\\' or (not quote and ch == " "):
            out.append(f"\\x{o:02x}")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o <= 0xFF:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
    return "".join(out)


def _field(value: str) -> str:
    return _escape(value) if value else "-"


def format_text(rec: AccessRecord) -> str:
    """One line, space separated, in a fixed order; "-" for an empty field."""
    plain = (rec.request_id, rec.client, rec.outcome, rec.node, rec.worker, rec.service,
             rec.host)
    if (not rec.headers and _PLAIN.fullmatch("".join(plain))
            and _PLAIN_QUOTED.fullmatch(rec.method + rec.target)):
        # The usual line: nothing to escape (the classes are per character, so the
        # concatenation is plain exactly when every field is), one format, no loop.
        return (f'{rec.time} {rec.request_id or "-"} {rec.client or "-"} '
                f'"{rec.method} {rec.target}" {rec.status} {rec.bytes} '
                f'{rec.duration_ms:.1f}ms {rec.outcome or "-"} {rec.node or "-"} '
                f'{rec.worker or "-"} {rec.service or "-"} {rec.host or "-"}')
    return format_text_escaped(rec)


def format_text_escaped(rec: AccessRecord) -> str:
    """format_text field by field, escaping each (any line; the plain one is a shortcut)."""
    parts = [
        rec.time,
        _field(rec.request_id),
        _field(rec.client),
        f'"{_escape(rec.method, True)} {_escape(rec.target, True)}"',
        str(rec.status),
        str(rec.bytes),
        f"{rec.duration_ms:.1f}ms",
        _field(rec.outcome),
        _field(rec.node),
        _field(rec.worker),
        _field(rec.service),
        _field(rec.host),
    ]
    parts += [f"{_escape(k)}={_field(v)}" for k, v in rec.headers.items()]
    return " ".join(parts)


def format_json(rec: AccessRecord) -> str:
    data = asdict(rec)
    if not data["headers"]:
        del data["headers"]
    return json.dumps(data, separators=(",", ":"))


class AccessLog:
    """Writes access records through the `scale0.access` logger, in one format."""

    def __init__(
        self,
        fmt: str = "text",
        *,
        node: str = "",
        extra_headers: Sequence[str] = (),
        redact: Iterable[str] = DEFAULT_SECRETS,
        logger: logging.Logger = access_log,
        wall: Callable[[], float] = time.time,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self._format = format_json if fmt == "json" else format_text
        self._node = node
        self._extra = tuple(extra_headers)
        self._secrets = secret_names(redact)  # ValueError naming a bad one
        self._logger = logger
        self._wall = wall
        self._sink = sink  # node.logsetup's buffer: lines without a LogRecord each

    @property
    def enabled(self) -> bool:
        """Whether a line would be written (so callers can skip building one)."""
        return self._sink is not None or self._logger.isEnabledFor(logging.INFO)

    def log(
        self,
        request: Request,
        response: Response,
        *,
        sent_bytes: int,
        duration: float,
        status: int | None = None,
    ) -> None:
        """Log one finished request (`duration` in seconds, `sent_bytes` of body)."""
        if self._sink is None and not self._logger.isEnabledFor(logging.INFO):
            return
        rec = record_of(
            request, response, sent_bytes=sent_bytes, duration=duration, wall=self._wall(),
            node=self._node, status=status, extra_headers=self._extra, secrets=self._secrets,
        )
        if self._sink is not None:
            self._sink(self._format(rec))
        else:
            self._logger.info("%s", self._format(rec))
