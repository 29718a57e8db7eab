"""RFC 9110 §13 preconditions of a static file (node.preconditions): If-Match and
If-Unmodified-Since give 412, If-None-Match and If-Modified-Since 304, in §13.2.2's order."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from node.preconditions import NOT_MODIFIED, PRECONDITION_FAILED, entity_tags, evaluate

MTIME = 1_700_000_000.5
BEFORE = formatdate(MTIME - 10, usegmt=True)
AT = formatdate(MTIME, usegmt=True)
etagc = st.text(st.sampled_from('!#$%&()*+,-./0123456789:;<=>?@AZaz[]^_`{|}~'), max_size=12)
strong_tags = etagc.map(lambda s: f'"{s}"')
separators = st.sampled_from([",", ", ", " ,", " , ", ",\t"])


def joined(tags: list[str], seps: list[str]) -> str:
    out = tags[0]
    for sep, tag in zip(seps, tags[1:], strict=False):
        out += sep + tag
    return out


@given(st.lists(strong_tags, min_size=1, max_size=5), st.data())
def test_a_listed_strong_etag_never_fails_if_match(tags: list[str], data: st.DataObject) -> None:
    etag = data.draw(st.sampled_from(tags))
    seps = data.draw(st.lists(separators, min_size=len(tags), max_size=len(tags)))
    ius = data.draw(st.sampled_from([None, BEFORE, AT]))
    got = evaluate(etag, MTIME, if_match=joined(tags, seps), if_unmodified_since=ius)
    assert got is None  # If-Unmodified-Since is not even looked at beside If-Match


@given(strong_tags, st.lists(strong_tags, min_size=1, max_size=5), st.data())
def test_a_list_without_the_etag_always_fails_if_match(
        etag: str, tags: list[str], data: st.DataObject) -> None:
    tags = [t for t in tags if t != etag] or ['"-"' if etag != '"-"' else '"+"']
    seps = data.draw(st.lists(separators, min_size=len(tags), max_size=len(tags)))
    inm = data.draw(st.sampled_from([None, etag, "*"]))
    ims = data.draw(st.sampled_from([None, AT]))
    # 412 comes first: If-None-Match and If-Modified-Since would have said 304
    assert evaluate(etag, MTIME, if_match=joined(tags, seps), if_none_match=inm,
                    if_modified_since=ims) == PRECONDITION_FAILED


@given(strong_tags, st.lists(strong_tags, max_size=4))
def test_weak_etags_never_match_if_match(etag: str, others: list[str]) -> None:
    field = ", ".join([*others, "W/" + etag])
    expect = None if etag in others else PRECONDITION_FAILED
    assert evaluate(etag, MTIME, if_match=field) == expect
    # ... while If-None-Match compares weakly
    assert evaluate(etag, MTIME, if_none_match=field) == NOT_MODIFIED


@given(strong_tags, st.sampled_from(["*", " * "]))
def test_star_matches_the_existing_file(etag: str, star: str) -> None:
    assert evaluate(etag, MTIME, if_match=star) is None
    assert evaluate(etag, MTIME, if_none_match=star) == NOT_MODIFIED


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_if_unmodified_since_fails_only_for_a_date_before_the_mtime(delta: int) -> None:
    date = formatdate(int(MTIME) + delta, usegmt=True)
    expect = PRECONDITION_FAILED if delta < 0 else None
    assert evaluate('"e"', MTIME, if_unmodified_since=date) == expect


@given(st.sampled_from(["garbage", "", "Mon, 01 Jan 2001 00:00:00", "Mon, 99 Foo 2001 x GMT"]))
def test_an_invalid_if_unmodified_since_is_ignored(date: str) -> None:
    assert evaluate('"e"', MTIME, if_unmodified_since=date) is None


def test_the_rfc_order() -> None:
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    # If-Unmodified-Since fails before If-None-Match / If-Modified-Since are asked
    assert evaluate('"e"', MTIME, if_unmodified_since=old, if_none_match='"e"') == 412
    assert evaluate('"e"', MTIME, if_unmodified_since=AT, if_none_match='"e"') == 304
    assert evaluate('"e"', MTIME, if_match='"e"', if_none_match='"x"', if_modified_since=AT) is None
    assert evaluate('"e"', MTIME, if_none_match='"x"', if_modified_since=AT) is None
    assert evaluate('"e"', MTIME, if_modified_since=AT) == NOT_MODIFIED
    assert evaluate('"e"', MTIME, if_modified_since=BEFORE) is None
    assert evaluate('"e"', MTIME) is None


def test_entity_tag_lists() -> None:
    assert entity_tags('"a,b", W/"c" ,zz, "d"') == (False, [(False, '"a,b"'), (True, '"c"'),
                                                           (False, '"d"')])
    assert entity_tags(" * ") == (True, [])
    # a comma inside a quoted tag does not make a "*" element
    assert evaluate('"e"', MTIME, if_match='"a,*,b"') == PRECONDITION_FAILED
