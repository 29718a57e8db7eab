"""`--processes N`: N node processes on one machine, one per core.

Python serves one core per process, so a node uses several cores by running
several processes (DESIGN "Speed"). They share the public HTTP port
(SO_REUSEPORT: the kernel spreads connections) and the file cache directory,
and each is a full mesh member with its own sockets: process i binds the
admin, workers, gossip and peer ports of the configuration plus i, is called
`ID.i`, and seeds itself from process 0 so they find each other (and so
overflow between them works like between any peers). Workers connect to any
of the workers ports.

The first process forks the others before any event loop or socket exists,
forwards SIGTERM/SIGINT to them when it drains, and waits for them.

SIGHUP to the first process (what `systemctl reload` sends to the main PID)
reloads every process: process 0 forwards it to each child it forked, and each
re-reads the config file itself, exactly as process 0 does (node.server
`Node.reload`); a child that has already exited is skipped. A SIGHUP that
arrives while a process is still starting, before its event loop takes the
signal over, is remembered and applied once it has started, instead of the
default action, which would kill it (`HupRelay`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from collections.abc import Callable

from node.config import NodeConfig

_PORT = re.compile(r"^(?P<head>.*:)(?P<port>\d+)$")


def offset_port(address: str, offset: int) -> str:
    """`tcp://*:7950` + 2 → `tcp://*:7952`; port 0 (any free port) stays 0."""
    m = _PORT.match(address)
    if m is None or offset == 0 or int(m["port"]) == 0:
        return address
    return f"{m['head']}{int(m['port']) + offset}"


def process_config(config: NodeConfig, index: int, node_id: str) -> NodeConfig:
    """The configuration of process `index` of `config.processes`."""
    derived = dataclasses.replace(config)
    derived.id = f"{node_id}.{index}"
    derived.admin = offset_port(config.admin, index)
    derived.gossip = offset_port(config.gossip, index)
    derived.peer = offset_port(config.peer, index)
    derived.workers = dataclasses.replace(
        config.workers, endpoint=offset_port(config.workers.endpoint, index)
    )
    if index > 0:
        first = config.peer.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        derived.seeds = [first, *config.seeds]
    return derived


class HupRelay:
    """SIGHUP for one node process: the children to pass it on to, and one that came early.

    `catch_early()` replaces the default action of SIGHUP (terminate) with a note,
    until the process's event loop installs its own handler; `take_pending()` then
    says whether a reload is owed for a signal that arrived in between."""

    def __init__(self) -> None:
        self.children: list[int] = []  # PIDs process 0 forked; empty in a child
        self._pending = False

    def catch_early(self) -> None:
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, _signum: int, _frame: object) -> None:
        self._pending = True

    def take_pending(self) -> bool:
        pending, self._pending = self._pending, False
        return pending

    def forward(self) -> None:
        """Send SIGHUP to every child. Children are reaped only at the very end, so a PID
        here is never another process's; one that exited is a zombie (the signal is a
        no-op) or, reaped, gone (skipped)."""
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass


def run_processes(config: NodeConfig, node_id: str,
                  run_one: Callable[[NodeConfig, HupRelay], int]) -> int:
    """Fork `config.processes - 1` children, run process 0 here, then reap the children."""
    relay = HupRelay()
    relay.catch_early()  # inherited by the children: none dies of an early SIGHUP
    children = relay.children
    for index in range(1, config.processes):
        pid = os.fork()
        if pid == 0:  # the child: run its node and never return into the parent's code
            code = 1
            try:
                relay.children = []  # a child forwards to nobody (its copy lists siblings)
                code = run_one(process_config(config, index, node_id), relay)
            finally:
                os._exit(code)
        children.append(pid)
    try:
        code = run_one(process_config(config, 0, node_id), relay)
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # stopping: a reload now means nothing
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if os.waitstatus_to_exitcode(status) != 0 and code == 0:
                code = 1
    return code
