"""The Node: one `scale0 node` process wired from its config, and its lifecycle.

Start order binds the worker socket first (workers reconnect to it on their
own), then the admin listener, then the public HTTP listener last, so the node
never accepts a client it cannot serve; for its first worker-liveness period a
request for `default` waits for the workers and peers a restart lost (`_services`)
instead of a 404. SIGTERM or SIGINT drains in the other
direction: readiness turns 503, the HTTP listener stops accepting, in-flight
requests get `limits.drain_grace` seconds to finish, then the broker drains and
closes and the process exits 0. A second signal during the drain stops at once.

SIGHUP reloads the config file (node.reload): the new routes, static mounts,
cache rules and per-service settings are built first — a bad file is refused,
logged, and the old settings stay — then swapped in as whole immutable objects
(a new Pipeline, a new CacheConfig, new overflow policies), so requests in
flight finish with what they started with and no connection is touched. Keys
that only a restart can apply are logged as "needs a restart: KEY".
`Node.reload_hooks` are called with each accepted config (TLS certificates,
CurveZMQ keys reload there). With `--processes N` the first process passes
SIGHUP on to the others (node.processes `HupRelay`); one that arrives before
`start()` has finished is applied once it has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.httpserver import HTTPServer

from cache.stores import redact
from node import buildinfo, logsetup
from node.accesslog import AccessLog
from node.admin import AdminState, Unbranded, make_admin_app
from node.admintoken import guard
from node.broker import Broker, BrokerConfig
from node.busypoll import busy_polling
from node.cachestage import CacheStage
from node.config import NodeConfig, WorkersConfig, parse_hostport
from node.cpuaffinity import allowed_cpus, cpus_for, pin
from node.errors import ConfigError
from node.front import Front, FrontLimits, TornadoAppMount, bound_port
from node.gctune import settle_heap
from node.heaptrim import HeapTrim
from node.hitcache import HitCache
from node.http import Request, Response
from node.meshmember import MeshMember, http_advertised
from node.metrics import Metrics, metrics_route
from node.pipeline import NodeHandler, Pipeline, ServiceTimeouts
from node.reload import Settings, build, needs_restart
from node.replication import Replicator
from node.security import Security
from node.services import KnownServices, service_of_key
from node.stage import Stage
from node.statichits import StaticHits
from node.trimrule import TrimRule

if TYPE_CHECKING:
    from node.processes import HupRelay

log = logging.getLogger("scale0.node")


def default_node_id() -> str:
    return socket.gethostname().split(".", 1)[0] or "node"


def broker_config(workers: WorkersConfig) -> BrokerConfig:
    """The broker's own config from the `[workers]` table (fields both know)."""
    known = {f.name for f in dataclasses.fields(BrokerConfig)}
    values = {f.name: getattr(workers, f.name) for f in dataclasses.fields(workers)
              if f.name in known}
    return BrokerConfig(**values)


def front_limits(config: NodeConfig) -> FrontLimits:
    lim = config.limits
    return FrontLimits(max_header_size=lim.max_header_size, max_body_size=lim.max_body_size,
                       buffer_body_below=lim.buffer_body_below, idle_timeout=lim.idle_timeout,
                       header_timeout=lim.header_timeout, body_timeout=lim.body_timeout)


async def _cache_stage(spec: str, config: Any, node_id: str) -> tuple[Stage | None, Any]:
    """The cache stage for `--cache SPEC` ("off" for none) and its store, opened."""
    if spec.strip().lower() in ("", "off", "none"):
        return None, None
    from cache.stores import open_store

    try:
        store = open_store(spec)
        await store.open()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--cache {redact(spec)!r}: {redact(str(exc))}") from None
    return CacheStage(store, config, node_id=node_id), store


