"""In-node handlers: Tornado routes run inside the node, before the cache and the workers.

`--app MODULE:ATTR` names a list of Tornado URL rules (what
`tornado.web.Application(handlers)` takes: `(pattern, Handler[, kwargs[, name]])`
tuples, `url(...)` or `Rule` objects), a `tornado.web.Application`, or a
zero-argument callable returning either. `load_app` imports it and says
plainly what is wrong when it cannot (a bad spec, a missing module, an import
error inside the module, a missing attribute, a value of the wrong kind), as a
ConfigError the CLI shows the operator.

`InNodeApp` holds the mounted application and answers one question for the
front door, cheaply and without running a handler: is there a route for this
request? The front door hands the requests that match to `application`
(a real `tornado.web.Application`, so handlers keep everything Tornado gives
them) and the rest to the pipeline.

An in-node answer is a first-class answer (`TornadoAppMount`, `AppAnswer`): the
front door hands the app a connection that adds X-Request-Id (the client's if it
is sane, as the pipeline does) and X-Scale0-Node to the head the app writes —
the mechanism node/tls.py `AddFields` uses for HSTS — and, when the app
finishes, writes one access line and counts the request with outcome `app`.
No Via: the node is the origin of these answers, not a proxy. A handler that fails
after its head went out (Tornado's send_error can then only finish the answer as if
whole) has its connection aborted instead, logged and counted with outcome `error`.
Tornado's own `tornado.access` lines go to DEBUG (`quiet_log_function`): ours are
the record.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import tornado.web
from tornado import httputil
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine, split_host_and_port
from tornado.routing import Router, RuleRouter

from node.accesslog import quiet_log_function
from node.errors import ConfigError
from node.http import Headers, Request, Response
from node.proxyheaders import request_id_of
from node.tls import AddFields, policy_target

if TYPE_CHECKING:
    from node.accesslog import AccessLog

Observe = Callable[[str, int, str, float], None]  # node.metrics Metrics.observe_request
log = logging.getLogger("scale0.inapp")
# RequestHandler.send_error: after the head is out it can only call finish(), which
# would end the broken answer as a whole one (a final 0-chunk); AppAnswer aborts instead.
_SEND_ERROR = tornado.web.RequestHandler.send_error.__code__


def _in_send_error() -> bool:
    """Whether this call comes from Tornado's RequestHandler.send_error (a handler that
    raised, or called it itself)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _SEND_ERROR:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class Stamping(Protocol):
    """How a mount's answers are marked: the X-Scale0-Node value ("" = none) and the
    metrics call that counts each one (service, status, outcome, seconds)."""

    stamp: str
    observe: Observe | None

Rules = list[Any]  # what tornado.web.Application(handlers=...) accepts


def parse_spec(spec: str) -> tuple[str, str]:
    """("package.module", "attr.path") from "package.module:attr.path"."""
    module, sep, attr = spec.partition(":")
    module, attr = module.strip(), attr.strip()
    if not sep or not module or not attr:
        raise ConfigError(f"--app {spec!r}: expected MODULE:ATTR, e.g. myapp.handlers:routes")
    for part in (*module.split("."), *attr.split(".")):
        if not part.isidentifier():
            raise ConfigError(f"--app {spec!r}: {part!r} is not a Python name")
    return module, attr


def load_app(spec: str) -> Rules:
    """The URL rules that `spec` ("MODULE:ATTR") names; ConfigError saying why not."""
    return rules_of(load_value(spec), spec)


