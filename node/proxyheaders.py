"""What a proxy must do to headers on the way through, as pure functions.

Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection, not the message,
so they are removed in both directions: Connection and every field it lists,
Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade and any Proxy-* field. On
the way up we say who asked (X-Forwarded-For/-Proto/-Host and RFC 7239
Forwarded) and that we passed it on (Via); a request id is kept if the client
sent a sane one, otherwise made up, so one id follows the request through
every log. Nothing here does I/O; the id source is injected for tests.

Client-sent X-Forwarded-* and Forwarded are believed only when the TCP peer
is in `TrustedProxies` (a load balancer in front of us); from anyone else they
are dropped and replaced by what this node saw, so a client cannot claim to be
another address, https, or another host to the backend.

`normalise_target` turns the request-target of RFC 9112 §3.2 into the
(scheme, host, origin-form target) the pipeline works with.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from random import getrandbits as _bits
from typing import Final

from node.errors import ClientError
from node.http import Headers, Request

HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# A client may list these in Connection to make us drop them; we never do, because
# the request would change meaning (Host) or framing (Content-Length) under our feet.
_PROTECTED: Final = frozenset({"host", "content-length"})

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]{0,5})?")
_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDING: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                "forwarded"})
# What an untrusted client's request loses on its way upstream, in the same one pass.
_HOP_BY_HOP_AND_FORWARDING: Final = HOP_BY_HOP | _FORWARDING
# The fields we set in both directions: when a message has neither, ours are appended in
# one call (`set` looks for each first: a fifth of the header work of a proxied request).
_VIA_AND_ID: Final = frozenset({"via", "x-request-id"})


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = addr.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The networks whose forwarding headers we believe (`trusted_proxies` in the config)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> TrustedProxies:
        """From CIDRs or addresses ("10.0.0.0/8", "::1"); ValueError naming a bad one."""
        nets: list[Network] = []
        for spec in specs:
            try:
                nets.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {spec!r} is not an address or network") \
                    from None
        return cls(tuple(nets))

    def trusts(self, addr: str) -> bool:
        if not self.networks:  # the default: no address parse per request
            return False
        ip = _ip(addr)
        return ip is not None and any(ip in net for net in self.networks)


NO_PROXIES: Final = TrustedProxies()


def client_address(peer: str, headers: Headers, trusted: TrustedProxies = NO_PROXIES) -> str:
    """The address that really asked: X-Forwarded-For read right to left past trusted hops.

    Only entries appended by proxies we trust count; the first untrusted one is
    the client (anything left of it is the client's own claim)."""
    if not trusted.trusts(peer):
        return peer
    joined = headers.get_joined("x-forwarded-for") or ""
    chain = [e.strip() for e in joined.split(",") if e.strip()]
    for entry in reversed(chain):
        if _ip(entry) is None:
            return peer  # garbage in the chain: believe only the TCP peer
        if not trusted.trusts(entry):
            return entry
    return chain[0] if chain else peer


def new_request_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex but without a getrandom
    # syscall per request: an id correlates log lines, it is no secret. (Random, not a
    # counter: echoed to clients, a counter would tell them the node's request rate.)
    # to_bytes().hex() is a third of the cost of formatting the int with "032x".
    return _bits(128).to_bytes(16, "big").hex()


def strip_hop_by_hop(headers: Headers, forwarding: bool = False) -> Headers:
    """A copy of `headers` without hop-by-hop fields and the fields Connection names
    (and, with `forwarding`, without X-Forwarded-For/-Proto/-Host and Forwarded)."""
    drop: set[str] | frozenset[str] = _HOP_BY_HOP_AND_FORWARDING if forwarding else HOP_BY_HOP
    if not headers.has_any(drop) and not headers.has_prefixed("proxy-"):
        return headers.copy()  # the usual message: nothing goes (Connection is in `drop`)
    named = headers.get_all("connection")
    if named:
        drop = set(drop)
        for value in named:
            for token in value.split(","):
                name = token.strip().lower()
                if name and name not in _PROTECTED:
                    drop.add(name)
    return headers.without(drop, "proxy-")


def request_id_of(headers: Headers, new_id: Callable[[], str] = new_request_id) -> str:
    """The client's X-Request-Id if it is a plain token of sane length, else a new one."""
    given = (headers.get("x-request-id") or "").strip()
    return given if given and _REQUEST_ID.fullmatch(given) else new_id()


def _forwarded_value(value: str) -> str:
    """A Forwarded parameter value: a token as is, anything else quoted (RFC 7239 §4)."""
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node_for(client: str) -> str:
    """RFC 7239 §6: IPv6 addresses are bracketed (and therefore quoted)."""
    if not client:
        return "unknown"
    if ":" in client and not client.startswith("["):
        return _forwarded_value(f"[{client}]")
    return _forwarded_value(client)


_elements: Final[dict[tuple[str, str, str], str]] = {}
_ELEMENTS_KEPT: Final = 4096  # (client, scheme, host) answers remembered; cleared when full


def _forwarded_element(client: str, scheme: str, host: str) -> str:
    """Our Forwarded element for a request (RFC 7239): the same few clients and hosts ask
    again and again (kept-alive connections), and quoting each part takes a regex."""
    found = _elements.get((client, scheme, host))
    if found is None:
        found = f"for={_node_for(client)};proto={scheme}"
        if host:
            found += f";host={_forwarded_value(host)}"
        if len(_elements) >= _ELEMENTS_KEPT:
            _elements.clear()
        _elements[(client, scheme, host)] = found
    return found


def upstream_headers(request: Request, node_id: str,
                     trusted: TrustedProxies = NO_PROXIES) -> Headers:
    """The headers to send upstream for `request` (already id-stamped).

    From a trusted proxy, X-Forwarded-For and Forwarded are appended to (like
    nginx's $proxy_add_x_forwarded_for) and its X-Forwarded-Proto/-Host kept;
    from anyone else, the client's own forwarding headers are dropped and
    ours alone are sent, because a client could otherwise claim an address,
    https or a host. A request a peer already forwarded (hops > 0) keeps the
    values the first node set."""
    first_hop = request.hops == 0
    believe = first_hop and trusted.trusts(request.client)
    # An untrusted client's forwarding fields go in the same pass as the hop-by-hop ones;
    # ours are then new fields, appended (`set` would look for one first).
    out = strip_hop_by_hop(request.headers, forwarding=first_hop and not believe)
    via = request.headers.get_joined("via")
    our_via = f"{via}, 1.1 {node_id}" if via else f"1.1 {node_id}"
    if first_hop and not believe:  # the usual request: our fields, appended at once
        client = request.client or "unknown"
        ours = [("X-Forwarded-For", client), ("X-Forwarded-Proto", request.scheme)]
        names = ["x-forwarded-for", "x-forwarded-proto"]  # lower-cased: for add_all
        if request.host:
            ours.append(("X-Forwarded-Host", request.host))
            names.append("x-forwarded-host")
        ours.append(("Forwarded", _forwarded_element(request.client, request.scheme,
                                                     request.host)))
        names.append("forwarded")
        if not out.has_any(_VIA_AND_ID):  # nothing to replace: Via and the id go along
            ours.append(("Via", our_via))
            names.append("via")
            if request.request_id:
                ours.append(("X-Request-Id", request.request_id))
                names.append("x-request-id")
            out.add_all(ours, names)
            return out
        out.add_all(ours, names)
    elif first_hop:
        put = out.set
        client = request.client or "unknown"
        xff = request.headers.get_joined("x-forwarded-for")
        put("X-Forwarded-For", f"{xff}, {client}" if xff else client)
        if "x-forwarded-proto" not in out:
            put("X-Forwarded-Proto", request.scheme)
        if request.host and "x-forwarded-host" not in out:
            put("X-Forwarded-Host", request.host)
        element = _forwarded_element(request.client, request.scheme, request.host)
        prior = request.headers.get_joined("forwarded")
        put("Forwarded", f"{prior}, {element}" if prior else element)
    out.set("Via", our_via)
    if request.request_id:
        out.set("X-Request-Id", request.request_id)
    return out


def downstream_headers(headers: Headers, node_id: str, request_id: str = "") -> Headers:
    """Response headers for the client: hop-by-hop removed, Via appended, id echoed."""
    out = strip_hop_by_hop(headers)
    via = headers.get_joined("via")
    our_via = f"{via}, 1.1 {node_id}" if via else f"1.1 {node_id}"
    if not out.has_any(_VIA_AND_ID):  # the usual answer: both appended at once
        if request_id:
            out.add_all([("Via", our_via), ("X-Request-Id", request_id)],
                        ["via", "x-request-id"])
        else:
            out.add_all([("Via", our_via)], ["via"])
        return out
    out.set("Via", our_via)
    if request_id and "x-request-id" not in out:
        out.add("X-Request-Id", request_id)
    return out


@dataclass(slots=True)  # a value, not frozen: one per request, frozen __init__ is slow
class Target:
    """Where a request goes, as the pipeline sees it."""

    scheme: str
    host: str  # lower-cased authority, port kept; "" if the client named none (HTTP/1.0)
    target: str  # origin-form "/path?query", or "*" for OPTIONS *


def is_valid_host(host: str) -> bool:
    """Whether `host` is an authority we accept: a name or an IPv6 literal, a port."""
    return _HOST.fullmatch(host) is not None


def _valid_host(host: str) -> str:
    if not is_valid_host(host):
        raise ClientError(f"invalid host {host[:100]!r}")
    return host.lower()


def normalise_target(
    method: str, target: str, host_headers: list[str], version: str, scheme: str
) -> Target:
    """Split a request-target (RFC 9112 §3.2) and settle which host it names.

    Absolute-form wins over the Host header (§3.2.2), which is then replaced.
    An HTTP/1.1 request must carry exactly one Host; CONNECT tunnels and
    asterisk-form for anything but OPTIONS are refused. Raises ClientError (400)."""
    if len(host_headers) > 1:
        raise ClientError("more than one Host header")
    if method == "CONNECT":
        raise ClientError("CONNECT tunnels are not supported by this proxy")
    if target == "*":
        if method != "OPTIONS":
            raise ClientError("asterisk-form target is only allowed with OPTIONS")
        origin = "*"
        host = host_headers[0] if host_headers else ""
    elif target.startswith("/"):
        origin = target
        if not host_headers and version != "HTTP/1.0":
            raise ClientError("missing Host header (required in HTTP/1.1)")
        host = host_headers[0] if host_headers else ""
    else:
        m = _SCHEME_RE.fullmatch(target)
        if m is None:
            raise ClientError(f"unrecognised request target {target[:100]!r}")
        given_scheme, host, rest = m.group(1).lower(), m.group(2), m.group(3)
        if given_scheme not in ("http", "https"):
            raise ClientError(f"unsupported scheme {given_scheme!r} in request target")
        if not host or "@" in host:
            raise ClientError("absolute-form target needs a host and no user info")
        scheme = given_scheme
        rest = rest.split("#", 1)[0]
        origin = rest if rest.startswith("/") else "/" + rest
    if any(c in origin for c in " \t\r\n\x00"):
        raise ClientError("request target contains whitespace or control characters")
    return Target(scheme, _valid_host(host.strip()), origin)
