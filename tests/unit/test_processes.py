"""`--processes N` (node.processes): each process's ports, the check that refuses a
configuration whose processes would collide, and what process 0 does when a child fails.

The port tests are pure. The child tests fork this test process through
`run_processes` with a stand-in for the node: process 0 runs a small event loop and
says it has started (`HupRelay.started`, as node.server's Node does), the child does
whatever the test needs, and the test looks at what process 0 was told and returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.cli import main
from node.config import NodeConfig, from_mapping
from node.errors import ConfigError
from node.processes import (
    ROLES,
    HupRelay,
    check_ports,
    port_problem,
    process_config,
    run_processes,
)

pytestmark = pytest.mark.timeout(60)


def _ports(config: NodeConfig, index: int) -> dict[str, int]:
    derived = process_config(config, index, "n")
    return {role: int((derived.workers.endpoint if role == "workers"
                       else getattr(derived, role)).rsplit(":", 1)[1]) for role in ROLES}


# --- ports ---------------------------------------------------------------------------------


def test_the_defaults_never_collide_up_to_16_processes() -> None:
    for n in range(1, 17):
        assert port_problem(from_mapping({"processes": n})) is None, n
    config = NodeConfig()
    assert _ports(config, 0) == {"admin": 8081, "workers": 7950, "gossip": 7946, "peer": 7947}
    assert _ports(config, 1) == {"admin": 8181, "workers": 8050, "gossip": 8046, "peer": 8047}
    assert _ports(config, 2) == {"admin": 8281, "workers": 8150, "gossip": 8146, "peer": 8147}
    assert process_config(config, 2, "n").id == "n.2"
    assert process_config(config, 1, "n").seeds == ["tcp://127.0.0.1:7947"]


def test_ports_one_apart_no_longer_collide() -> None:
    """QA's case: gossip P and peer P + 1 (the defaults, 18646/18647): under +i, process
    1's gossip port was process 0's peer port."""
    config = from_mapping({"processes": 2, "gossip": "tcp://*:18646", "peer": "tcp://*:18647",
                           "admin": "127.0.0.1:18648", "workers": {"endpoint": "tcp://*:18649"}})
    assert port_problem(config) is None
    assert _ports(config, 1) == {"admin": 18748, "workers": 18749, "gossip": 18746,
                                 "peer": 18747}


def test_port_zero_stays_zero() -> None:
    config = from_mapping({"processes": 3, "admin": "127.0.0.1:0", "gossip": "tcp://*:0",
                           "peer": "tcp://*:*", "workers": {"endpoint": "tcp://*:0"}})
    assert port_problem(config) is None
    derived = process_config(config, 2, "n")
    assert (derived.admin, derived.gossip, derived.peer, derived.workers.endpoint) == (
        "127.0.0.1:0", "tcp://*:0", "tcp://*:*", "tcp://*:0")


@pytest.mark.parametrize(("settings", "expected"), [
    ({"processes": 3, "gossip": "tcp://*:7947", "peer": "tcp://*:7847"},
     "--processes 3: process 1's peer port 7947 is process 0's gossip port; choose ports "
     "that do not differ by a multiple of 100 (process i binds each configured port + 100*i)"),
    ({"processes": 2, "admin": "127.0.0.1:7980"},
     "--processes 2: process 1's admin port 8080 is the http port; choose ports that do not "
     "differ by a multiple of 100 (process i binds each configured port + 100*i)"),
    ({"processes": 2, "gossip": "tcp://*:7947"},
     "--processes 2: process 0's peer port 7947 is process 0's gossip port; give each its "
     "own port"),
    ({"processes": 2, "admin": "127.0.0.1:65500"},
     "--processes 2: process 1's admin port would be 65600, past 65535; the configured "
     "admin port must be at most 65435 (process i binds it + 100*i)"),
    ({"processes": 2, "workers": {"endpoint": "ipc:///run/scale0.sock"}},
     "--processes 2: every process would bind the workers endpoint ipc:///run/scale0.sock; "
     "give a tcp:// one (process i binds its port + 100*i)"),
    ({"processes": 2, "https": ":8443", "tls_cert": ["c"], "tls_key": ["k"],
      "peer": "tcp://*:8343"},
     "--processes 2: process 1's peer port 8443 is the https port; choose ports that do not "
     "differ by a multiple of 100 (process i binds each configured port + 100*i)"),
])
def test_a_collision_is_refused_naming_both_owners(settings: dict[str, object],
                                                   expected: str) -> None:
    config = from_mapping(settings)
    assert port_problem(config) == expected
    with pytest.raises(ConfigError) as refused:
        check_ports(config)
    assert str(refused.value) == expected


def test_the_same_port_on_different_hosts_is_no_collision() -> None:
    config = from_mapping({"processes": 2, "admin": "127.0.0.1:7946",
                           "gossip": "tcp://10.0.0.1:7946"})
    assert port_problem(config) is None
    config = from_mapping({"processes": 2, "admin": "127.0.0.1:7946"})  # gossip on *
    assert port_problem(config) is not None


_ANCHOR = st.integers(1100, 64000)
_NEAR = st.tuples(st.integers(-5, 5), st.integers(-3, 3))  # a few apart, and hundreds
_HOSTS = st.sampled_from(["*", "127.0.0.1", "10.0.0.1"])


@st.composite
def _configs(draw: st.DrawFn) -> NodeConfig:
    """Ports near one anchor (a few apart, or a multiple of 100 apart: where collisions
    are), now and then 0, on a few hosts; 1 to 12 processes."""
    anchor = draw(_ANCHOR)

    def port() -> int:
        if draw(st.integers(0, 15)) == 0:
            return 0
        small, hundreds = draw(_NEAR)
        return min(65535, max(1, anchor + small + 100 * hundreds))

    def host() -> str:
        return draw(_HOSTS)

    http_host = draw(_HOSTS).replace("*", "")
    return from_mapping({
        "processes": draw(st.integers(1, 12)),
        "http": f"{http_host}:{port() or anchor}",
        "admin": f"{host().replace('*', '0.0.0.0')}:{port()}",
        "workers": {"endpoint": f"tcp://{host()}:{port()}"},
        "gossip": f"tcp://{host()}:{port()}",
        "peer": f"tcp://{host()}:{port()}",
    })


def _binds(config: NodeConfig) -> list[tuple[str, int]]:
    """(host, port) of every socket the processes would bind, from `process_config`."""
    out = []
    for index in range(config.processes):
        derived = process_config(config, index, "n")
        for role in ROLES:
            address = derived.workers.endpoint if role == "workers" else getattr(derived, role)
            host, _, port = address.removeprefix("tcp://").rpartition(":")
            if port not in ("0", "*"):
                out.append((host, int(port)))
    host, _, port = config.http.rpartition(":")
    return [(host, int(port)), *out]


def _collide(binds: list[tuple[str, int]]) -> bool:
    wild = {"", "*", "0.0.0.0"}
    for i, (host, port) in enumerate(binds):
        if port > 65535:
            return True
        for other_host, other_port in binds[i + 1:]:
            if port == other_port and (host == other_host or {host, other_host} & wild):
                return True
    return False


@given(_configs())
def test_either_the_ports_are_distinct_or_the_check_refuses(config: NodeConfig) -> None:
    """Never both, never neither: what `process_config` hands each process collides
    exactly when `port_problem` says so."""
    problem = port_problem(config)
    assert (problem is not None) == _collide(_binds(config)), problem


def test_the_cli_refuses_in_one_line_before_forking(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_fork() -> int:
        raise AssertionError("forked although the ports collide")

    monkeypatch.setattr(os, "fork", no_fork)
    code = main(["node", "--processes", "3", "--cache", "memory", "--gossip", "tcp://*:7947",
                 "--peer", "tcp://*:7847"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("scale0: --processes 3: process 1's peer port 7947 is process 0's gossip "
                   "port; choose ports that do not differ by a multiple of 100 (process i "
                   "binds each configured port + 100*i)\n")


# --- a child that fails --------------------------------------------------------------------


def _run(stand: _Stand, **settings: object) -> int:
    """`run_processes` with 2 processes, leaving this process's SIGHUP as it found it."""
    previous = signal.getsignal(signal.SIGHUP)
    try:
        # any free HTTP port: run_processes binds the configured one for a moment
        config = from_mapping({"processes": 2, "http": "127.0.0.1:0", **settings})
        return run_processes(config, "n", stand)
    finally:
        signal.signal(signal.SIGHUP, previous)


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _until(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + 20
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


class _Stand:
    """A stand-in for `_run_one`: `child` runs in process 1; process 0 serves until
    stopped, saying it started before (`early`) or after process 1 ended."""

    def __init__(self, child: Callable[[], int], *, early: bool, stays: float = 20.0) -> None:
        self.child, self.early, self.stays = child, early, stays
        self.go_r, self.go_w = os.pipe()  # process 1 waits for a byte on it
        self.stopped = False

    def __call__(self, config: NodeConfig, relay: HupRelay) -> int:
        if not config.id.endswith(".0"):
            os.read(self.go_r, 1)
            return self.child()
        return asyncio.run(self._first(relay))

    async def _first(self, relay: HupRelay) -> int:
        stop = asyncio.Event()
        child = relay.children[0]
        if self.early:
            relay.started(stop.set)
            os.write(self.go_w, b"g")
        else:  # process 1 ends while process 0 is still starting
            os.write(self.go_w, b"g")
            watch = relay.watch
            assert watch is not None
            await asyncio.to_thread(_until, lambda: _zombie(child) and watch.failed,
                                    "process 1 to end and be seen")
            relay.started(stop.set)
            assert stop.is_set(), "a child that failed first must stop process 0 at once"
        try:
            await asyncio.wait_for(stop.wait(), self.stays)
            self.stopped = True
        except TimeoutError:
            pass
        return 0


def _fail_to_bind() -> int:
    raise OSError("cannot bind tcp://*:7947: Address already in use")


@pytest.mark.parametrize("early", [True, False], ids=["after-start", "before-start"])
def test_a_child_that_fails_stops_the_whole_node(
        early: bool, caplog: pytest.LogCaptureFixture) -> None:
    stand = _Stand(_fail_to_bind, early=early)
    caplog.set_level(logging.ERROR, "node.processes")
    code = _run(stand, cache="memory")
    assert code == 1
    assert stand.stopped
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("process 1 (pid ") and "exited with status 1: stopping the "
               "whole node" in line for line in lines), lines


def test_a_child_killed_by_a_signal_is_named(caplog: pytest.LogCaptureFixture) -> None:
    def die() -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    stand = _Stand(die, early=True)
    caplog.set_level(logging.ERROR, "node.processes")
    assert _run(stand) == 1
    assert stand.stopped
    assert any("was killed by SIGKILL" in r.getMessage() for r in caplog.records)


def test_a_child_that_stops_cleanly_leaves_the_others_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    stand = _Stand(lambda: 0, early=True, stays=1.0)
    caplog.set_level(logging.WARNING, "node.processes")
    assert _run(stand) == 0
    assert not stand.stopped  # served on until its own end
    assert any("stopped cleanly (exit status 0); the other processes carry on"
               in r.getMessage() for r in caplog.records)
