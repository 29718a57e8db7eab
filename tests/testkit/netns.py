"""Two datacenters in network namespaces, 40 ms apart with 1% loss: a test fixture.

    east (10.250.1.2) ──veth── router (10.250.1.1 | 10.250.2.1) ──veth── west (10.250.2.2)

Three namespaces with unique names (`s0-<pid>-<token>-east|west|rt`), joined by
veth pairs through the router namespace, which forwards IP. Addresses exist
only inside the namespaces, so they cannot clash with the host's.

This kernel has no netem, so the delay is done in user space: the router
redirects every TCP connection from one datacenter to the other (iptables nat
REDIRECT) to a relay in the router namespace, which reads the original
destination (SO_ORIGINAL_DST), connects to it, and delivers every chunk
`delay_s` after it arrived, in order, in both directions. ZeroMQ is TCP, so
that is the WAN for our purposes; UDP and ICMP cross undelayed. The peer a
datacenter sees is the router's address, not the other node's. Loss is real
packet loss: the router drops 1% of the packets it receives from either side
(`iptables -m statistic --mode random --probability 0.01 -j DROP`), and TCP
retransmits as it would across a real WAN.

`two_dcs` is the pytest fixture; `two_datacenters()` the context manager under
it. Everything created is torn down at the end, even on failure, and only what
this fixture created. Where namespaces are not permitted (not root, no `ip`,
no iptables, a container without CAP_NET_ADMIN) the fixture skips and says why.
This file is also the relay's program: `python netns.py relay PORT DELAY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
RELAY_PORT = 7999
CHUNK = 65536


@dataclass(frozen=True)
class Datacenter:
    """One datacenter: a namespace and the address its processes can bind."""

    name: str
    netns: str
    address: str
    subnet: str

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this datacenter."""
        return ["ip", "netns", "exec", self.netns]


