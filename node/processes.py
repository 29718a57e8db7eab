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


def run_processes(config: NodeConfig, node_id: str, run_one: Callable[[NodeConfig], int]) -> int:
    """Fork `config.processes - 1` children, run process 0 here, then reap the children."""
    children: list[int] = []
    for index in range(1, config.processes):
        pid = os.fork()
        if pid == 0:  # the child: run its node and never return into the parent's code
            code = 1
            try:
                code = run_one(process_config(config, index, node_id))
            finally:
                os._exit(code)
        children.append(pid)
    try:
        code = run_one(process_config(config, 0, node_id))
    finally:
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
