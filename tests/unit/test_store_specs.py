"""Store specs and byte sizes: the parser behind `--cache files:DIR?max=10GiB`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.files import FileStore
from cache.memory import MemoryStore
from cache.mongo import MongoStore
from cache.stores import known_stores, open_store, parse_size, parse_spec

UNITS = {
    "": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
    "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4,
    "tb": 1000**4,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MiB", 512 << 20), ("10GB", 10 * 10**9), ("4096", 4096), ("1.5GiB", 3 << 29),
     (" 2 k ", 2048), ("0", 0), ("7b", 7)],
)
def test_size_table(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@given(
    st.integers(0, 10**6),
    st.sampled_from(sorted(UNITS)),
    st.sampled_from([str.lower, str.upper, str.title]),
    st.sampled_from(["", " "]),
)
def test_size_with_any_unit_and_case(n: int, unit: str, case: object, space: str) -> None:
    assert callable(case)
    assert parse_size(f"{n}{space}{case(unit)}") == n * UNITS[unit]


@given(st.integers(0, 10**6), st.integers(0, 999), st.sampled_from(sorted(UNITS)))
def test_size_fractions_round_down(whole: int, frac: int, unit: str) -> None:
    text = f"{whole}.{frac:03d}{unit}"
    assert parse_size(text) == int(Decimal(f"{whole}.{frac:03d}") * UNITS[unit])


@given(st.text(max_size=40))
def test_size_garbage_is_a_value_error_or_a_size(text: str) -> None:
    try:
        value = parse_size(text)
    except ValueError as exc:
        assert "size" in str(exc)
    else:
        assert 0 <= value <= 1 << 62


@pytest.mark.parametrize(
    "text", ["", "MiB", "-1", "1 2", "1.5.2G", "10 parsecs", "1e9", "99999999999T"]
)
def test_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("memory", ("memory", "", {})),
        ("memory:512MiB", ("memory", "512MiB", {})),
        ("files:/var/cache/s0?max=10GiB", ("files", "/var/cache/s0", {"max": "10GiB"})),
        ("files:/d?max=1G&fsync=off", ("files", "/d", {"max": "1G", "fsync": "off"})),
        ("files:/odd?dir#max=1G", ("files", "/odd?dir", {"max": "1G"})),
        ("mongo:mongodb://h:27017/?w=1", ("mongo", "mongodb://h:27017/?w=1", {})),
        ("mongo:mongodb://h/?w=1#mode=ttl&ttl=60",
         ("mongo", "mongodb://h/?w=1", {"mode": "ttl", "ttl": "60"})),
        ("FILES:x", ("files", "x", {})),
        ("memory:?_=://", ("memory", "", {"_": "://"})),  # found by the round trip below
        ("files:/d?peer=http://a/?b", ("files", "/d", {"peer": "http://a/?b"})),
    ],
)
def test_spec_table(spec: str, expected: tuple[str, str, dict[str, str]]) -> None:
    assert parse_spec(spec) == expected


@given(
    st.sampled_from(["memory", "files", "mongo", "my-store"]),
    st.text(st.characters(blacklist_characters="#?"), max_size=30).filter(lambda s: "://" not in s),
    st.dictionaries(
        st.text("abcdefghij_", min_size=1, max_size=8),
        st.text(st.characters(blacklist_characters="&#="), max_size=8),
        max_size=4,
    ),
    st.sampled_from(["?", "#"]),
)
def test_spec_round_trip(scheme: str, location: str, options: dict[str, str], sep: str) -> None:
    spec = f"{scheme}:{location}"
    if options:
        spec += sep + "&".join(f"{k}={v}" for k, v in options.items())
    assert parse_spec(spec) == (scheme, location, options)


@given(st.text(max_size=60))
def test_spec_garbage_is_a_value_error(spec: str) -> None:
    try:
        parse_spec(spec)
    except ValueError:
        pass


def test_unknown_store_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known stores: files, memory, mongo"):
        open_store("redis://localhost")


def test_entry_points_name_the_builtin_stores() -> None:
    assert {"memory", "files", "mongo"} <= set(known_stores())


def test_open_store_builds_each_builtin(tmp_path: Path) -> None:
    mem = open_store("memory:1MiB")
    assert isinstance(mem, MemoryStore) and mem.max_bytes == 1 << 20
    files = open_store(f"files:{tmp_path}?max=2MiB&fsync=off")
    assert isinstance(files, FileStore)
    assert (files.root, files.max_bytes, files.fsync) == (tmp_path, 2 << 20, False)
    assert isinstance(open_store("files"), FileStore)
    mongo = open_store("mongo:mongodb://db.example/?w=1#mode=ttl&ttl=60&collection=c")
    assert isinstance(mongo, MongoStore)
    assert (mongo.url, mongo.mode, mongo.ttl_seconds, mongo.collection) == (
        "mongodb://db.example/?w=1", "ttl", 60.0, "c")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("files:/x?maxx=1G", "unknown option"),
        ("files:/x?fsync=maybe", "not a boolean"),
        ("memory:lots", "as a size"),
        ("memory:0", "positive"),
        ("mongo:http://x", "not a mongodb:// URL"),
        ("mongo:mongodb://x#mode=fast", "mode must be"),
        ("files:/x?max", "NAME=VALUE"),
        ("files:/x?max=1&max=2", "twice"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_store(spec)


@pytest.mark.parametrize(("url", "why"), [
    ("mongodb://user:s3cret@127.0.0.1:notaport/db", "Port contains non-digit"),
    ("mongodb://user:s3cret@127.0.0.1:99999/db", "Port must be an integer"),
    ("mongodb://user:s3cret@127.0.0.1/db?bogus=1", "Unknown option"),
])
def test_a_mongo_url_pymongo_would_refuse_is_refused_when_the_spec_is_read(
        url: str, why: str) -> None:
    """Before any connection, so --check-config says it too; the password stays out."""
    with pytest.raises(ValueError) as caught:
        open_store(f"mongo:{url}")
    assert why in str(caught.value) and "s3cret" not in str(caught.value)
    assert "user:***@127.0.0.1" in str(caught.value)


@given(st.text(st.characters(blacklist_characters="@/:"), min_size=1, max_size=12))
def test_no_refusal_of_a_mongo_url_shows_its_password(password: str) -> None:
    url = f"mongodb://user:{password}@127.0.0.1:bad/db"
    try:
        MongoStore.from_spec(url, {})
    except ValueError as exc:
        assert f"user:{password}@" not in str(exc)


@pytest.mark.parametrize(("url", "seconds"), [
    ("mongodb://127.0.0.1:1/db", 5.0),  # ours: a node does not sit 30 s at start
    ("mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=1500", 1.5),  # the operator's
    ("mongodb://127.0.0.1:1/db?w=1&serverselectiontimeoutms=700", 0.7),  # any case
])
def test_the_urls_own_server_selection_timeout_is_kept(url: str, seconds: float) -> None:
    from pymongo import AsyncMongoClient

    from cache.mongo import client_options

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        url, connect=False, **client_options(url))
    assert client.options.server_selection_timeout == seconds