def load_value(spec: str) -> Rules | tornado.web.Application:
    """What `spec` names, checked: a list of URL rules or an Application (kept whole,
    with its settings, when it is one)."""
    module_name, attr = parse_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name
                                     or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"--app {spec!r}: no module named {exc.name!r} (is it installed, "
                f"or on PYTHONPATH?)"
            ) from exc
        raise ConfigError(f"--app {spec!r}: importing {module_name} failed: {exc}") from exc
    except Exception as exc:  # the app's own code failed at import: say so, with its message
        raise ConfigError(
            f"--app {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from exc
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigError(f"--app {spec!r}: {module_name} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, tornado.web.Application | type):
        try:
            value = value()
        except Exception as exc:
            raise ConfigError(
                f"--app {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(value, tornado.web.Application):
        return value
    return rules_of(value, spec)


def rules_of(value: object, spec: str = "app") -> Rules:
    """The URL rules of a list of rules or of a tornado.web.Application."""
    if isinstance(value, tornado.web.Application):
        # Host-independent rules only; mount the Application itself (InNodeApp) to keep
        # its add_handlers() host rules and settings.
        return list(value.wildcard_router.rules)
    if isinstance(value, list | tuple):
        rules = list(value)
        try:
            tornado.web.Application(rules)  # Tornado's own check of each rule's shape
        except Exception as exc:
            raise ConfigError(f"--app {spec!r}: not valid Tornado URL rules: {exc}") from exc
        return rules
    raise ConfigError(
        f"--app {spec!r}: expected a list of Tornado URL rules or a tornado.web.Application, "
        f"got {type(value).__name__}"
    )


class InNodeApp:
    """A mounted in-node application and its route table.

    Given rules, it builds a `tornado.web.Application(rules, **settings)`; given
    an Application, it mounts that one as it is (settings are then ignored)."""

    def __init__(self, app: Rules | tornado.web.Application, **settings: Any) -> None:
        if isinstance(app, tornado.web.Application):
            self.application = app
        else:
            self.application = tornado.web.Application(rules_of(app), **settings)
        self.rules: Rules = list(self.application.wildcard_router.rules)

    @classmethod
    def from_spec(cls, spec: str, **settings: Any) -> InNodeApp:
        return cls(load_value(spec), **settings)

    def matches(self, path: str, host: str = "", method: str = "GET") -> bool:
        """Whether a route of the app answers `path` (a URL path, query allowed) on `host`.

        Builds no handler and touches no connection: it asks Tornado's router,
        so host rules, regex groups and `Rule` matchers behave as in Tornado."""
        if not path.startswith("/"):
            return False
        headers = HTTPHeaders({"Host": host or "localhost"})
        try:
            start = RequestStartLine(method, path.split("?", 1)[0], "HTTP/1.1")
            request = HTTPServerRequest(start_line=start, headers=headers)
            return self.application.default_router.find_handler(request) is not None
        except Exception:  # a path Tornado cannot parse, or a matcher choking on it: not ours
            return False


_FIND = RuleRouter.find_handler


class _Probe:
    """What Tornado's matchers read of a request (PathMatches: path; HostMatches:
    host_name; DefaultHostMatches: headers), without building one."""

    __slots__ = ("headers", "host_name", "path")

    def __init__(self, path: str, host_name: str, headers: Headers) -> None:
        self.path, self.host_name, self.headers = path, host_name, headers


def _may_claim(router: object, probe: _Probe) -> bool:
    """RuleRouter.find_handler's walk without making a handler: True as soon as a rule
    that matches leads to anything but a router that, walked the same way, declines."""
    if not isinstance(router, RuleRouter) or type(router).find_handler is not _FIND:
        return True  # a router of its own making: only asking it can tell
    for rule in router.rules:
        try:
            matched = rule.matcher.match(probe)  # type: ignore[arg-type]  # duck-typed
        except Exception:  # a matcher reading what the probe lacks: let `find` decide
            return True
        if matched is None:
            continue
        if isinstance(rule.target, Router):
            if _may_claim(rule.target, probe):
                return True
            continue
        return True
    return False


class TornadoAppMount:
    """Mount a `tornado.web.Application`: it answers the requests its rules match.

    `stamp` is the node's X-Scale0-Node value and `observe` counts each answer
    (node.metrics `observe_request`), as the pipeline's answers are stamped and
    counted by node/server.py."""

    def __init__(self, app: tornado.web.Application, *, stamp: str = "",
                 observe: Observe | None = None) -> None:
        self._app = app
        self.stamp = stamp
        self.observe = observe
        app.settings.setdefault("log_function", quiet_log_function)  # an app's own stands

    def may_claim(self, host: str, path: str, fields: Headers) -> bool:
        """Whether the app's rules could take a request for `host` and `path` — asked by
        the fast wire's lane (node.front.Front.plain_request) before it skips the
        Tornado request object `find` needs. Tornado's own matchers decide, on a probe
        carrying what they read (path, host name, fields); a router or matcher we cannot
        look into says yes, so the usual way (`find`) settles it."""
        probe = _Probe(path, split_host_and_port(host.lower())[0], fields)
        return _may_claim(self._app.default_router, probe)

    def find(self, server_conn: object, request_conn: httputil.HTTPConnection,
             start_line: RequestStartLine,
             headers: HTTPHeaders) -> httputil.HTTPMessageDelegate | None:
        request = HTTPServerRequest(
            connection=request_conn, server_connection=server_conn,
            start_line=start_line, headers=headers,
        )
        found: httputil.HTTPMessageDelegate | None = self._app.default_router.find_handler(request)
        return found


class AppAnswer(AddFields):
    """The connection a mounted app writes its answer through.

    Made for every request the front door offers the app (cheap: two fields);
    `claim` is called only when the app takes the request. Until then it adds
    just what it was given (HSTS); after, the request id and the node stamp
    too, and it notes status and body bytes for the access line and the metric
    it writes once, when the app finishes (or the client leaves mid-answer)."""

    def __init__(self, conn: httputil.HTTPConnection, fields: list[tuple[str, str]]) -> None:
        super().__init__(conn, fields)
        self.started = time.monotonic()
        self.request: Request | None = None
        self.status = 0
        self.sent = 0
        self.head_seconds = 0.0
        self.error_page = False  # the head is send_error's own (the handler failed before it)
        self.failed = False  # the handler failed after its head: the answer was aborted
        self._mount: Stamping | None = None
        self._access: AccessLog | None = None
        self.on_end: Callable[[], None] | None = None  # the front's in-flight count, once

    def claim(self, mount: Stamping, access: AccessLog | None,
              start_line: RequestStartLine, headers: HTTPHeaders, scheme: str) -> None:
        """The app took the request: give it an id (in its headers, so handlers can log
        it) and remember what the access line needs."""
        fields = Headers(headers.get_all())
        request_id = request_id_of(fields)
        headers["X-Request-Id"] = request_id
        where = policy_target(start_line, headers, scheme)  # None: a head the app took as is
        context = getattr(self._conn, "context", None)
        self.request = Request(
            method=start_line.method, target=where.target if where else start_line.path,
            headers=fields, scheme=scheme, host=where.host if where else "",
            client=str(getattr(context, "remote_ip", "") or ""), request_id=request_id,
            received=self.started)
        self._fields = [*self._fields, ("X-Request-Id", request_id)]
        if mount.stamp:
            self._fields.append(("X-Scale0-Node", mount.stamp))
        self._mount, self._access = mount, access

    def write_headers(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                      headers: HTTPHeaders, chunk: bytes | None = None) -> asyncio.Future[None]:
        if isinstance(start_line, httputil.ResponseStartLine):
            self.status = start_line.code
            self.error_page = _in_send_error()
        self.head_seconds = time.monotonic() - self.started
        self.sent += len(chunk or b"")
        return self._watched(super().write_headers, start_line, headers, chunk)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        self.sent += len(chunk)
        return self._watched(super().write, chunk)

    def _watched(self, write: Callable[..., asyncio.Future[None]],
                 *args: Any) -> asyncio.Future[None]:
        """A write that fails ends the answer: logged then (the app may never finish it,
        and a handler's finish() after a failed write does not reach ours)."""
        try:
            future = write(*args)
        except BaseException:
            self.report()
            self._ended()
            raise
        future.add_done_callback(self._written)
        return future

    def _written(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.report()
            self._ended()

    def finish(self) -> None:
        try:
            if self.status and not self.error_page and _in_send_error():
                self._abort()
            else:
                super().finish()
        finally:
            self.report()
            self._ended()

    def _abort(self) -> None:
        """The handler failed after its head went out: the only honest signal left is an
        aborted message (as for a worker's stream that breaks, and as nginx does), never
        a final chunk that would pass the truncated body on as whole."""
        self.failed = True
        request = self.request
        log.warning("in-node answer to %s failed after its head: connection aborted",
                    f"{request.method} {request.host}{request.target} [{request.request_id}]"
                    if request is not None else "a client")
        close = getattr(self._conn, "close", None)
        if close is not None:
            close()

    def _ended(self) -> None:
        end, self.on_end = self.on_end, None
        if end is not None:
            end()

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """The handler's own callback (RequestHandler sets one), and an answer the client
        left in the middle of logged like the pipeline's: with the status it had."""
        if callback is None:
            self._conn.set_close_callback(None)  # type: ignore[attr-defined]
            return

        def closed() -> None:
            self.report()
            self._ended()
            callback()

        self._conn.set_close_callback(closed)  # type: ignore[attr-defined]

    def report(self) -> None:
        """The access line and the metric of a claimed answer, once; nothing if no head
        went out (a client that left before the app answered, as for the pipeline), or
        if the app's request was not claimed (never when the mount passed it on). Outcome
        `app`; `error` (with the status that went out) for an answer aborted because the
        handler failed after its head."""
        mount, request = self._mount, self.request
        if mount is None or request is None or not self.status:
            return
        self._mount = None
        outcome = "error" if self.failed else "app"  # an aborted answer is not a clean one
        if mount.observe is not None:
            mount.observe(request.service, self.status, outcome, self.head_seconds)
        if self._access is not None:
            self._access.log(request, Response(self.status, outcome=outcome), sent_bytes=self.sent,
                             duration=time.monotonic() - self.started)
