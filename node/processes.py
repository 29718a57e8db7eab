"""`--processes N`: N node processes on one machine, one per core.

Python serves one core per process, so a node uses several cores by running
several processes (DESIGN "Speed"). They share the public HTTP (and HTTPS) port
(SO_REUSEPORT: the kernel spreads connections) and the file cache directory,
and each is a full mesh member with its own sockets: process i binds each of
the admin, workers, gossip and peer ports of the configuration plus 100·i
(`STRIDE`), is called `ID.i`, and seeds itself from process 0 so they find each
other (and so overflow between them works like between any peers). Workers
connect to any of the workers ports. Port 0 (any free port) stays 0.

Why 100 and not 1: the configured ports sit close together (the defaults are
8081, 7950, 7946 and 7947), and with a stride of 1, process 1's gossip port
7947 was process 0's peer port. Two processes' ports can only meet when two
configured ports differ by a multiple of the stride, and ports a few apart, as
operators pick them, never do for 100; the last two digits still name the role
and the hundreds the process (8081, 8181, 8281: admin of processes 0, 1, 2), as
predictable for an nginx or Envoy upstream list as +1 was. The defaults are
distinct modulo 100 and from the http port 8080, so they never meet for any N
(up to 575 processes, where admin would pass 65535). Before forking anything,
`check_ports` works out every process's ports and refuses with one line (a
ConfigError: exit 2) when two would be the same port on overlapping hosts or
one would pass 65535, naming both owners; an ipc:// workers endpoint, which
every process would share, is refused too.

The first process forks the others before any event loop or socket exists,
forwards SIGTERM/SIGINT to them when it drains, and waits for them. If it dies
without draining (SIGKILL, OOM), Linux sends each child SIGTERM (PR_SET_PDEATHSIG):
no orphan keeps serving and holding the ports a restart needs.

A child that fails is never left silent (`ChildWatch`): it logs why it could
not run (a port taken by something else, say) before it exits, and process 0
watches each child from a thread (waitid, without reaping). A child that exits
by itself with a non-zero status, or is killed by a signal, while process 0 is
not stopping makes process 0 log an error naming the child, its PID and how it
ended, and drain and stop the whole node, which then exits 1: under systemd
(Restart=on-failure) the node restarts in full instead of serving on with
fewer processes than configured and the dead one's workers port unanswered, and
without systemd the failure is as visible as a failed start. (If it fails
before process 0 has started, process 0 stops as soon as it has.) A child that
exits 0 was told to stop (a signal to its PID, or Ctrl-C to the process group)
and is logged; the others carry on.

SIGHUP to the first process (what `systemctl reload` sends to the main PID)
reloads every process: process 0 forwards it to each child it forked, and each
re-reads the config file itself, exactly as process 0 does (node.server
`Node.reload`); a child that has already exited is skipped. A SIGHUP that
arrives while a process is still starting, before its event loop takes the
signal over, is remembered and applied once it has started, instead of the
default action, which would kill it (`HupRelay`).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import re
import signal
import threading
from collections.abc import Callable

from node.busypoll import busy_polling
from node.config import NodeConfig
from node.cpuaffinity import allowed_cpus, cpus_for, pin
from node.errors import ConfigError

log = logging.getLogger(__name__)

STRIDE = 100  # process i binds each configured port + STRIDE·i
ROLES = ("admin", "workers", "gossip", "peer")  # the ports each process binds for itself
_PORT = re.compile(r"^(?P<head>.*:)(?P<port>\d+)$")
_ANY_HOST = frozenset({"", "*", "0.0.0.0", "::"})
_MAX_PORT = 65535


def offset_port(address: str, offset: int) -> str:
    """`tcp://*:7950` + 200 → `tcp://*:8150`; port 0 (any free port) stays 0."""
    m = _PORT.match(address)
    if m is None or offset == 0 or int(m["port"]) == 0:
        return address
    return f"{m['head']}{int(m['port']) + offset}"


def _address(config: NodeConfig, role: str) -> str:
    return config.workers.endpoint if role == "workers" else str(getattr(config, role))


def process_config(config: NodeConfig, index: int, node_id: str) -> NodeConfig:
    """The configuration of process `index` of `config.processes`."""
    derived = dataclasses.replace(config)
    derived.id = f"{node_id}.{index}"
    offset = STRIDE * index
    derived.admin = offset_port(config.admin, offset)
    derived.gossip = offset_port(config.gossip, offset)
    derived.peer = offset_port(config.peer, offset)
    derived.workers = dataclasses.replace(
        config.workers, endpoint=offset_port(config.workers.endpoint, offset)
    )
    if index > 0:
        first = config.peer.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        derived.seeds = [first, *config.seeds]
    return derived


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a TCP address (`HOST:PORT` or `tcp://HOST:PORT`); None for an
    ipc:// endpoint or any free port (0 or `*`)."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "tcp":
        return None
    host, _, port = (rest if sep else address).rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return None
    return host.strip("[]").lower(), int(port)


def port_problem(config: NodeConfig) -> str | None:
    """Why `config.processes` processes cannot all bind their ports, in one line; None if
    they can. Two binds meet when they have the same port and their hosts overlap (the
    same host, or either one every interface)."""
    n = config.processes
    taken: dict[int, list[tuple[str, str]]] = {}  # port → (host, whose) bound so far

    def claim(address: str, process: int | None, role: str) -> str | None:
        spot = _host_port(address)
        if spot is None:
            return None
        host, port = spot
        whose = f"the {role} port" if process is None else f"process {process}'s {role} port"
        if port > _MAX_PORT:
            return (f"--processes {n}: {whose} would be {port}, past {_MAX_PORT}; the "
                    f"configured {role} port must be at most {_MAX_PORT - STRIDE * (n - 1)} "
                    f"(process i binds it + {STRIDE}*i)")
        for other_host, other in taken.get(port, []):
            if host == other_host or host in _ANY_HOST or other_host in _ANY_HOST:
                hint = ("give each its own port" if not process else
                        f"choose ports that do not differ by a multiple of {STRIDE} "
                        f"(process i binds each configured port + {STRIDE}*i)")
                return f"--processes {n}: {whose} {port} is {other}; {hint}"
        taken.setdefault(port, []).append((host, whose))
        return None

    for role in ("http", "https"):  # one socket each, shared by every process
        address = str(getattr(config, role))
        if address and (problem := claim(address, None, role)):
            return problem
    if n > 1 and config.workers.endpoint.startswith("ipc://"):
        return (f"--processes {n}: every process would bind the workers endpoint "
                f"{config.workers.endpoint}; give a tcp:// one (process i binds its port "
                f"+ {STRIDE}*i)")
    for index in range(n):
        derived = process_config(config, index, "")
        for role in ROLES:
            if problem := claim(_address(derived, role), index, role):
                return problem
    return None


def check_ports(config: NodeConfig) -> None:
    """ConfigError (one line, exit 2) if the processes' ports would collide."""
    problem = port_problem(config)
    if problem:
        raise ConfigError(problem)