def _ip(*args: str) -> None:
    """Run `ip ARGS`; a failure names the command and what it printed."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _in(netns: str, *args: str) -> None:
    _ip("netns", "exec", netns, *args)


def unavailable_reason() -> str | None:
    """Why two_datacenters() cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install -y {package})"
    probe = f"s0-{os.getpid()}-probe-{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` is not permitted here: {exc}"
    try:
        _in(probe, "iptables", "-t", "nat", "-S")
        _in(
            probe,
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.01",
            "-j",
            "DROP",
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"iptables nat/statistic unavailable in a namespace: {exc}"
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _ip("netns", "del", probe)
    return None


class TwoDatacenters:
    """A built topology. Use through `two_datacenters()` or the `two_dcs` fixture."""

    def __init__(self, delay_s: float, loss: float, log_dir: Path) -> None:
        base = f"s0-{os.getpid()}-{secrets.token_hex(2)}"
        self.delay_s = delay_s
        self.loss = loss
        self.router = f"{base}-rt"
        self.east = Datacenter("east", f"{base}-east", "10.250.1.2", "10.250.1.0/24")
        self.west = Datacenter("west", f"{base}-west", "10.250.2.2", "10.250.2.0/24")
        self._created: list[str] = []
        self._relay: subprocess.Popen[bytes] | None = None
        self._relay_log = log_dir / f"{base}-relay.log"

    def build(self) -> None:
        for ns in (self.router, self.east.netns, self.west.netns):
            _ip("netns", "add", ns)
            self._created.append(ns)
            _in(ns, "ip", "link", "set", "lo", "up")
        for dc, rt_if, rt_addr in (
            (self.east, "re", "10.250.1.1"),
            (self.west, "rw", "10.250.2.1"),
        ):
            # Both ends are born inside their namespaces: nothing appears on the host.
            _ip(
                "link",
                "add",
                rt_if,
                "netns",
                self.router,
                "type",
                "veth",
                "peer",
                "name",
                "dc0",
                "netns",
                dc.netns,
            )
            _in(self.router, "ip", "addr", "add", f"{rt_addr}/24", "dev", rt_if)
            _in(self.router, "ip", "link", "set", rt_if, "up")
            _in(dc.netns, "ip", "addr", "add", f"{dc.address}/24", "dev", "dc0")
            _in(dc.netns, "ip", "link", "set", "dc0", "up")
            _in(dc.netns, "ip", "route", "add", "default", "via", rt_addr)
        _in(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for rt_if, other in (("re", self.west.subnet), ("rw", self.east.subnet)):
            _in(
                self.router,
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                rt_if,
                "-p",
                "tcp",
                "-d",
                other,
                "-j",
                "REDIRECT",
                "--to-ports",
                str(RELAY_PORT),
            )
        if self.loss > 0:
            drop = [
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                str(self.loss),
                "-j",
                "DROP",
            ]
            for rt_if in ("re", "rw"):
                _in(self.router, "iptables", "-A", "INPUT", "-i", rt_if, *drop)
                _in(self.router, "iptables", "-A", "FORWARD", "-i", rt_if, *drop)
        self._start_relay()

    def _start_relay(self) -> None:
        log = open(self._relay_log, "wb")  # noqa: SIM115 - the child holds it; closed below
        try:
            self._relay = subprocess.Popen(
                [
                    *["ip", "netns", "exec", self.router],
                    sys.executable,
                    str(Path(__file__)),
                    "relay",
                    str(RELAY_PORT),
                    str(self.delay_s),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        assert self._relay.stdout is not None
        os.set_blocking(self._relay.stdout.fileno(), False)
        deadline = time.monotonic() + 20
        seen = b""
        while b"ready" not in seen:
            if self._relay.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the delay relay did not start; see {self._relay_log}")
            with contextlib.suppress(BlockingIOError, TypeError):
                seen += self._relay.stdout.read() or b""
            time.sleep(0.01)  # polling the child's ready line with a deadline

    def prefix(self, where: Datacenter | str) -> list[str]:
        """argv prefix for a command in a datacenter (or the router, by namespace name)."""
        return ["ip", "netns", "exec", where.netns if isinstance(where, Datacenter) else where]

    def run(
        self, where: Datacenter | str, args: Sequence[str], timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace and capture its output."""
        return subprocess.run(
            [*self.prefix(where), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def popen(
        self, where: Datacenter | str, args: Sequence[str], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start a command inside a namespace; the caller stops it (by its PID).

        `ip netns exec` execs the command in place, so the PID is the command's."""
        proc: subprocess.Popen[bytes] = subprocess.Popen([*self.prefix(where), *args], **kwargs)
        return proc

    def drop_rules(self) -> list[str]:
        """The router's packet-loss rules, as `iptables -S` prints them."""
        out = self.run(self.router, ["iptables", "-S"]).stdout
        return [ln for ln in out.splitlines() if "statistic" in ln and "DROP" in ln]

    def close(self) -> None:
        """Stop the relay and delete every namespace this object created."""
        if self._relay is not None and self._relay.poll() is None:
            self._relay.terminate()
            try:
                self._relay.wait(5)
            except subprocess.TimeoutExpired:
                self._relay.kill()
                self._relay.wait(5)
        if self._relay is not None and self._relay.stdout is not None:
            self._relay.stdout.close()
        errors = []
        for ns in reversed(self._created):
            try:
                _ip("netns", "del", ns)  # takes its veth ends and iptables rules with it
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        self._created.clear()
        if errors:
            raise RuntimeError("netns teardown incomplete: " + "; ".join(errors))


@contextlib.contextmanager
def two_datacenters(
    delay_s: float = 0.04, loss: float = 0.01, log_dir: Path | None = None
) -> Iterator[TwoDatacenters]:
    """Build the two-datacenter topology; tear it down on exit, even on failure."""
    topo = TwoDatacenters(delay_s, loss, log_dir or Path("/tmp"))
    try:
        topo.build()
        yield topo
    finally:
        topo.close()


@pytest.fixture
def two_dcs(tmp_path: Path) -> Iterator[TwoDatacenters]:
    """East and west datacenters 40 ms apart each way, 1% loss between them.

    Import it into a test module (`from testkit.netns import two_dcs`) and mark
    the test `@pytest.mark.netns`."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with two_datacenters(log_dir=tmp_path) as topo:
        yield topo


@pytest.fixture(scope="module")
def two_dcs_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDatacenters]:
    """`two_dcs` built once for a whole test module (tests must not change it)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with two_datacenters(log_dir=tmp_path_factory.mktemp("netns")) as topo:
        yield topo


# -- the relay (runs inside the router namespace) --------------------------------


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk delivered `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

    async def take() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def give() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)  # the WAN delay itself
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(take())
        tasks.create_task(give())


async def _serve(port: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        dst_port = struct.unpack("!H", raw[2:4])[0]
        dst_ip = socket.inet_ntoa(raw[4:8])
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(dst_ip, dst_port), 10
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_carry(reader, up_writer, delay))
                tasks.create_task(_carry(up_reader, writer, delay))
        except* (OSError, TimeoutError):
            pass  # refused, reset or unreachable: closing the client's side says so
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    server = await asyncio.start_server(handle, "0.0.0.0", port, backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _die_with_parent() -> None:
    """Exit when the test process dies, even by SIGKILL (no stray relay left running)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, 15)  # SIGTERM


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "relay":
        sys.exit("usage: netns.py relay PORT DELAY_SECONDS")
    _die_with_parent()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(int(sys.argv[2]), float(sys.argv[3])))
