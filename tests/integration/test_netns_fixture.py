"""The two-datacenter namespace fixture does what it says: delay, loss, clean teardown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.netns import (
    TwoDatacenters,
    two_datacenters,
    two_dcs,
    two_dcs_module,
    unavailable_reason,
)
from testkit.procs import wait_until

__all__ = ["two_dcs", "two_dcs_module"]  # the fixture is used by name below

pytestmark = pytest.mark.netns

ECHO_SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(8)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
"""

# Connects (retrying while the server comes up: the relay accepts first and closes
# when the far side refuses), then times ROUNDS one-byte round trips.
ECHO_CLIENT = """
import json, socket, sys, time
host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 20
while True:
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"x")
        if s.recv(1) == b"x":
            break
        s.close()
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("echo server unreachable across the datacenters")
    time.sleep(0.05)
rtts = []
for _ in range(rounds):
    t0 = time.monotonic()
    s.sendall(b"y")
    assert s.recv(1) == b"y"
    rtts.append(time.monotonic() - t0)
print(json.dumps(rtts))
"""


def _echo_server(topo: TwoDatacenters, port: int) -> subprocess.Popen[bytes]:
    server = topo.popen(
        topo.west,
        [sys.executable, "-c", ECHO_SERVER, topo.west.address, str(port)],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"listening"  # bounded: pytest timeout
    return server


def test_tcp_echo_across_datacenters_sees_the_inserted_delay(two_dcs: TwoDatacenters) -> None:
    server = _echo_server(two_dcs, 9000)
    try:
        done = two_dcs.run(
            two_dcs.east,
            [sys.executable, "-c", ECHO_CLIENT, two_dcs.west.address, "9000", "10"],
            timeout=60,
        )
        rtts = json.loads(done.stdout)
        assert len(rtts) == 10
        # 40 ms each way was inserted; any round trip faster than 80 ms bypassed it.
        assert min(rtts) >= 2 * two_dcs.delay_s, rtts
    finally:
        server.kill()
        server.wait(10)


REFUSED_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
print(repr(s.recv(1)))
"""


def test_a_refused_connection_across_datacenters_closes_instead_of_hanging(
    two_dcs: TwoDatacenters,
) -> None:
    # The relay accepts first; when the far side refuses it must close our side.
    done = two_dcs.run(
        two_dcs.east,
        [sys.executable, "-c", REFUSED_CLIENT, two_dcs.west.address, "9001"],
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b''"


def test_the_drop_rule_exists(two_dcs_module: TwoDatacenters) -> None:
    rules = two_dcs_module.drop_rules()
    assert rules, "no statistic DROP rule in the router"
    assert all("--mode random --probability 0.0" in r for r in rules), rules
    # Both directions lose packets: one rule per router-side interface and chain.
    assert {(r.split()[1], r.split()[3]) for r in rules} == {
        ("INPUT", "re"),
        ("INPUT", "rw"),
        ("FORWARD", "re"),
        ("FORWARD", "rw"),
    }


def test_a_datacenter_reaches_only_through_the_router(two_dcs_module: TwoDatacenters) -> None:
    topo = two_dcs_module
    routes = topo.run(topo.east, ["ip", "route"]).stdout
    assert "default via 10.250.1.1" in routes
    forwarding = topo.run(topo.router, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
    assert forwarding.strip() == "1"


def test_teardown_removes_everything_it_created_even_on_failure(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), two_datacenters(log_dir=tmp_path) as topo:
        names = [topo.router, topo.east.netns, topo.west.netns]
        relay = topo._relay
        raise RuntimeError("boom")
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert not [n for n in names if n in listed], listed
    assert relay is not None
    wait_until(lambda: relay.poll() is not None, timeout=10, what="the relay to exit")
