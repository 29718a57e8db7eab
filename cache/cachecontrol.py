"""Cache-Control and Pragma parsed into directives (RFC 9111 §5.2, §5.4), tolerant of junk.

Header values are untrusted, so parsing never raises: an unparsable member is
skipped, names are lower-cased, values may be tokens or quoted strings, and the
first occurrence of a repeated directive wins (§4.2.1 allows that choice). Two
limits bound the work: a field longer than `MAX_FIELD_LENGTH` is cut there and
flagged `truncated` (the rules refuse to store a response whose directives were
not all read), and at most `MAX_DIRECTIVES` members are kept. A delta-seconds
value larger than the spec's 2**31 is clamped to it (§1.2.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

MAX_FIELD_LENGTH: Final = 4096
MAX_DIRECTIVES: Final = 32
DELTA_MAX: Final = 2**31  # RFC 9111 §1.2.2: the value to use when a delta overflows

_TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


@dataclass(frozen=True, slots=True)
class Directives:
    """The directives of one Cache-Control field (request or response).

    `values` maps a lower-cased directive name to its argument (None when it had
    none). Accessors answer the questions the rules ask."""

    values: dict[str, str | None] = field(default_factory=dict)
    truncated: bool = False

    def has(self, name: str) -> bool:
        return name in self.values

    def seconds(self, name: str) -> int | None:
        """The delta-seconds argument of `name`; None when absent or not a number."""
        raw = self.values.get(name)
        return parse_delta(raw) if raw is not None else None

    @property
    def no_store(self) -> bool:
        return "no-store" in self.values

    @property
    def no_cache(self) -> bool:
        # A qualified no-cache="Set-Cookie" is treated like the plain one: a
        # shared cache may do so (§5.2.2.4) and it is the safe reading.
        return "no-cache" in self.values

    @property
    def private(self) -> bool:
        return "private" in self.values  # qualified or not: never shared

    @property
    def public(self) -> bool:
        return "public" in self.values

    @property
    def must_revalidate(self) -> bool:
        return "must-revalidate" in self.values

    @property
    def proxy_revalidate(self) -> bool:
        return "proxy-revalidate" in self.values

    @property
    def only_if_cached(self) -> bool:
        return "only-if-cached" in self.values

    @property
    def max_stale_any(self) -> bool:
        """`max-stale` without a value: any staleness is acceptable (§5.2.1.2)."""
        return "max-stale" in self.values and self.values["max-stale"] is None


# The directives of a request without Cache-Control (nearly every one) and of a bare Pragma,
# made once and shared like the remembered parses below (frozen: none can be changed under
# another's feet). Made per request, they ran the __init__ dataclasses writes, interpreted
# even compiled (docs/ARCHITECTURE.md, "Compiled or pure").
NO_DIRECTIVES: Final = Directives()
_PRAGMA_NO_CACHE: Final = Directives({"no-cache": None})


def parse_delta(raw: str) -> int | None:
    """delta-seconds = 1*DIGIT; None for anything else, clamped to DELTA_MAX."""
    text = raw.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > 12:
        return DELTA_MAX
    return min(int(text), DELTA_MAX)


def _split_members(text: str) -> list[str]:
    """Split on commas that are not inside a quoted string."""
    if '"' not in text:  # the usual field (max-age=60, public): no quoting to walk
        return text.split(",")
    return _split_quoted(text)


def _split_quoted(text: str) -> list[str]:
    """`_split_members`, a character at a time (a comma may sit inside quotes)."""
    members: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            members.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    members.append("".join(buf))
    return members


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


def parse_cache_control(fields: str | Iterable[str] | None) -> Directives:
    """Parse one or several Cache-Control field values (several lines are one list)."""
    if fields is None:
        return NO_DIRECTIVES
    text = fields if isinstance(fields, str) else ", ".join(fields)
    known = _parsed.get(text)
    if known is not None:
        return known
    directives = _parse(text)
    if len(text) <= _REMEMBERED_LENGTH:  # bounded in count and size whatever is sent
        if len(_parsed) >= _PARSED_KEPT:
            _parsed.clear()  # the next calls simply parse again
        _parsed[text] = directives
    return directives


# An origin sends the same few fields ("no-store", "max-age=60, public") again and again:
# their parses are remembered (shared: a Directives is never changed once made).
_PARSED_KEPT, _REMEMBERED_LENGTH = 1024, 256
_parsed: Final[dict[str, Directives]] = {}


def _parse(text: str) -> Directives:
    truncated = len(text) > MAX_FIELD_LENGTH
    if truncated:
        text = text[:MAX_FIELD_LENGTH]
    values: dict[str, str | None] = {}
    for member in _split_members(text):
        if len(values) >= MAX_DIRECTIVES:
            truncated = True
            break
        name, sep, arg = member.partition("=")
        name = name.strip().lower()
        if not name or not _TOKEN_CHARS.issuperset(name) or name in values:
            continue
        values[name] = _unquote(arg.strip()) if sep else None
    return Directives(values, truncated)


def request_directives(cache_control: list[str], pragma: list[str]) -> Directives:
    """A request's directives; `Pragma: no-cache` counts only without Cache-Control (§5.4)."""
    if cache_control:
        return parse_cache_control(cache_control)
    for value in pragma:
        if any(m.strip().lower() == "no-cache" for m in value[:MAX_FIELD_LENGTH].split(",")):
            return _PRAGMA_NO_CACHE
    return NO_DIRECTIVES
