"""Single flight: one leader call when shareable, released waiters, timeouts, hit-for-miss."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.coalesce import Coalescer, Role


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def gather_run(
    group: Coalescer[int], n: int, shareable: bool, gate: asyncio.Event
) -> tuple[list[tuple[int, Role]], list[int]]:
    calls: list[int] = []
    started = asyncio.Event()
    all_in = asyncio.Event()  # every caller is inside fetch at the same moment

    async def fetch() -> tuple[int, bool]:
        calls.append(1)
        started.set()
        if len(calls) == 1:
            await gate.wait()
            return 1, shareable
        if len(calls) == n:
            all_in.set()
        await all_in.wait()  # deadlocks if released callers were serialised
        return len(calls), shareable

    tasks = [asyncio.create_task(group.run("k", fetch)) for _ in range(n)]
    await started.wait()  # the others join in the same loop turn, before the gate opens
    gate.set()
    done = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    return list(done), calls


@given(st.integers(1, 60))
def test_shareable_means_one_call(n: int) -> None:
    async def main() -> None:
        group: Coalescer[int] = Coalescer(lock_timeout=30)
        results, calls = await gather_run(group, n, True, asyncio.Event())
        assert len(calls) == 1
        assert [v for v, _ in results] == [1] * n
        roles = [r for _, r in results]
        assert roles.count(Role.LEADER) == 1 and roles.count(Role.WAITER) == n - 1
        assert group.in_flight == 0

    asyncio.run(main())


@given(st.integers(2, 40))
def test_not_shareable_releases_waiters_in_parallel(n: int) -> None:
    async def main() -> None:
        group: Coalescer[int] = Coalescer(lock_timeout=30)
        gate = asyncio.Event()
        results, calls = await gather_run(group, n, False, gate)
        # Everyone fetched once, the released ones all at the same time.
        assert len(calls) == n
        assert sorted(r.value for _, r in results) == sorted(["leader"] + ["solo"] * (n - 1))
        assert group.marked("k")

    asyncio.run(main())


def test_hit_for_miss_expires_and_share_clears_it() -> None:
    async def main() -> None:
        clock = ManualClock()
        group: Coalescer[int] = Coalescer(lock_timeout=5, hit_for_miss=10, clock=clock)
        group.begin("k").release()
        solo = group.begin("k")
        assert solo.role is Role.SOLO
        assert group.begin("k").role is Role.SOLO  # nobody queues behind a solo
        solo.share(1)
        assert group.begin("k").role is Role.LEADER
        group.begin("j").release()
        clock.now = 10.5
        assert group.begin("j").role is Role.LEADER

    asyncio.run(main())


_MARK_OPS = st.lists(st.tuples(
    st.sampled_from(["release", "release, nothing stored", "share", "unmark", "wait"]),
    st.sampled_from("ab"), st.floats(0, 8)), max_size=40)


@given(_MARK_OPS)
def test_hit_for_miss_marks_follow_their_model(ops: list[tuple[str, str, float]]) -> None:
    """A mark lasts hit_for_miss seconds from its latest release; a share or unmark ends it;
    `nothing_stored` holds only for a live mark whose latest release said so."""
    async def main() -> None:
        clock = ManualClock()
        group: Coalescer[int] = Coalescer(lock_timeout=5, hit_for_miss=10, clock=clock)
        model: dict[str, tuple[float, bool]] = {}
        for op, key, seconds in ops:
            if op == "wait":
                clock.now += seconds
            elif op == "unmark":
                group.unmark(key)
                model.pop(key, None)
            else:
                flight = group.begin(key)  # a leader, or a solo while marked
                if op == "share":
                    flight.share(1)
                    model.pop(key, None)
                else:
                    flight.release(nothing_stored=op != "release")
                    model[key] = (clock.now + 10, op != "release")
            for k in "ab":
                until, bare = model.get(k, (-1.0, False))
                assert group.marked(k) == (until > clock.now)
                assert group.nothing_stored(k) == (bare and until > clock.now)
                if until > clock.now:
                    assert group.begin(k).role is Role.SOLO

    asyncio.run(main())


def test_waiter_times_out_and_old_flight_is_replaced() -> None:
    async def main() -> None:
        clock = ManualClock()
        group: Coalescer[int] = Coalescer(lock_timeout=0.05, clock=clock)
        leader = group.begin("k")
        waiter = group.begin("k")
        assert waiter.role is Role.WAITER
        assert await waiter.wait() is None  # the leader never ends: lock timeout
        clock.now = 1.0  # the flight is older than the lock timeout
        late = group.begin("k")
        assert late.role is Role.LEADER
        leader.share(5)  # the old leader finishing must not end the new flight
        assert group.in_flight == 1
        again = group.begin("k")
        assert again.role is Role.WAITER
        late.share(7)
        got = await again.wait()
        assert got is not None and got.value == 7

    asyncio.run(main())


def test_failure_reaches_waiters_and_abandon_releases_them() -> None:
    async def main() -> None:
        group: Coalescer[int] = Coalescer()
        leader = group.begin("k")
        waiter = group.begin("k")
        leader.fail(RuntimeError("origin down"))
        with pytest.raises(RuntimeError, match="origin down"):
            await waiter.wait()
        leader2 = group.begin("k")
        waiter2 = group.begin("k")
        leader2.abandon()
        assert await waiter2.wait() is None
        assert not group.marked("k")
        with pytest.raises(RuntimeError):
            waiter2.share(1)

    asyncio.run(main())


def test_cancelled_leader_in_run_releases_waiters() -> None:
    async def main() -> None:
        group: Coalescer[int] = Coalescer()
        started = asyncio.Event()

        async def slow() -> tuple[int, bool]:
            started.set()
            await asyncio.Event().wait()
            return 0, True

        async def fast() -> tuple[int, bool]:
            return 9, True

        leader = asyncio.create_task(group.run("k", slow))
        await started.wait()
        waiter = asyncio.create_task(group.run("k", fast))
        await asyncio.sleep(0)
        leader.cancel()
        assert await waiter == (9, Role.SOLO)

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Coalescer(lock_timeout=-1)


def test_a_waiter_that_leaves_does_not_disturb_the_flight() -> None:
    """A waiter cancelled (its client went away) stops waiting alone: the leader's future is
    not cancelled, the other waiters still get the shared value, and nothing of the one
    that left stays hooked on the flight."""
    async def main() -> None:
        group: Coalescer[int] = Coalescer(lock_timeout=30.0)
        leader = group.begin("k")
        shared = leader._future
        assert shared is not None
        hooked = len(shared._callbacks)  # type: ignore[attr-defined]  # the group's own
        stays, leaves = group.begin("k"), group.begin("k")
        staying = asyncio.create_task(stays.wait())
        leaving = asyncio.create_task(leaves.wait())
        await asyncio.sleep(0)  # both are waiting now
        assert len(shared._callbacks) == hooked + 2  # type: ignore[attr-defined]
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert not shared.done()
        assert len(shared._callbacks) == hooked + 1  # type: ignore[attr-defined]
        leader.share(4)
        got = await staying
        assert got is not None and got.value == 4

    asyncio.run(main())