def claim_public_ports(config: NodeConfig) -> None:
    """OSError (`cannot listen on ADDRESS (--http): ...`, exit 1) if the HTTP or HTTPS
    address is taken. Every process binds it with SO_REUSEPORT, and Linux lets a
    SO_REUSEPORT bind join any socket of the same user that set it too: without this
    check, a second `--processes` node on the same port (an old one still running) starts
    without a word and the kernel splits the clients between the two. A plain bind, as a
    single process makes, is refused by any listener there; it is closed at once."""
    from tornado.netutil import bind_sockets

    from node.config import parse_hostport

    for role in ("http", "https"):
        address = str(getattr(config, role))
        if not address:
            continue
        host, port = parse_hostport(address, f"--{role}")
        if port == 0:  # each process takes a free port of its own
            continue
        try:
            probes = bind_sockets(port, None if host in _ANY_HOST else host)
        except OSError as exc:
            raise OSError(f"cannot listen on {address} (--{role}): "
                          f"{exc.strerror or exc}") from exc
        for probe in probes:
            probe.close()


def _ended(info: os.waitid_result) -> str:
    if info.si_code == os.CLD_EXITED:
        return f"exited with status {info.si_status}"
    try:
        name = signal.Signals(info.si_status).name
    except ValueError:
        name = f"signal {info.si_status}"
    return f"was killed by {name}"


class ChildWatch:
    """Process 0's watch on the processes it forked (module docstring: a child that fails
    stops the whole node). One thread per child waits for it to exit without reaping it,
    so its PID stays its own until `run_processes` reaps it at the very end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = False  # process 0 is stopping them itself: exits are expected
        self._owed = False  # a child failed before process 0 had started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[], None] | None = None
        self.failed = False

    def watch(self, index: int, pid: int) -> None:
        threading.Thread(target=self._wait, args=(index, pid), daemon=True,
                         name=f"scale0-process-{index}-watch").start()

    def _wait(self, index: int, pid: int) -> None:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # reaped already: process 0 is done
            return
        if info is None:  # only with WNOHANG, which is not asked for
            return
        with self._lock:
            if self._stopping:
                return
            if info.si_code == os.CLD_EXITED and info.si_status == 0:
                log.warning("process %d (pid %d) stopped cleanly (exit status 0); the other "
                            "processes carry on", index, pid)
                return
            log.error("process %d (pid %d) %s: stopping the whole node (it will exit 1)",
                      index, pid, _ended(info))
            self.failed = True
            loop, stop = self._loop, self._stop
            if loop is None or stop is None:
                self._owed = True  # process 0 stops as soon as it has started
                return
        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # its loop is closed: process 0 is stopping anyway
            pass

    def started(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Process 0 serves: later failures stop it through `loop`; an earlier one now."""
        with self._lock:
            self._loop, self._stop = loop, stop
            owed = self._owed and not self._stopping
        if owed:
            stop()

    def stopping(self) -> None:
        """Process 0 is stopping its children itself: their exits are no failure."""
        with self._lock:
            self._stopping = True


