"""HTTP-dates: the positional reading of IMF-fixdate agrees with email.utils everywhere."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cache import httpdate
from cache.httpdate import http_date, stdlib_http_date

FIXDATE = "Sun, 06 Nov 1994 08:49:37 GMT"
# Every character IMF-fixdate may hold, and a few it may not: mutations of a real date
# stay near the fast path's edges (a digit for a separator, a month's case, a year < 100).
_NEAR = st.sampled_from(list("0123456789 :,-GMTSunNovJaFebx\t\x00\u0663\u00e9"))


@st.composite
def near_fixdates(draw: st.DrawFn) -> str:
    instant = draw(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799))
    text = list(format_datetime(datetime.fromtimestamp(instant, UTC), usegmt=True))
    for _ in range(draw(st.integers(0, 3))):
        text[draw(st.integers(0, len(text) - 1))] = draw(_NEAR)
    return "".join(text)


@settings(max_examples=400)
@given(st.one_of(near_fixdates(), st.text(max_size=70)))
@example("Sun, 06 Nov 0099 08:49:37 GMT")  # four digits below 100: email.utils says 1999
@example("Sun, 31 Feb 1994 08:49:37 GMT")  # the form, no such day
@example("Sun, 06 Nov 1994 24:00:00 GMT")
@example("sun, 06 nov 1994 08:49:37 gmt")
@example("Sun, 06 Nov 1994 08:49:37 GMT\x85")  # str.strip's whitespace is wider than ASCII
@example("Sun, \u0660\u0666 Nov 1994 08:49:37 GMT")  # Arabic-Indic digits: not digits here
def test_agrees_with_email_utils_on_any_text(text: str) -> None:
    httpdate._memo.clear()
    first = http_date(text)
    assert first == stdlib_http_date(text) or (len(text) > 64 and first is None)
    assert http_date(text) == first  # remembered, unchanged


@given(st.integers(min_value=-2_208_988_800, max_value=253_402_300_799))
def test_every_instant_round_trips(instant: int) -> None:
    """Any second from 1900 to 9999, as a server writes it, reads back exactly."""
    assert http_date(formatdate(instant, usegmt=True)) == float(instant)


@pytest.mark.parametrize(("text", "expected"), [
    (FIXDATE, 784111777.0),
    (" " + FIXDATE + " ", 784111777.0),
    ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),  # RFC 850
    ("Sun Nov  6 08:49:37 1994", 784111777.0),  # asctime: no zone, GMT by definition
    ("Sun, 06 Nov 1994 08:49:37 +0100", 784108177.0),  # not HTTP's form, still read
    ("06 Nov 1994 08:49:37", None),  # no zone and no HTTP form: not guessed
    ("Sun, 31 Feb 1994 08:49:37 GMT", None),
    ("0", None), ("", None), (None, None), ("x" * 65, None),
])
def test_table(text: str | None, expected: float | None) -> None:
    assert http_date(text) == expected


def test_the_memo_is_bounded() -> None:
    httpdate._memo.clear()
    base = int(time.time())
    for i in range(httpdate._MEMO_KEPT * 3):
        assert http_date(formatdate(base + i, usegmt=True)) == base + i
        assert len(httpdate._memo) <= httpdate._MEMO_KEPT
