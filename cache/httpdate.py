"""HTTP-dates (RFC 9110 §5.6.7) as epoch seconds: the usual form read by position.

A cache reads a date from nearly every response it looks at (Date for the age, Expires,
Last-Modified for heuristic freshness), and the node asks again for requests' If-Modified-
Since. `email.utils.parsedate_to_datetime` is a Python tokenizer for RFC 2822's many forms:
about 70,000 instructions a date, more than the rest of a dispatched request's work on the
node. Senders MUST generate IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), so that form
is read by slicing; anything else (RFC 850 and asctime dates, other zones, other case or
spacing, two-digit years) goes to email.utils; of the dates it reads without a zone,
only asctime's (which HTTP defines as GMT) are taken. A property test holds
the two to the same answer on arbitrary text. The same Date comes with every response of
its second, so answers are also remembered (a bounded memo).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

_LONGEST = 64  # longer is junk, not a date: no parse, no memo entry
_MONTHS = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6, "Jul": 7, "Aug": 8,
           "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12}
_DAYS = frozenset({"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"})
_MEMO_KEPT = 256  # distinct dates remembered; cleared when full, so a hostile peer cannot grow it
_memo: dict[str, float | None] = {}


def http_date(value: str | None) -> float | None:
    """Epoch seconds of an HTTP-date; None when absent or unparsable."""
    if not value or len(value) > _LONGEST:
        return None
    if value in _memo:
        return _memo[value]
    text = value.strip()
    found: float | None = None
    if _is_fixdate(text):
        try:
            found = datetime(int(text[12:16]), _MONTHS[text[8:11]], int(text[5:7]),
                             int(text[17:19]), int(text[20:22]), int(text[23:25]),
                             tzinfo=UTC).timestamp()
        except (ValueError, OverflowError):
            found = None  # the form, but no such instant (31 Feb, 24:00:00)
    else:
        found = stdlib_http_date(text)
    if len(_memo) >= _MEMO_KEPT:
        _memo.clear()
    _memo[value] = found
    return found


def _is_fixdate(text: str) -> bool:
    """Whether `text` is exactly IMF-fixdate's form, digits where digits go, and a year
    of at least 100 (email.utils reads a lower one as two digits)."""
    if (len(text) != 29 or text[3:5] != ", " or text[25:] != " GMT" or text[7] != " "
            or text[11] != " " or text[16] != " " or text[19] != ":" or text[22] != ":"
            or text[:3] not in _DAYS or text[8:11] not in _MONTHS):
        return False
    digits = text[5:7] + text[12:16] + text[17:19] + text[20:22] + text[23:25]
    return digits.isascii() and digits.isdigit() and int(text[12:16]) >= 100


def _is_asctime(text: str) -> bool:
    """Whether `text` has asctime's shape, "Sun Nov  6 08:49:37 1994": the one HTTP-date
    form without a zone, which recipients must still accept (RFC 9110 §5.6.7)."""
    return (len(text) == 24 and text[3] == " " and text[7] == " " and text[10] == " "
            and text[13] == ":" and text[16] == ":" and text[19] == " "
            and text[:3] in _DAYS and text[4:7] in _MONTHS)


def stdlib_http_date(text: str) -> float | None:
    """Any date email.utils reads with a zone, as epoch seconds (the reference)."""
    if not text or len(text) > _LONGEST:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        if not _is_asctime(text.strip()):
            return None  # a zone-less date of no HTTP form: not a date we may guess at
        parsed = parsed.replace(tzinfo=UTC)  # asctime's dates are in GMT (§5.6.7)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