class HupRelay:
    """SIGHUP for one node process: the children to pass it on to, and one that came early.

    `catch_early()` replaces the default action of SIGHUP (terminate) with a note,
    until the process's event loop installs its own handler; `take_pending()` then
    says whether a reload is owed for a signal that arrived in between. In process 0
    of several, `watch` is the `ChildWatch` that `started()` hands the node's stop to."""

    def __init__(self) -> None:
        self.children: list[int] = []  # PIDs process 0 forked; empty in a child
        self.watch: ChildWatch | None = None  # process 0's, with --processes N > 1
        self._pending = False

    def catch_early(self) -> None:
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, _signum: int, _frame: object) -> None:
        self._pending = True

    def take_pending(self) -> bool:
        pending, self._pending = self._pending, False
        return pending

    def started(self, stop: Callable[[], None]) -> None:
        """Called by the node on its event loop once it serves; `stop` drains it."""
        if self.watch is not None:
            self.watch.started(asyncio.get_running_loop(), stop)

    def forward(self) -> None:
        """Send SIGHUP to every child. Children are reaped only at the very end, so a PID
        here is never another process's; one that exited is a zombie (the signal is a
        no-op) or, reaped, gone (skipped)."""
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass


def _child_failed(index: int, exc: BaseException) -> int:
    """Log why child `index` could not run (nobody else will: it ends in os._exit); its
    exit status."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    plain = isinstance(exc, OSError | ConfigError) or type(exc).__module__.startswith("zmq")
    log.error("process %d (pid %d) could not run: %s", index, os.getpid(),
              exc if plain else repr(exc), exc_info=not plain)
    return 1


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Linux: have this child sent SIGTERM (a drain) when process 0 dies, even by
    SIGKILL — orphans would keep serving and hold the ports a restart needs. Elsewhere
    a no-op: a service manager's KillMode=mixed (systemd) stops them instead."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # process 0 died between the fork and the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def run_processes(config: NodeConfig, node_id: str,
                  run_one: Callable[[NodeConfig, HupRelay], int]) -> int:
    """Check every process's ports, fork `config.processes - 1` children, run process 0
    here, then reap the children; 1 if any of them failed."""
    check_ports(config)  # before anything is forked or bound
    claim_public_ports(config)  # nobody else's, not even another node's SO_REUSEPORT group
    relay = HupRelay()
    relay.catch_early()  # inherited by the children: none dies of an early SIGHUP
    children = relay.children
    parent = os.getpid()
    allowed = allowed_cpus()  # before process 0 pins itself: what `auto` spreads over
    for index in range(1, config.processes):
        pid = os.fork()
        if pid == 0:  # the child: run its node and never return into the parent's code
            code = 1
            try:
                _die_with_parent(parent)
                relay.children = []  # a child forwards to nobody (its copy lists siblings)
                pin(cpus_for(config.cpu_affinity, index, allowed))  # before its threads
                code = run_one(process_config(config, index, node_id), relay)
            except BaseException as exc:
                code = _child_failed(index, exc)
            finally:
                logging.shutdown()  # flush before os._exit skips it
                os._exit(code)
        children.append(pid)
    # After the forks (each child pins itself), before the watch's threads start here.
    pin(cpus_for(config.cpu_affinity, 0, allowed))
    watch = relay.watch = ChildWatch()
    for index, pid in enumerate(children, start=1):
        watch.watch(index, pid)
    # The spinners are process 0's, after the forks: a child never holds their pipes.
    with busy_polling(config.busy_poll, allowed):
        return _run_first(config, node_id, relay, watch, run_one)


def _run_first(config: NodeConfig, node_id: str, relay: HupRelay, watch: ChildWatch,
               run_one: Callable[[NodeConfig, HupRelay], int]) -> int:
    """Process 0's node, then the children stopped and reaped; 1 if any of them failed."""
    children = relay.children
    try:
        code = run_one(process_config(config, 0, node_id), relay)
    finally:
        watch.stopping()
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
