"""CurveZMQ for every ZeroMQ socket of a node and its workers, with a ZAP allow-list.

CURVE alone encrypts but admits any client key: only a ZAP handler makes it an
allow-list. So a node started with `--curve KEYDIR` runs `Gatekeeper` (pyzmq's
`ThreadAuthenticator`, in its own thread so a busy event loop cannot stall
handshakes), sets `ZAP_ENFORCE_DOMAIN` on its server sockets (no handler → no
connection), and proves the gate works with a self-test: a throw-away client
with an unlisted key must be refused, or the node refuses to start.

Key directory layout (pyzmq certificate files: NAME.key public, NAME.key_secret
secret + public):

    node KEYDIR/                  worker KEYDIR/
      node.key, node.key_secret     worker.key, worker.key_secret  (any NAME)
      authorized/*.key              node.key   (the node's public key only)
        public keys of the peers and workers allowed in

A node dials peers too (SUB to their gossip PUB, DEALER to their peer ROUTER),
and a CURVE client must know the server's key before it connects. A peer's
certificate in `authorized/` names where that peer listens, in its metadata
(`endpoints = "tcp://10.0.0.6:7946 tcp://10.0.0.6:7947"` or `host = "10.0.0.6"`);
`scale0 keygen --endpoint/--host` writes it. An endpoint with no listed key is
not dialled (CurveError), so an unlisted server is never trusted either.

`CurveKeys.secure(sock, endpoint)` is the one socket hook: `endpoint == ""`
means "this socket binds" (CURVE server); otherwise it is a client about to
connect to `endpoint`. Removing a key and `reload()` refuses new handshakes with
it; sessions already established stay until they reconnect (workers and peers
reconnect on silence, and the node restarts its sockets only on restart).

A refused handshake is logged at WARNING with the client's address and its public
key (Z85; a public key is no secret), so "my worker never joins" has an answer in
the node's log. `RefusalLog` bounds those lines: a refused worker retries every
second and a hostile client can try thousands of keys.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("scale0.curve")
NODE = "node"
AUTHORIZED = "authorized"
DOMAIN = "scale0"  # the ZAP domain of every server socket


class CurveError(Exception):
    """The key directory is wrong, or CURVE cannot be made safe: the operator's to fix."""


