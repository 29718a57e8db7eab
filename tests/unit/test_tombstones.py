"""Tombstones: a purge blocks older replicas of matching keys, within count and age bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cache.entry import CacheEntry
from cache.tombstones import Tombstones

KEYS = st.sampled_from(["http://a/", "http://a/x", "http://a/x/y", "http://b/x", "http://a/xy"])
TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entry(key: str, response_time: float) -> CacheEntry:
    return CacheEntry(key, "", 200, (), b"", response_time, response_time, "n1")


def test_exact_and_prefix_block_only_older_replicas_of_matching_keys() -> None:
    stones = Tombstones(Clock())
    stones.add("http://a/x", False, 100.0)
    assert stones.blocks(entry("http://a/x", 100.0))  # the purged response itself
    assert stones.blocks(entry("http://a/x", 50.0))
    assert not stones.blocks(entry("http://a/x", 100.5))  # produced after the purge
    assert not stones.blocks(entry("http://a/xy", 50.0))  # exact means exact
    stones.add("http://b/", True, 10.0)
    assert stones.blocks(entry("http://b/anything", 9.0))
    assert not stones.blocks(entry("http://b/anything", 11.0))
    assert not stones.blocks(entry("http://c/", 1.0))


def test_a_repeated_purge_keeps_the_latest_time() -> None:
    stones = Tombstones(Clock())
    stones.add("http://a/x", False, 100.0)
    stones.add("http://a/x", False, 40.0)  # a relay of an older purge arrives late
    assert stones.blocks(entry("http://a/x", 90.0))
    assert len(stones) == 1


@given(st.lists(st.tuples(KEYS, st.booleans(), TIMES), max_size=30), KEYS, TIMES)
def test_blocks_matches_a_plain_model(purges: list[tuple[str, bool, float]], key: str,
                                      response_time: float) -> None:
    stones = Tombstones(Clock())
    for k, prefix, at in purges:
        stones.add(k, prefix, at)
    expected = any((key.startswith(k) if prefix else key == k) and response_time <= at
                   for k, prefix, at in purges)
    assert stones.blocks(entry(key, response_time)) == expected


@given(st.lists(st.tuples(st.text(max_size=6), st.booleans(), TIMES,
                          st.floats(min_value=0, max_value=50)), max_size=60),
       st.integers(1, 5), st.integers(1, 5))
def test_bounded_in_count_and_age(steps: list[tuple[str, bool, float, float]], max_count: int,
                                  max_prefixes: int) -> None:
    clock = Clock()
    stones = Tombstones(clock, max_count=max_count, max_prefixes=max_prefixes, max_age=100.0)
    for key, prefix, at, elapsed in steps:
        clock.now += elapsed
        stones.add(key, prefix, at)
        assert len(stones._exact) <= max_count and len(stones._prefixes) <= max_prefixes
        # The newest purge is always remembered.
        assert stones.blocks(entry(key, at))
    clock.now += 101.0  # past max_age for every one of them
    assert not any(stones.blocks(entry(k, 0.0)) for k, _, _, _ in steps)
    assert len(stones) == 0


def test_bad_bounds_are_refused() -> None:
    for kwargs in ({"max_count": 0}, {"max_prefixes": 0}, {"max_age": 0.0}):
        try:
            Tombstones(Clock(), **kwargs)
        except ValueError:
            continue
        raise AssertionError(f"accepted {kwargs}")