class Node:
    """One node process. `await run()` serves until SIGTERM/SIGINT, then drains."""

    def __init__(self, config: NodeConfig, *,
                 reload: Callable[[], NodeConfig | None] | None = None,
                 base: NodeConfig | None = None, relay: HupRelay | None = None) -> None:
        self.config = config
        self.node_id = config.id or default_node_id()
        self.settings = build(config)  # bad rules fail before any bind
        # SIGHUP: `reload()` reads the config again (None: there is no file);
        # `base` is what it is compared with (the file before --processes derived ours).
        self._load = reload
        self._base = base or config
        self._relay = relay  # --processes: the children SIGHUP goes on to
        self._started = False
        self._hup_owed = False  # a SIGHUP during start(): reload once started
        self.reload_hooks: list[Callable[[NodeConfig], None]] = []
        self.access: AccessLog | None = None
        self.pipeline: Pipeline | None = None
        self.handler: NodeHandler | None = None  # what the fronts call: the pipeline's front
        self.cache: Stage | None = None
        self.broker: Broker | None = None
        self.fronts: list[Front] = []
        self.servers: list[HTTPServer] = []
        self.admin_server: HTTPServer | None = None
        self.state: AdminState | None = None
        self.http_port = 0
        self.https_port = 0
        self.admin_port = 0
        self.cache_store: Any = None
        self.mesh: MeshMember | None = None
        self.replicator: Replicator | None = None
        self.metrics = Metrics()
        self.security: Security | None = None
        # Static files the fast wire answers from prepared bytes (node/statichits.py), and
        # the one shortcut it asks (the cache's prepared hits, which ask static_hits).
        self.static_hits = StaticHits() if config.http_server == "fast" else None
        self.prepared: HitCache | None = None
        self._stop = asyncio.Event()
        self._known: KnownServices | None = None  # set by start(): it needs the broker

    async def start(self) -> None:
        cfg = self.config
        beats = cfg.workers.heartbeat_interval
        warm_until = time.monotonic() + beats * (cfg.workers.heartbeat_liveness + 1)
        mount = None
        if cfg.app:  # imported before any socket is bound: a wrong --app fails alone
            from node.inapp import InNodeApp

            mount = TornadoAppMount(InNodeApp.from_spec(cfg.app).application,  # as `handle`:
                                    stamp=f"{self.node_id}; dc={cfg.dc}",  # stamped, counted
                                    observe=self.metrics.observe_request)
        self.security = security = Security(cfg)  # refuses to start half-protected
        self.reload_hooks.append(security.reload)
        broker = Broker(dataclasses.replace(broker_config(cfg.workers), secure=security.secure),
                        self.node_id)
        await broker.start()
        self.broker = broker
        from node.logsetup import configure

        self.access = configure(cfg, self.node_id)
        settings = self.settings
        cache, self.cache_store = await _cache_stage(cfg.cache, settings.cache, self.node_id)
        self.cache = cache
        host, port = parse_hostport(cfg.http, "--http")
        mesh = MeshMember(
            node_id=self.node_id, dc=cfg.dc, broker=broker, gossip_endpoint=cfg.gossip,
            peer_endpoint=cfg.peer, http_address=http_advertised(host, port, cfg.advertise),
            workers_endpoint=broker.bound_endpoint, seeds=list(cfg.seeds),
            advertise=cfg.advertise, discover=cfg.discover, preset=cfg.gossip_preset,
            policies=settings.policies, secure=security.secure)
        self.mesh = mesh
        self._known = KnownServices(lambda: broker.services() | mesh.table.services(),
                                    warm_until)
        if cache is not None:  # the Replicator stands in the cache stage's place
            assert isinstance(cache, CacheStage)
            self.replicator = Replicator(
                cache, mesh.agent, node_id=self.node_id, dc=cfg.dc, config=settings.replication,
                scope_for=lambda s: self.settings.replication.service_scopes.get(
                    s, self.settings.replication.scope),
                service_of=lambda key: service_of_key(self.settings.routes, key))
        self.pipeline = self._pipeline(settings)
        metrics = self.metrics

        stamp = f"{self.node_id}; dc={cfg.dc}"
        self.handler = handle = NodeHandler(self.pipeline, stamp, metrics.observe_request)

        if self.replicator is not None:
            await self.replicator.start(self._handle_current)
        await mesh.start(handle)
        store = self.cache_store
        metrics.set_sources(loads=broker.service_loads,
                            cache_stats=store.stats if store is not None else None,
                            peers=lambda: _peer_states(mesh), gossip=mesh.agent.stats,
                            forwarded=mesh.forward_counts)
        from node.dropstats import DropCollector

        rep = self.replicator
        metrics.registry.register(DropCollector(  # hostile frames, counted at scrape time
            broker=lambda: broker.stats, gossip=lambda: mesh.agent.stats()["dropped"],
            replication=rep.drops if rep is not None else None, gate=security.gate))
        self._start_admin(broker, mesh, cache)
        limits = front_limits(cfg)
        front = Front(handle, limits=limits, mount=mount)
        front.access_log = self.access
        # The policy as it is now (SIGHUP swaps it), asked for every answer: a partial of
        # getattr runs in C, where a lambda would be an interpreted call a request.
        https_policy = functools.partial(getattr, security, "https_policy")
        front.https_policy = https_policy  # redirects
        self.fronts.append(front)
        if (statics := self.static_hits) is not None:  # the fast wire
            # Fresh hits and static files of plain GETs answered from prepared bytes, before
            # any Request object exists (node/hitcache.py, node/statichits.py); stamped,
            # counted and logged like the rest. Without a cache an empty HitCache passes on.
            # Over https too: prepared heads carry the policy's HSTS, as the front's do.
            hits = self.prepared = cache.hits if isinstance(cache, CacheStage) else HitCache("")
            hits.stamp = statics.stamp = (("X-Scale0-Node", stamp),)
            hits.https_policy = statics.https_policy = https_policy
            hits.on_hit = lambda service, status: metrics.observe_request(
                service, status, "hit", 0.0)
            statics.on_hit = lambda service, status: metrics.observe_request(
                service, status, "static", 0.0)
            hits.access = statics.access = self.access
            hits.more, hits.more_held = statics.answer, statics.__len__
            front.shortcut = hits
        self.http_port = await self._listen_http(front, cfg.http, "--http")
        if security.certs is not None:
            secure = Front(handle, limits=limits, scheme="https", mount=mount)
            secure.access_log = self.access
            secure.https_policy = https_policy
            secure.shortcut = self.prepared  # slots are keyed by scheme: never shared
            self.fronts.append(secure)
            # The one SSLContext on either wire: SNI picks the site, SIGHUP swaps certificates.
            self.https_port = await self._listen_http(secure, cfg.https, "--https",
                                                      security.certs.context)
        assert self.state is not None
        self.state.ready = True
        https = (f" https={parse_hostport(cfg.https, '--https')[0] or '*'}:{self.https_port}"
                 if self.https_port else "")
        log.info("scale0 node %s (dc %s) ready: http=%s:%d%s admin=%s workers=%s mesh=%s "
                 "cache=%s build=%s", self.node_id, cfg.dc, host or "*", self.http_port, https,
                 cfg.admin, broker.bound_endpoint, mesh.endpoints, redact(cfg.cache) or "off",
                 buildinfo.describe())

    def _pipeline(self, settings: Settings) -> Pipeline:
        """The request path for `settings` (shares the cache, mesh and broker)."""
        assert self.mesh is not None
        mesh = self.mesh
        pre: list[Stage] = []  # the https policy is the fronts' (node/front.py): every answer
        assert self.security is not None
        if settings.static is not None:
            from node.static import StaticFiles

            if isinstance(settings.static, StaticFiles):
                settings.static.prepared = self.static_hits
            pre.append(settings.static)
        if self.static_hits is not None:  # mounts and https policy may have changed
            self.static_hits.forget()
        stages: list[Stage] = [ServiceTimeouts(settings.timeouts,
                                               self.config.workers.default_timeout)]
        if self.replicator is not None:
            stages.append(self.replicator)
        return Pipeline(pre, settings.routes, stages, mesh.dispatcher, self.node_id,
                        known_services=self._known,
                        trusted=self.security.trusted)

    async def _handle_current(self, request: Request) -> Response:
        assert self.pipeline is not None
        return await self.pipeline.handle(request)

    def _on_hup(self) -> None:
        """SIGHUP: on to the processes we forked, then reload, once started."""
        if self._relay is not None:
            self._relay.forward()
        if self._started:
            self.reload()
        else:
            self._hup_owed = True

    def in_flight(self) -> int:
        """Requests this node is serving now: its fronts' exchanges and its peers' requests
        (misses forwarded to it, cache fetches); the heap trim waits for none (heaptrim)."""
        mesh = self.mesh
        return (sum(front.in_flight for front in self.fronts)
                + (mesh.serving() if mesh is not None else 0))

    def reload(self) -> bool:
        """Read the config again and apply what can be applied; False if it was refused."""
        if self._load is None:
            log.warning("SIGHUP: nothing to reload (the node was started without --config)")
            return False
        try:
            new = self._load()
            if new is None:
                return False
            settings = build(new)
            from node.logsetup import configure

            access = configure(new, self.node_id)
        except (ConfigError, OSError) as exc:
            log.error("SIGHUP: config refused, the old one stays in force: %s", exc)
            return False
        for key in needs_restart(self._base, new):
            log.warning("SIGHUP: needs a restart: %s (the old value stays until then)", key)
        self.settings = settings
        self.access = access
        for front in self.fronts:
            front.access_log = access
        if self.static_hits is not None:
            self.static_hits.access = access
        if isinstance(self.cache, CacheStage):
            self.cache.hits.access = access
            self.cache.reconfigure(settings.cache)
        if self.replicator is not None:
            self.replicator.config = settings.replication
        if self.mesh is not None:
            self.mesh.dispatcher.policies = dict(settings.policies)
        if self.pipeline is not None:
            self.pipeline = self._pipeline(settings)
            if self.handler is not None:
                self.handler.pipeline = self.pipeline
        for hook in list(self.reload_hooks):
            try:
                hook(new)
            except Exception:  # one part's failure must not undo the others' reload
                log.exception("SIGHUP: a reload hook failed")
        for prepared in (self.prepared, self.static_hits):  # built by the old rules, policy,
            if prepared is not None:  # mounts and certificates: all of them, at once
                prepared.forget()
        log.info("SIGHUP: reloaded (%d routes, %d static mounts, services: %s)",
                 len(settings.routes.routes), len(new.static), ", ".join(new.services) or "-")
        return True

    async def _listen_http(self, front: Front, address: str, flag: str,
                           tls: ssl.SSLContext | None = None) -> int:
        """Serve `front` on `address` with the configured wire layer, over TLS with
        `tls`; the bound port."""
        cfg = self.config
        host, port = parse_hostport(address, flag)
        shared = cfg.processes > 1  # SO_REUSEPORT: the kernel spreads connections
        if cfg.http_server == "tornado":
            server = _listening(address, flag, lambda: front.listen(
                port, host, ssl_options=tls, reuse_port=shared))
            self.servers.append(server)
            return bound_port(server)
        from node.fastwire import FastHTTPServer, WireLimits

        lim = cfg.limits
        fast = FastHTTPServer(front, limits=WireLimits(
            max_header_size=lim.max_header_size, max_body_size=lim.max_body_size,
            idle_timeout=lim.idle_timeout, body_timeout=lim.body_timeout,
            header_timeout=lim.header_timeout,
            max_connections_per_client=lim.max_connections_per_client), ssl_context=tls)
        try:
            bound = await fast.listen(host, port, reuse_port=shared)
        except OSError as exc:
            raise OSError(f"cannot listen on {address} ({flag}): {exc.strerror or exc}") from exc
        front.adopt(fast)
        return bound

    def _start_admin(self, broker: Broker, mesh: MeshMember, cache: Stage | None) -> None:
        from mesh.dashboard import dashboard_routes
        from node.purge import purge_route

        self.state = AdminState(self.node_id, self.config.dc, broker.service_loads)
        host, port = parse_hostport(self.config.admin, "--admin")
        purge = cache.purge if isinstance(cache, CacheStage) else None
        routes = [metrics_route(self.metrics), purge_route(purge),
                  *dashboard_routes(mesh.mesh_json, version=lambda: mesh.table.version)]
        app = make_admin_app(self.state, extra_routes=routes)
        token = self.security.admin_token if self.security is not None else None
        server = HTTPServer(Unbranded(guard(app, token)), xheaders=False)  # token off loopback
        self.admin_server = _listening(self.config.admin, "--admin",
                                       lambda: _listen(server, port, host))
        self.admin_port = bound_port(self.admin_server)

    def stop(self) -> None:
        """Ask `run()` to drain and return (what SIGTERM does)."""
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(sig: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("second signal: stopping without waiting")
                raise SystemExit(1)
            log.info("%s: draining (grace %.0fs)", signal.Signals(sig).name,
                     self.config.limits.drain_grace)
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        flusher: asyncio.Task[None] | None = None
        trimming: asyncio.Task[None] | None = None
        try:
            await self.start()
            self._started = True
            if self._relay is not None:  # --processes: a failed child stops us (ChildWatch)
                self._relay.started(self.stop)
            log.debug("%d start-up objects frozen out of the collector's scans", settle_heap())
            # Memory a spike left, back to the OS once the node is quiet (node.heaptrim);
            # its baseline is read now, with start-up done and its objects frozen.
            heap = HeapTrim(TrimRule(after=self.config.return_memory_after), self.in_flight)
            self.reload_hooks.append(
                lambda new: heap.set_rule(TrimRule(after=new.return_memory_after)))
            if self._hup_owed or (self._relay is not None and self._relay.take_pending()):
                self.reload()
            flusher = loop.create_task(_flush_access_log_every_second())
            trimming = loop.create_task(heap.run())
            await self._stop.wait()
            clean = await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in (flusher, trimming):
                if task is not None:
                    task.cancel()
            logsetup.flush()
        log.info("scale0 node %s stopped%s", self.node_id,
                 "" if clean else " (some requests did not finish within the grace period)")
        return 0

    async def shutdown(self) -> bool:
        """Drain and close everything; True if every in-flight request finished."""
        if self.state is not None:
            self.state.draining = True
        end = time.monotonic() + self.config.limits.drain_grace
        results = await asyncio.gather(*(f.drain(self.config.limits.drain_grace)
                                         for f in self.fronts))
        if self.broker is not None:
            await self.broker.drain(max(0.0, end - time.monotonic()))
        if self.replicator is not None:
            await self.replicator.stop()
        if self.mesh is not None:
            await self.mesh.stop()  # says LEAVE: peers stop sending us work
        if self.broker is not None:
            await self.broker.close()
        if self.cache_store is not None:
            await self.cache_store.close()
        if self.admin_server is not None:
            self.admin_server.stop()
            await self.admin_server.close_all_connections()
        if self.security is not None:
            self.security.stop()
        return all(results)


async def _flush_access_log_every_second() -> None:
    while True:
        await asyncio.sleep(1.0)  # a flush period, like nginx's access_log flush=1s
        logsetup.flush()


def _listen(server: HTTPServer, port: int, host: str) -> HTTPServer:
    server.listen(port, host)
    return server


def _listening(address: str, flag: str, listen: Callable[[], HTTPServer]) -> HTTPServer:
    try:
        return listen()
    except OSError as exc:
        raise OSError(f"cannot listen on {address} ({flag}): {exc.strerror or exc}") from exc


def _peer_states(mesh: MeshMember) -> dict[str, int]:
    counts: dict[str, int] = {}
    for view in mesh.agent.members():
        if view.id != mesh.node_id:
            counts[view.state] = counts.get(view.state, 0) + 1
    return counts


def run_node(config: NodeConfig, reload: Callable[[], NodeConfig | None] | None = None) -> int:
    """Run a node (or `config.processes` of them) until told to stop; the exit code.
    `reload` reads the config again on SIGHUP."""
    from node.processes import HupRelay, run_processes

    if config.processes > 1:  # each process pins itself (node.processes)
        return run_processes(config, config.id or default_node_id(),
                             lambda derived, relay: _run_one(derived, reload, config, relay))
    allowed = allowed_cpus()
    pin(cpus_for(config.cpu_affinity, 0, allowed))  # before any thread is started
    relay = HupRelay()
    relay.catch_early()  # a SIGHUP while starting must not kill the node
    with busy_polling(config.busy_poll, allowed):  # every CPU a request's chain may wake
        return _run_one(config, reload, relay=relay)


def _run_one(config: NodeConfig, reload: Callable[[], NodeConfig | None] | None = None,
             base: NodeConfig | None = None, relay: HupRelay | None = None) -> int:
    node = Node(config, reload=reload, base=base, relay=relay)

    async def main() -> int:
        return await node.run()

    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    return int(runner(main()))