def keygen(directory: str | Path, name: str = NODE,
           metadata: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into `directory`; (public_path, secret_path).

    Refuses to overwrite an existing secret: replacing a key must be deliberate."""
    if not name or "/" in name or name.startswith("."):
        raise CurveError(f"bad key name {name!r}: a plain file name is needed")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if (d / f"{name}.key_secret").exists():
        raise CurveError(f"{d / (name + '.key_secret')} exists; remove it to make a new key")
    public, secret = zmq.auth.create_certificates(str(d), name, metadata)
    Path(secret).chmod(0o600)
    if metadata:  # pyzmq writes metadata into the secret file only; peers read the public one
        pub = Path(public)
        lines = "".join(f"    {k} = {v}\n" for k, v in metadata.items())
        pub.write_text(pub.read_text().replace("metadata\n", "metadata\n" + lines, 1))
    return Path(public), Path(secret)


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # z85, 40 bytes
    secret: bytes


def _load_pair(path: Path) -> KeyPair:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read key {path}: {exc}") from None
    if not public or not secret:
        raise CurveError(f"{path} holds no secret key (expected a .key_secret file)")
    return KeyPair(public, secret)


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read public key {path}: {exc}") from None
    if len(public) != 40:
        raise CurveError(f"{path}: not a CURVE public key")
    return public


def _metadata(path: Path) -> dict[str, str]:
    """The `metadata` section of a pyzmq certificate file (key = "value" lines)."""
    out: dict[str, str] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            section = line.strip()
        elif section == "metadata" and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def _host(endpoint: str) -> str:
    try:
        return urlsplit(endpoint).hostname or ""
    except ValueError:
        return ""


@dataclass
class CurveKeys:
    """One process's keys: its own pair, who may connect, and whom it may dial."""

    own: KeyPair
    authorized: frozenset[bytes] = frozenset()
    server_key: bytes | None = None  # a worker's node
    by_endpoint: dict[str, bytes] = field(default_factory=dict)
    by_host: dict[str, bytes] = field(default_factory=dict)
    keydir: Path | None = None

    @classmethod
    def load(cls, keydir: str | Path) -> CurveKeys:
        """A node's KEYDIR (node.key_secret + authorized/), or a worker's (NAME.key_secret,
        node.key)."""
        d = Path(keydir)
        if not d.is_dir():
            raise CurveError("no such directory (make one with `scale0 keygen`)")
        if (d / f"{NODE}.key_secret").exists():
            keys = cls(_load_pair(d / f"{NODE}.key_secret"), keydir=d)
            keys.reload()
            return keys
        secrets = sorted(d.glob("*.key_secret"))
        if len(secrets) != 1:
            raise CurveError("expected node.key_secret, or exactly one "
                             f"NAME.key_secret and node.key for a worker; found "
                             f"{[p.name for p in secrets]}")
        if not (d / f"{NODE}.key").exists():
            raise CurveError("a worker needs the node's public key as node.key")
        return cls(_load_pair(secrets[0]), server_key=_load_public(d / f"{NODE}.key"), keydir=d)

    def reload(self) -> None:
        """Re-read authorized/ (SIGHUP). A bad file is skipped with a warning, not fatal."""
        if self.keydir is None:
            return
        allowed: set[bytes] = set()
        by_endpoint: dict[str, bytes] = {}
        by_host: dict[str, bytes] = {}
        folder = self.keydir / AUTHORIZED
        if not folder.is_dir():  # not wrong (nobody is let in), but rarely what was meant
            log.warning("%s does not exist: no worker or peer key is authorized, so every "
                        "CURVE handshake is refused (copy their .key files there, then "
                        "SIGHUP)", folder)
        for path in sorted(folder.glob("*.key")) if folder.is_dir() else []:
            try:
                key = _load_public(path)
                meta = _metadata(path)
            except (CurveError, OSError) as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            allowed.add(key)
            for ep in meta.get("endpoints", "").split():
                by_endpoint[ep] = key
            for h in meta.get("host", "").split():
                by_host[h] = key
        self.authorized = frozenset(allowed)
        self.by_endpoint, self.by_host = by_endpoint, by_host

    def server_key_for(self, endpoint: str) -> bytes:
        """The public key the server at `endpoint` must prove it holds."""
        if self.server_key is not None:
            return self.server_key
        key = self.by_endpoint.get(endpoint) or self.by_host.get(_host(endpoint))
        if key is None:
            raise CurveError(f"no authorized key names {endpoint} (add endpoints/host metadata "
                             f"to the peer's certificate in {AUTHORIZED}/)")
        return key

    def secure(self, sock: zmq.Socket[Any], endpoint: str = "") -> None:
        """The socket hook: "" → CURVE server (before bind), else client of `endpoint`."""
        if endpoint:
            secure_client(sock, self.own, self.server_key_for(endpoint))
        else:
            secure_server(sock, self.own)


def secure_server(sock: zmq.Socket[Any], own: KeyPair) -> None:
    """Make `sock` a CURVE server that refuses everyone when no ZAP handler answers."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_server = True
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.setsockopt(zmq.ZAP_DOMAIN, DOMAIN.encode())


def secure_client(sock: zmq.Socket[Any], own: KeyPair, server_public: bytes) -> None:
    """Make `sock`'s next connect() a CURVE client of the server holding `server_public`."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server_public


class RefusalLog:
    """Which refused handshakes get a log line (pure; the clock is injected).

    One line per (address, key) per `interval`, and at most `burst` lines per
    `interval` in all, whatever the number of addresses and keys: the log grows by a
    bounded amount under any flood. Each line says how many refusals went unlogged
    since the line before; `curve_handshakes_total{result="denied"}` counts them all."""

    def __init__(self, interval: float = 60.0, burst: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be positive and burst at least 1")
        self.interval, self.burst, self._clock = interval, burst, clock
        self._last: dict[tuple[str, str], float] = {}  # pairs logged lately
        self._window = -math.inf  # start of the current interval of the burst budget
        self._lines = 0  # lines in that interval
        self.unlogged = 0  # refusals not logged since the last line

    def refused(self, address: str, key: str) -> int | None:
        """None: say nothing; else log now, saying this many went unlogged before it."""
        now = self._clock()
        if now - self._window >= self.interval:
            self._window, self._lines = now, 0
        last = self._last.get((address, key))
        if (last is not None and now - last < self.interval) or self._lines >= self.burst:
            self.unlogged += 1
            return None
        if len(self._last) >= 4 * self.burst:
            # Pairs logged within the last interval are at most 2 * burst (two windows'
            # budgets): memory stays bounded under a flood of distinct keys.
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        self._last[(address, key)] = now
        self._lines += 1
        unlogged, self.unlogged = self.unlogged, 0
        return unlogged


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, telling the gate where each request comes from: the
    credentials callback is given only the domain and the key."""

    def __init__(self, gate: Gatekeeper, ctx: zmq.Context[Any]) -> None:
        super().__init__(ctx, log=logging.getLogger("scale0.zap"))
        self._gate = gate

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # ZAP request frames: version, request id, domain, address, identity, mechanism...
        raw = msg[3] if len(msg) > 3 else b""
        self._gate.address = raw[:64].decode("ascii", "replace") or "?"
        await super().handle_zap_message(msg)


class Gatekeeper:
    """The ZAP handler: only keys in `keys.authorized` complete a handshake."""

    def __init__(self, keys: CurveKeys, ctx: zmq.Context[Any] | None = None,
                 refusals: RefusalLog | None = None) -> None:
        self.keys = keys
        self.ctx = ctx or zmq.Context.instance()
        self.allowed = 0
        self.denied = 0
        self.refusals = refusals or RefusalLog()
        self.address = ""  # of the ZAP request being decided (set on the ZAP thread)
        self._quiet: bytes | None = None  # the self-test's key: refused on purpose, unlogged
        self._auth: ThreadAuthenticator | None = None
        self._lock = threading.Lock()

    # pyzmq's CredentialsProvider interface: called on the ZAP thread per handshake.
    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.keys.authorized  # a frozenset swapped whole by reload(): no lock
        with self._lock:
            if ok:
                self.allowed += 1
            else:
                self.denied += 1
        if not ok and key != self._quiet:
            self._log_refusal(key)
        return ok

    def _log_refusal(self, key: bytes) -> None:
        z85 = key.decode("ascii", "replace")  # pyzmq hands the key over Z85-encoded
        unlogged = self.refusals.refused(self.address, z85)
        if unlogged is None:
            return
        folder = self.keys.keydir / AUTHORIZED if self.keys.keydir else AUTHORIZED
        log.warning("refused a CurveZMQ handshake from %s: public key %s is not in %s "
                    "(to let this worker or peer in, copy its .key file there and SIGHUP "
                    "the node)%s", self.address or "?", z85, folder,
                    f"; {unlogged} more refusals not logged since the last line"
                    if unlogged else "")

    @property
    def running(self) -> bool:
        return self._auth is not None and self._auth.is_alive()

    def start(self, self_test: bool = True) -> None:
        """Start ZAP; with `self_test`, prove an unlisted key is refused or raise CurveError."""
        # A ZAP handler stopped a moment ago in this context releases its inproc endpoint
        # asynchronously (libzmq's reaper): wait for it, briefly, rather than fail.
        deadline = time.monotonic() + 2.0
        while True:
            self._auth = _Authenticator(self, self.ctx)
            try:
                self._auth.start()
                break
            except zmq.ZMQError as exc:
                self._auth.stop()
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise CurveError(f"cannot start the ZAP authenticator: {exc}") from exc
                time.sleep(0.01)  # the endpoint is being released: poll until it is
        self._auth.configure_curve_callback(DOMAIN, credentials_provider=self)
        if self_test:
            self.self_test()

    def reload(self) -> int:
        """Re-read the authorized keys (SIGHUP); the number now allowed."""
        self.keys.reload()
        log.info("CURVE keys reloaded: %d authorized", len(self.keys.authorized))
        return len(self.keys.authorized)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def self_test(self, timeout: float = 5.0) -> float:
        """Connect with a fresh unlisted key; raise CurveError unless it is refused.

        Returns how long the refusal took (seconds)."""
        if not self.running:
            raise CurveError("the ZAP authenticator is not running: CURVE would admit any key")
        tmp = Path(tempfile.mkdtemp(prefix="scale0-zap-"))
        server = self.ctx.socket(zmq.ROUTER)
        client = self.ctx.socket(zmq.DEALER)
        try:
            secure_server(server, self.keys.own)
            server.linger = client.linger = 0
            port = server.bind_to_random_port("tcp://127.0.0.1")
            _, secret = zmq.auth.create_certificates(str(tmp), "stranger")
            stranger = _load_pair(Path(secret))
            self._quiet = stranger.public  # its refusal is the expected outcome: no warning
            secure_client(client, stranger, self.keys.own.public)
            return _expect_refusal(client, server, f"tcp://127.0.0.1:{port}", timeout)
        finally:
            server.close(0)
            client.close(0)
            shutil.rmtree(tmp, ignore_errors=True)


def _expect_refusal(client: zmq.Socket[Any], server: zmq.Socket[Any], endpoint: str,
                    timeout: float) -> float:
    """Connect `client`; seconds until its handshake fails, CurveError if it gets through."""
    monitor = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                        | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        started = time.monotonic()
        client.connect(endpoint)
        # A message the server would receive if the key got through. The monitor's
        # handshake events decide either way, so a send refused with EAGAIN (no pipe yet:
        # it happened in about one start in ten under load) changes nothing.
        with contextlib.suppress(zmq.Again):
            client.send(b"self-test", zmq.NOBLOCK)
        poller = zmq.Poller()
        poller.register(monitor, zmq.POLLIN)
        poller.register(server, zmq.POLLIN)
        end = started + timeout
        while (left := end - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000) + 1))
            if server in ready:
                raise CurveError("an unlisted CURVE key got through: ZAP is not enforcing")
            if monitor in ready:
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    return time.monotonic() - started
                raise CurveError("an unlisted CURVE key completed a handshake")
        raise CurveError(f"the CURVE self-test got no answer within {timeout}s")
    finally:
        client.disable_monitor()
        monitor.close(0)
