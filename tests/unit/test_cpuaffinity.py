"""`cpu_affinity`: which CPU each node process (and a worker) keeps to, from the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import from_mapping
from node.cpuaffinity import _ranges, cpus_for, parse_cpus, worker_cpus
from node.errors import ConfigError

ALLOWED = st.lists(st.integers(0, 63), min_size=1, max_size=16, unique=True).map(sorted)


@given(ALLOWED, st.integers(0, 200))
def test_auto_spreads_processes_round_robin_over_the_allowed_cpus(
        allowed: list[int], index: int) -> None:
    assert cpus_for("auto", index, allowed) == {allowed[index % len(allowed)]}
    # consecutive processes take distinct CPUs until every one is used
    taken = [cpus_for("AUTO", i, allowed) for i in range(len(allowed))]
    assert set().union(*taken) == set(allowed)  # type: ignore[arg-type]


@given(ALLOWED, st.data())
def test_a_list_gives_process_i_its_ith_entry(allowed: list[int], data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True))
    spec = ",".join(map(str, chosen))
    for index in range(2 * len(chosen)):
        assert cpus_for(spec, index, allowed) == {chosen[index % len(chosen)]}
    assert worker_cpus(spec, allowed) == frozenset(chosen)


@given(ALLOWED, st.integers(0, 200))
def test_a_cpu_the_process_may_not_use_is_refused_by_number(allowed: list[int],
                                                            cpu: int) -> None:
    if cpu in allowed:
        return
    for check in (lambda: cpus_for(f"{allowed[0]},{cpu}", 0, allowed),
                  lambda: worker_cpus(str(cpu), allowed)):
        with pytest.raises(ValueError, match=f"CPU {cpu} is not available.*may use"):
            check()


@given(st.lists(st.integers(0, 200), min_size=1, max_size=20, unique=True))
def test_ranges_read_back_as_the_same_cpus(cpus: list[int]) -> None:
    assert sorted(parse_cpus(_ranges(cpus))) == sorted(cpus)


@given(st.text(max_size=30))
def test_any_text_is_a_spec_or_a_clear_error(spec: str) -> None:
    try:
        found = cpus_for(spec, 3, [0, 1, 2, 3])
    except ValueError as exc:
        assert str(exc)
    else:
        assert found is None or found <= {0, 1, 2, 3}


@pytest.mark.parametrize("spec", ["", "off", " Off "])
def test_off_leaves_the_kernel_to_choose(spec: str) -> None:
    assert cpus_for(spec, 5, [0, 1]) is None
    assert worker_cpus(spec, [0, 1]) is None


@pytest.mark.parametrize(("spec", "said"), [
    ("1-0", "not a range"), ("0-99999", "not a range"), ("x", "not a CPU number"),
    ("0,,1", "not a CPU number"), ("-1", "not a CPU number"), ("\u0661", "not a CPU number"),
])
def test_bad_specs_say_what_is_wrong(spec: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        cpus_for(spec, 0, [0, 1])


def test_a_worker_is_told_to_name_its_cpu() -> None:
    with pytest.raises(ValueError, match="list of CPUs"):
        worker_cpus("auto", [0, 1])


def test_the_node_refuses_a_bad_spec_at_start() -> None:
    with pytest.raises(ConfigError, match="'cpu_affinity' must be off, auto or a list"):
        from_mapping({"cpu_affinity": "4095"})  # never an allowed CPU on a test machine
    assert from_mapping({"cpu_affinity": "auto"}).cpu_affinity == "auto"
