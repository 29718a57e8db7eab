"""Secondary keys from Vary: normalisation, absent vs empty, `Vary: *`, properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cache.vary import (
    MAX_VARIANT_LENGTH,
    MAX_VARY_FIELDS,
    VARY_STAR,
    request_variant,
    variant_key,
    vary_fields,
)


def test_fields_normalised() -> None:
    assert vary_fields(["Accept-Encoding, accept-language", "ACCEPT-ENCODING"]) == (
        "accept-encoding",
        "accept-language",
    )
    assert vary_fields([]) == ()
    assert vary_fields(["", " , "]) == ()
    assert vary_fields(["Accept, *"]) is VARY_STAR
    assert vary_fields([", ".join(f"x{i}" for i in range(MAX_VARY_FIELDS + 1))]) is VARY_STAR


def test_no_vary_is_empty_variant() -> None:
    assert request_variant([], [("Accept", "x")]) == ""


def test_star_never_matches() -> None:
    assert request_variant(["*"], []) is None


def test_equivalent_spellings_share_a_variant() -> None:
    a = variant_key(("accept-encoding",), [("Accept-Encoding", "gzip,  br")])
    b = variant_key(("accept-encoding",), [("accept-encoding", "GZIP"), ("Accept-Encoding", "br")])
    assert a == b


def test_absent_differs_from_empty_and_from_other_values() -> None:
    fields = ("accept-language",)
    absent = variant_key(fields, [])
    empty = variant_key(fields, [("Accept-Language", "")])
    en = variant_key(fields, [("Accept-Language", "en")])
    de = variant_key(fields, [("Accept-Language", "de")])
    assert len({absent, empty, en, de}) == 4


def test_unrelated_headers_ignored_and_long_values_digested() -> None:
    fields = ("x-a",)
    assert variant_key(fields, [("X-A", "1"), ("X-B", "2")]) == variant_key(fields, [("X-A", "1")])
    long = variant_key(fields, [("X-A", "v" * 1000)])
    assert long.startswith("sha256:") and len(long) < MAX_VARIANT_LENGTH


headers = st.lists(
    st.tuples(
        st.sampled_from(["Accept", "accept-encoding", "X-A", "Cookie"]), st.text(max_size=20)
    ),
    max_size=6,
)


@given(st.lists(st.text(max_size=30), max_size=3), headers)
def test_never_raises_and_printable(vary: list[str], request: list[tuple[str, str]]) -> None:
    v = request_variant(vary, request)
    if v is not None:
        assert v.isascii() and v.isprintable() and len(v) <= MAX_VARIANT_LENGTH


@given(headers.flatmap(lambda h: st.tuples(st.just(h), st.permutations(h))))
def test_order_of_fields_with_different_names_irrelevant(
    pair: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    original, permuted = pair
    fields = ("accept", "x-a")

    # Only the relative order of repeats of one field may matter (they are a list).
    def per_name(items: list[tuple[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in items:
            out.setdefault(k.lower(), []).append(v)
        return out

    if per_name(original) == per_name(permuted):
        assert variant_key(fields, original) == variant_key(fields, permuted)
