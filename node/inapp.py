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
"""

from __future__ import annotations

import importlib
from typing import Any

import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from node.errors import ConfigError

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
