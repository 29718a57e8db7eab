"""Free TCP ports on loopback for the demo, the tests and the benchmarks.

Asking the kernel for port 0 hands out a port from the *ephemeral* range — the
same range every outgoing connection takes its local port from. A port found
that way and released can be taken a moment later by some process's outgoing
ZeroMQ or HTTP connection before our node binds it (the demo lost a node to
exactly that). So ports are drawn at random from below the ephemeral range,
where the kernel never assigns outgoing ports, probed by binding, and never
handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_LOWEST = 20000
_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """A port on `host` that was free a moment ago and that no outgoing connection
    will take meanwhile; `preferred` first when it is free."""
    with _lock:
        if preferred and preferred not in _handed_out and _bindable(preferred, host):
            _handed_out.add(preferred)
            return preferred
        high = ephemeral_low() - 1
        low = _LOWEST if high - _LOWEST > 1000 else 1024
        for _ in range(200):
            port = random.randint(low, high)
            if port not in _handed_out and _bindable(port, host):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {host} between {low} and {high}")
