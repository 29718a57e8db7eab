"""The lane's question to a mounted app (TornadoAppMount.may_claim) against the real
answer (`find`, Tornado's router on a real HTTPServerRequest): never "no" where the app
takes the request, and "no" for what no rule matches, so the lane is used."""

from __future__ import annotations

import tornado.web
from hypothesis import given, settings
from hypothesis import strategies as st
from tornado import httputil
from tornado.routing import PathMatches, Rule, RuleRouter

from node.http import Headers
from node.inapp import TornadoAppMount


class H(tornado.web.RequestHandler):
    def get(self, *args: str, **kwargs: str) -> None:
        self.write("ok")


class _Conn(httputil.HTTPConnection):
    """Nothing is written: `find` only builds the delegate."""

    def set_close_callback(self, callback: object) -> None:
        pass


def _app() -> tornado.web.Application:
    app = tornado.web.Application([
        (r"/a", H),
        (r"/items/(\d+)", H),
        (r"/named/(?P<slug>[a-z]+)", H),
        (r"/static-ish/.*", H),
        Rule(PathMatches(r"/nested/.*"), RuleRouter([(r"/nested/inner", H)])),
    ])
    app.add_handlers(r"admin\.example\.com", [(r"/only-admin", H)])
    app.add_handlers(r".*\.wild\.test", [(r"/w/(.*)", H)])
    return app


MOUNT = TornadoAppMount(_app())
HOSTS = st.sampled_from(["a.test", "A.TEST:8080", "admin.example.com", "admin.example.com:81",
                         "x.wild.test", "wild.test", "[::1]:80"])
PATHS = st.one_of(
    st.sampled_from(["/a", "/a/", "/items/12", "/items/x", "/named/abc", "/named/ABC",
                     "/static-ish/x.css", "/nested/inner", "/nested/other", "/only-admin",
                     "/w/anything", "/", "/b"]),
    st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=12).map(
        lambda t: "/" + t))


def _found(host: str, path: str) -> bool:
    headers = httputil.HTTPHeaders({"Host": host})
    start = httputil.RequestStartLine("GET", path, "HTTP/1.1")
    return MOUNT.find(None, _Conn(), start, headers) is not None


@settings(max_examples=500)  # pure and fast: a few hundred requests take well under a second
@given(HOSTS, PATHS)
def test_may_claim_is_never_no_where_the_app_takes_the_request(host: str, path: str) -> None:
    # asked as node.front.Front.plain_request asks: with the target's path, no query
    claims = MOUNT.may_claim(host, path.partition("?")[0], Headers([("Host", host)]))
    if _found(host, path):
        assert claims
    else:
        assert not claims, "a request no rule takes should take the lane"


def test_a_router_of_its_own_making_is_always_asked() -> None:
    class Odd(RuleRouter):
        def find_handler(self, request: httputil.HTTPServerRequest,
                         **kwargs: object) -> httputil.HTTPMessageDelegate | None:
            return None

    app = tornado.web.Application([Rule(PathMatches(r"/odd/.*"), Odd([]))])
    mount = TornadoAppMount(app)
    assert mount.may_claim("a.test", "/odd/x", Headers())
    assert not mount.may_claim("a.test", "/even", Headers())
