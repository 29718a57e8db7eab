"""Which service a request belongs to: `--route HOST[/PREFIX]=SERVICE` rules.

A rule's host is exact (`www.example.com`), a wildcard for every subdomain at
any depth (`*.example.com`, which does not match `example.com` itself), or `*`
for any host. A prefix matches whole path segments: `/api` takes `/api`,
`/api/x` and `/api?q` but not `/apix`. Among the rules that match, the most
specific host wins (exact, then the longest wildcard, then `*`), then the
longest prefix. A request no rule takes goes to the `default` service; if
there is no such service either, it is refused with 404 and a one-line reason.
Pure: the caller says which services exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from node.errors import ConfigError, NoRoute

DEFAULT_SERVICE: Final = "default"
# What a service name may use, everywhere one is given (routes, [services], a worker's
# --service; node.protocol refuses any other in a READY).
SERVICE_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_HOST_CHARS: Final = set("abcdefghijklmnopqrstuvwxyz0123456789.-_*")


@dataclass(frozen=True, slots=True)
class Route:
    """One rule. `host` is lower-case without port; `prefix` is "" or starts with "/"."""

    host: str
    prefix: str
    service: str

    @classmethod
    def parse(cls, spec: str) -> Route:
        """`HOST[/PREFIX]=SERVICE`, e.g. `*.example.com/api=api`. ConfigError if malformed."""
        where = f"--route {spec!r}"
        left, sep, service = spec.partition("=")
        service = service.strip()
        if not sep or not service:
            raise ConfigError(f"{where}: expected HOST[/PREFIX]=SERVICE, e.g. www.example.com=www")
        if not set(service) <= SERVICE_NAME_CHARS:
            raise ConfigError(f"{where}: service names use letters, digits, '.', '_' and '-'")
        host, slash, path = left.strip().partition("/")
        host = host.lower()
        if not host:
            raise ConfigError(f"{where}: the host is missing (use * for any host)")
        if not set(host) <= _HOST_CHARS:
            raise ConfigError(f"{where}: host {host!r} has characters a host name cannot have"
                              " (no port: rules match the name only)")
        if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[1:]):
            raise ConfigError(f"{where}: a wildcard must be the first label, as in *.example.com")
        prefix = ("/" + path).rstrip("/") if slash else ""
        return cls(host, prefix, service)

    def host_rank(self, host: str) -> int:
        """How specifically this rule names `host`: -1 no match, 0 `*`, else higher."""
        if self.host == "*":
            return 0
        if self.host.startswith("*."):
            suffix = self.host[1:]
            return len(suffix) if host.endswith(suffix) and len(host) > len(suffix) else -1
        return 10_000 if host == self.host else -1

    def takes_path(self, path: str) -> bool:
        if not self.prefix:
            return True
        return path == self.prefix or path.startswith(self.prefix + "/")


def hostname(authority: str) -> str:
    """`authority` without its port, lower-cased; IPv6 literals keep their brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end >= 0 else authority
    return authority.split(":", 1)[0].rstrip(".")


class ServiceMap:
    """The routing rules of one node; immutable once built."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes = tuple(routes)

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> ServiceMap:
        return cls(Route.parse(s) for s in specs)

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def match(self, authority: str, path: str) -> Route | None:
        """The rule that takes this request, or None."""
        if not self._routes:
            return None  # the usual single-service node: nothing to rank
        host = hostname(authority)
        best: Route | None = None
        best_key = (-1, -1)
        for route in self._routes:
            rank = route.host_rank(host)
            if rank < 0 or not route.takes_path(path):
                continue
            key = (rank, len(route.prefix))
            if key > best_key:  # first rule wins a tie: order in the config matters
                best, best_key = route, key
        return best

    def service_for(self, authority: str, path: str, known: Collection[str] | None) -> str:
        """The service for a request. `known` lists the services that exist (None:
        do not check). Raises NoRoute when nothing matches and no `default` exists."""
        route = self.match(authority, path)
        if route is not None:
            return route.service
        return self.unrouted(authority, known)

    def unrouted(self, authority: str, known: Collection[str] | None) -> str:
        """The service of a request no rule takes (`match` gave None): `default`, or
        NoRoute when `known` (the services that exist) lacks it."""
        if known is not None and DEFAULT_SERVICE not in known:
            raise NoRoute(
                f"no route for host {hostname(authority) or '(none)'!r} and no "
                f"{DEFAULT_SERVICE!r} service"
            )
        return DEFAULT_SERVICE


def service_of_key(mapper: ServiceMap, key: str) -> str:
    """The service this node maps a cache key (an absolute URL) to; `default` when no rule
    takes it. A replica is judged by this, never by the service its sender names: what
    one node calls a service is no authority over another's policies."""
    _, sep, rest = key.partition("://")
    if not sep:
        return DEFAULT_SERVICE
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host, path = rest[:cut], rest[cut:].partition("?")[0] or "/"
    route = mapper.match(host, path)
    return route.service if route is not None else DEFAULT_SERVICE


_DEFAULT_ONLY: Final = frozenset({DEFAULT_SERVICE})


class KnownServices:
    """The services the pipeline may route a request no rule takes to (it asks only whether
    `default` is one): those `offered` here or by any peer we know of, with two rules.

    For the first worker-liveness period after start (`warm_until`: heartbeat_interval x
    (heartbeat_liveness + 1) from then), `default` counts as offered even before anyone
    offers it: a node restarted on its ports is reached by its workers (they heartbeat,
    hear DISCONNECT, say READY again) and its peers' reports only within that period, and
    a request that comes first waits for them in the queue. Without this, a rolling restart
    answered 404 "no 'default' service" for the second or two between the listener opening
    and the first worker's READY.

    Once `default` was offered it stays known when its last worker goes (a crash, a deploy
    restarting the app): its requests are then what any service's are with no worker —
    cache hits and stale-if-error answers are served, a miss waits for a worker or a peer
    until its deadline (503) — not a 404 "no 'default' service". From then on the answer
    needs no scan of the workers and the load table (a set union a request).
    """

    def __init__(self, offered: Callable[[], set[str]], warm_until: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._offered = offered
        self._warm_until = warm_until
        self._clock = clock
        self.default_seen = False

    def __call__(self) -> Collection[str]:
        if self.default_seen:
            return _DEFAULT_ONLY
        known = self._offered()
        if DEFAULT_SERVICE in known:
            self.default_seen = True
        elif self._clock() < self._warm_until:
            known.add(DEFAULT_SERVICE)
        return known
