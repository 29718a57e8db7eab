"""Access lines: every field present, one line whatever the input, JSON round-trips, no secrets."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.accesslog import (
    REDACTED,
    AccessLog,
    format_json,
    format_text,
    format_text_escaped,
    record_of,
    shown_target,
)
from node.http import Headers, Request, Response
from node.querysecrets import hide_secrets

WALL = 1_800_000_000.25  # 2027-01-15T08:00:00.250Z


def make(target: str = "/a?b=1", **kw: str) -> tuple[Request, Response]:
    req = Request(
        kw.get("method", "GET"), target,
        Headers([("Authorization", "Bearer s3cret"), ("Cookie", "sid=hunter2"),
                 ("User-Agent", "curl/8")]),
        client="203.0.113.7", request_id="rid-1", host="www.example.com", service="www",
    )
    resp = Response(200, outcome="hit", served_by="east-2", worker="w-7")
    return req, resp


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture()
def captured() -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger("scale0.access.test")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    cap = Capture()
    logger.handlers[:] = [cap]
    return logger, cap


def test_text_line_has_every_field() -> None:
    req, resp = make()
    rec = record_of(req, resp, sent_bytes=1234, duration=0.0123, wall=WALL, node="east-1")
    line = format_text(rec)
    assert line == (
        '2027-01-15T08:00:00.250Z rid-1 203.0.113.7 "GET /a?b=1" 200 1234 12.3ms hit east-2 w-7'
        " www www.example.com"
    )


def test_json_line_has_every_field_and_node_fallback() -> None:
    req, resp = make()
    resp.served_by = ""
    rec = record_of(req, resp, sent_bytes=5, duration=0.5, wall=WALL, node="east-1", status=499)
    data = json.loads(format_json(rec))
    assert data == {
        "time": "2027-01-15T08:00:00.250Z", "request_id": "rid-1", "client": "203.0.113.7",
        "method": "GET", "target": "/a?b=1", "status": 499, "bytes": 5, "duration_ms": 500.0,
        "outcome": "hit", "node": "east-1", "worker": "w-7", "service": "www",
        "host": "www.example.com",
    }


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_credentials_never_logged(captured: tuple[logging.Logger, Capture], fmt: str) -> None:
    logger, cap = captured
    log = AccessLog(fmt, extra_headers=["Authorization", "cookie", "User-Agent"],
                    logger=logger, wall=lambda: WALL)
    req, resp = make()
    log.log(req, resp, sent_bytes=10, duration=0.001)
    assert len(cap.lines) == 1
    line = cap.lines[0]
    assert "s3cret" not in line and "hunter2" not in line
    assert REDACTED in line and "curl/8" in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_query_values_are_never_logged(captured: tuple[logging.Logger, Capture],
                                              fmt: str) -> None:
    logger, cap = captured
    req, resp = make("/login?user=a&password=hunter2;lang=en#top")
    AccessLog(fmt, logger=logger, wall=lambda: WALL).log(req, resp, sent_bytes=1, duration=0.0)
    AccessLog(fmt, redact=["user"], logger=logger, wall=lambda: WALL).log(
        req, resp, sent_bytes=1, duration=0.0)
    AccessLog(fmt, redact=[], logger=logger, wall=lambda: WALL).log(
        req, resp, sent_bytes=1, duration=0.0)
    shown = [json.loads(line)["target"] if fmt == "json" else line.split('"')[1].split()[1]
             for line in cap.lines]
    assert shown == ["/login?user=a&password=***;lang=en#top",  # the defaults
                     "/login?user=***&password=hunter2;lang=en#top",  # the operator's names
                     "/login?user=a&password=hunter2;lang=en#top"]  # hiding turned off
    assert req.target == "/login?user=a&password=hunter2;lang=en#top"  # the request as it was


def test_tornado_s_debug_line_hides_the_default_names(caplog: pytest.LogCaptureFixture) \
        -> None:
    from types import SimpleNamespace

    from node.accesslog import quiet_log_function

    request = SimpleNamespace(method="GET", uri="/_scale0/x?token=t0k&v=1", remote_ip="::1",
                              request_time=lambda: 0.001)
    handler = SimpleNamespace(request=request, get_status=lambda: 200)
    with caplog.at_level(logging.DEBUG, logger="tornado.access"):
        quiet_log_function(handler)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "200 GET /_scale0/x?token=***&v=1 (::1) 1.00ms"]


def test_a_name_that_cannot_be_one_is_refused() -> None:
    with pytest.raises(ValueError, match="'pass word' is not a query parameter name"):
        AccessLog("text", redact=["pass word"])


def test_disabled_logger_formats_nothing(captured: tuple[logging.Logger, Capture]) -> None:
    logger, cap = captured
    logger.setLevel(logging.WARNING)
    calls = []
    log = AccessLog("text", logger=logger, wall=lambda: calls.append(1) or WALL)
    req, resp = make()
    log.log(req, resp, sent_bytes=1, duration=0.1)
    assert cap.lines == [] and calls == []


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="--log-format"):
        AccessLog("xml")


def test_default_logger_name() -> None:
    from node.accesslog import access_log

    assert access_log.name == "scale0.access"


_ANY = st.text(max_size=40)


@given(
    target=_ANY, method=_ANY, rid=_ANY, worker=_ANY, nbytes=st.integers(-5, 10**12),
    dur=st.floats(-1, 1e6, allow_nan=False),
)
def test_one_line_whatever_the_input(
    *, target: str, method: str, rid: str, worker: str, nbytes: int, dur: float
) -> None:
    req = Request(method, target, Headers([("X-Tag", target)]), request_id=rid, client=rid)
    resp = Response(200, outcome=worker, worker=worker)
    rec = record_of(req, resp, sent_bytes=nbytes, duration=dur, wall=WALL,
                    extra_headers=["X-Tag"])
    text = format_text(rec)
    assert "\n" not in text and "\r" not in text and text.isprintable() and text.isascii()
    # the quoted request holds no quote of its own: the line splits into the same fields
    before, request_line, after = text.split('"', 2)
    assert len(before.split()) == 3 and len(after.split()) == 9
    assert request_line.count(" ") >= 1
    data = json.loads(format_json(rec))
    assert "\n" not in format_json(rec)
    assert data["target"] == hide_secrets(shown_target(target))
    assert data["method"] == method and data["worker"] == worker
    assert data["bytes"] >= 0 and data["duration_ms"] >= 0


@given(st.floats(0, 4e9, allow_nan=False))
def test_iso_time_matches_datetime_to_the_millisecond(wall: float) -> None:
    from datetime import UTC, datetime

    from node.accesslog import iso_time

    expected = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    assert iso_time(wall) == expected.replace("+00:00", "Z")


def _escape_reference(value: str, quote: bool) -> str:
    """The character-by-character rule the fast path must agree with."""
    out = []
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


@given(st.text(max_size=40) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
       st.booleans())
def test_escaping_has_one_rule_fast_or_not(value: str, quote: bool) -> None:
    from node.accesslog import _escape

    assert _escape(value, quote) == _escape_reference(value, quote)


def test_the_buffer_writes_lines_in_batches_and_on_flush() -> None:
    import io

    from node.logsetup import LineBuffer

    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    buffer = LineBuffer(target, capacity=3)
    log = AccessLog("text", sink=buffer.write_line, wall=lambda: 0.0)
    request = Request("GET", "/a", Headers([("Host", "h")]), host="h")
    for _ in range(2):
        log.log(request, Response(200, outcome="local"), sent_bytes=1, duration=0.0)
    assert stream.getvalue() == ""  # held: fewer lines than the buffer takes
    log.log(request, Response(200, outcome="local"), sent_bytes=1, duration=0.0)
    assert len(stream.getvalue().splitlines()) == 3  # full: one write
    log.log(request, Response(404, outcome="local"), sent_bytes=1, duration=0.0)
    buffer.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and " 404 " in lines[-1] and '"GET /a"' in lines[-1]
    record = logging.LogRecord("scale0.access", logging.WARNING, "", 0, "odd", None, None)
    buffer.handle(record)  # another part's warning through the logger: written at once
    assert stream.getvalue().splitlines()[-1] == "odd"


def test_a_failed_write_loses_the_lines_not_the_node() -> None:
    import io

    from node.logsetup import LineBuffer

    stream = io.StringIO()
    buffer = LineBuffer(logging.StreamHandler(stream), capacity=10)
    buffer.write_line("one")
    stream.close()
    buffer.flush()  # ValueError on a closed stream: reported, not raised
    buffer.write_line("two")
    assert buffer.lines == ["two"]


_MOSTLY_PLAIN = st.one_of(st.sampled_from(["", "GET", "/a?b=1", "n1", "a b", 'q"', "é"]),
                          st.text(max_size=12))


@given(target=_MOSTLY_PLAIN, method=_MOSTLY_PLAIN, rid=_MOSTLY_PLAIN, host=_MOSTLY_PLAIN,
       outcome=_MOSTLY_PLAIN, tagged=st.booleans())
def test_the_plain_line_shortcut_writes_what_escaping_each_field_writes(
    *, target: str, method: str, rid: str, host: str, outcome: str, tagged: bool
) -> None:
    req = Request(method, target, Headers([("X-Tag", "v")]), request_id=rid, client="10.0.0.1",
                  host=host, service="www")
    resp = Response(200, outcome=outcome, worker="w1", served_by="n1")
    rec = record_of(req, resp, sent_bytes=3, duration=0.0123, wall=WALL,
                    extra_headers=["X-Tag"] if tagged else [])
    assert format_text(rec) == format_text_escaped(rec)
