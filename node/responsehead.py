"""A response head as written: our Headers to bytes in one pass, with Tornado's rules.

Front._write used to turn a Response's Headers into Tornado's HTTPHeaders (a token
regex, a field-value regex and a name normalisation per `add`) and the fast wire then
formatted every field again, with a regex per line: about 8 % of a miss on the node.
`FieldMap` is HTTPHeaders' own model — each normalised name with its values, names in
first-seen order — as a plain dict, so the same mutations (`fields[name] = [value]`
replaces in place or appends) give the same order; `frame` writes it with one join.

The rules are Front._write's (which fields an answer keeps) and Tornado's
HTTP1Connection.write_headers (Connection, Transfer-Encoding, what the body must
be). Property tests (tests/unit/test_responsehead.py) hold both paths to the same
bytes for every head Tornado accepts. What Tornado would refuse — a name that is not
a token, a control character or a character above U+00FF in a value — is refused
here with BadField *before* a byte is sent, so the client can be given a 502 rather
than a cut connection; spaces around a value are not part of it (RFC 9110 §5.5) and
are trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

FieldMap = dict[str, list[str]]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
# The front frames bodies itself.
_FRAMING: Final = frozenset({"Transfer-Encoding", "Content-Length"})
# Distinct names remembered; a hostile upstream cannot grow it past this.
_NAMES_KEPT: Final = 4096
_names: Final[dict[str, str | None]] = {}


class BadField(ValueError):
    """A field that must not be written (it could split or corrupt the head)."""


# Framing, a value made per answer, is not frozen (a frozen __init__ sets each field through
# object.__setattr__) and writes its __init__ out (init=False): mypyc leaves the one
# dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True, init=False)
class Framing:
    """How the response body that follows a head is delimited."""

    head: bytes  # status line and fields, ending with the blank line
    chunking: bool
    expected: int | None  # bytes the body must have; None when chunked or read-to-close
    close: bool  # the connection must close after this response

    def __init__(self, head: bytes, chunking: bool, expected: int | None,
                 close: bool) -> None:
        self.head = head
        self.chunking = chunking
        self.expected = expected
        self.close = close


def normal_name(name: str) -> str:
    """`name` in Http-Header-Case (Tornado's normalisation); BadField if not a token."""
    norm = _names.get(name)
    if norm is None:
        if name in _names or not _TOKEN.fullmatch(name):
            raise BadField(f"invalid field name {name[:60]!r}")
        norm = "-".join([w.capitalize() for w in name.split("-")])
        if len(_names) >= _NAMES_KEPT:
            _names.clear()
        _names[name] = norm
    return norm


def _check_values(values: list[str]) -> None:
    """BadField unless every value holds only a tab, visible ASCII, space or obs-text."""
    if values:
        joined = " ".join(values)
        # Printable ASCII throughout (the usual answer) passes without the regex: a tab or
        # obs-text in a value only sends it to the regex, which decides.
        if not (joined.isascii() and joined.isprintable()) and (
                bad := _BAD_VALUE.search(joined)):
            raise BadField(f"invalid character {bad.group()!r} in a field value")


def field_map(headers: Iterable[tuple[str, str]], status: int, no_body: bool) -> FieldMap:
    """A response's fields as the front writes them: Transfer-Encoding dropped, and
    Content-Length too unless it describes a body we do not send (HEAD, 304); the
    body is framed by the front itself."""
    fields: FieldMap = {}
    keep_length = no_body and status != 204
    values: list[str] = []
    names = _names
    for name, raw in headers:
        norm = names.get(name) or normal_name(name)
        if norm in _FRAMING and (norm == "Transfer-Encoding" or not keep_length):
            continue
        value = raw.strip(" \t")  # the same object when there is nothing to trim
        values.append(value)
        known = fields.get(norm)
        if known is None:
            fields[norm] = [value]
        else:
            known.append(value)
    _check_values(values)
    return fields


def frame(method: str, version: str, status: int, reason: str, fields: FieldMap, *,
          request_connection: str | None = None, close: bool = False) -> Framing:
    """Tornado's server-side write_headers on `fields` (changed as it changes its
    headers: Connection, Transfer-Encoding). ValueError on a CR or LF anywhere.

    One improvement over Tornado: a 1.0 response whose body is delimited by the close
    keeps no connection alive (Tornado would send `Connection: Keep-Alive` and leave the
    client waiting)."""
    bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
    has_length = "Content-Length" in fields
    chunking = version == "HTTP/1.1" and not bodiless and not has_length
    if version == "HTTP/1.1" and close:
        fields["Connection"] = ["close"]
    if version == "HTTP/1.0":
        if not bodiless and not has_length:
            close = True
        elif (request_connection or "").lower() == "keep-alive" and not close:
            fields["Connection"] = ["Keep-Alive"]
    if chunking:
        fields["Transfer-Encoding"] = ["chunked"]
    expected: int | None
    if method == "HEAD" or status == 304:
        expected = 0
    elif has_length:
        value = ",".join(fields["Content-Length"])
        if not (value.isascii() and value.isdigit()):  # [0-9]+, without a regex call
            raise ValueError(f"not an integer Content-Length: {value!r}")
        expected = int(value)
    else:
        expected = None
    # One join of every piece, the blank line included: a string per field line, then
    # the head, then head + blank line, was a copy and an allocation a field more.
    parts = [f"HTTP/1.1 {status} {reason}"]
    for name, values in fields.items():
        for value in values:
            parts += ("\r\n", name, ": ", value)
    parts.append("\r\n\r\n")
    text = "".join(parts)
    breaks = (len(parts) - 2) // 4 + 2  # one after each line, and the blank line's
    # every CR and LF must be one of ours: a stray one would split the head
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ValueError("Illegal characters (CR or LF) in the response head")
    return Framing(text.encode("latin1"), chunking, expected, close)


def bodied_head(status: int, reason: str, headers: Iterable[tuple[str, str]],
                length: int) -> bytes | None:
    """The head `frame` writes for `field_map(headers, status, False)` and a body of
    `length` bytes, on an HTTP/1.1 keep-alive answer to a request that is not HEAD
    (Framing(head, chunking=False, expected=length, close=False)), `reason` being one of
    ours (a standard phrase, never an upstream's): the usual answer,
    written in one pass with no FieldMap in between (a fifth of the node's work on a
    dispatched request was that map and the framing of it).

    None when a field name comes back after another name: FieldMap writes every value
    of a name at its first place, so such a head goes the usual way. BadField as
    `field_map`. Property tests hold it to `frame(field_map(...))`."""
    names = _names
    lines = [f"HTTP/1.1 {status} {reason}"]
    values: list[str] = []
    seen: set[str] = set()
    last = ""
    for name, raw in headers:
        norm = names.get(name) or normal_name(name)
        if norm in _FRAMING:
            continue  # the body is framed here: Content-Length comes last
        if norm != last:
            if norm in seen:
                return None  # FieldMap would move it up to its first place
            seen.add(norm)
            last = norm
        value = raw.strip(" \t")
        values.append(value)
        lines.append(f"{norm}: {value}")
    # Names are tokens and no value holds a CR or LF past this: no line can be split
    # (what frame's count makes sure of).
    _check_values(values)
    lines += (f"Content-Length: {length}", "", "")
    return "\r\n".join(lines).encode("latin1")
