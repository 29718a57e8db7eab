"""Forwarded HTTP requests between nodes: the wire form, checked both ways.

A node whose workers are full sends the request to a peer over the peer socket
(gossip.transport, request kind "http"). The request and response bodies ride
as their own frames; the metadata is a small msgpack map carrying what the peer
needs to serve the request as if it had arrived there: method, target, headers,
the client's address, the request id, the time left before the deadline, the
hop count (the receiver refuses a second hop) and the receiver's process as the
sender knows it (`life`, gossip's `MemberView.life`; 0: not known): a node restarted
since refuses what was meant for its earlier process, so the sender, which gave up
on that process, never has it run twice. Older nodes ignore the key. Both directions are validated
after decoding, with limits, because a peer's bytes are untrusted:
`ForwardError` says what was wrong and never anything else escapes.

Plain types only: mesh/ does not know node/'s Request; node/overflow.py adapts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KIND = "http"
MAX_HEADERS = 256
MAX_HEADER_BYTES = 64 * 1024
MAX_TARGET = 16 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")  # fullmatch: `$` lets a final LF by
# Field names that passed _TOKEN (bounded; a hostile peer cannot grow it past this): a
# forward carries the same few names every time, and a regex call per field per
# direction was a measurable share of a forward's CPU.
_NAMES_KEPT = 1024
_names_seen: set[str] = set()


class ForwardError(ValueError):
    """A forwarded request or response broke the schema (the sender's fault)."""


# Values made per forward on both sides, so: not frozen (a frozen __init__ sets each field
# through object.__setattr__), and each writes its __init__ out (init=False): in a module
# `make compiled` builds, the one dataclasses generates would run interpreted
# (docs/ARCHITECTURE.md, "Compiled or pure").
@dataclass(slots=True, init=False)
class ForwardedRequest:
    service: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    scheme: str = "http"
    host: str = ""
    client: str = ""
    request_id: str = ""
    ttl: float = 30.0  # seconds left before the client's deadline
    hops: int = 1  # hops including the one being made
    life: int = 0  # the receiver's process it is meant for (0: any)

    def __init__(  # noqa: PLR0917 - the dataclass's fields, positional too
        self, service: str, method: str, target: str, headers: tuple[tuple[str, str], ...],
        body: bytes, scheme: str = "http", host: str = "", client: str = "",
        request_id: str = "", ttl: float = 30.0, hops: int = 1, life: int = 0,
    ) -> None:
        self.service = service
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.scheme = scheme
        self.host = host
        self.client = client
        self.request_id = request_id
        self.ttl = ttl
        self.hops = hops
        self.life = life


@dataclass(slots=True, init=False)
class ForwardedResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    node: str = ""  # the node whose worker or cache produced the answer
    dc: str = ""
    outcome: str = ""
    took_ms: float = 0.0  # time the peer spent serving, so the sender can estimate RTT

    def __init__(  # noqa: PLR0917 - the dataclass's fields, positional too
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes, node: str = "",
        dc: str = "", outcome: str = "", took_ms: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.node = node
        self.dc = dc
        self.outcome = outcome
        self.took_ms = took_ms


def request_meta(req: ForwardedRequest) -> dict[str, Any]:
    return {
        "service": req.service,
        "method": req.method,
        "target": req.target,
        "headers": [list(h) for h in req.headers],
        "scheme": req.scheme,
        "host": req.host,
        "client": req.client,
        "rid": req.request_id,
        "ttl": req.ttl,
        "hops": req.hops,
        "life": req.life,
    }


def response_meta(resp: ForwardedResponse) -> dict[str, Any]:
    return {
        "status": resp.status,
        "headers": [list(h) for h in resp.headers],
        "node": resp.node,
        "dc": resp.dc,
        "outcome": resp.outcome,
        "took": resp.took_ms,
    }


def _str(meta: dict[str, Any], key: str, limit: int, default: str | None = None) -> str:
    value = meta.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise ForwardError(f"{key}: expected a string of at most {limit} characters")
    return value


def _headers(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise ForwardError(f"headers: expected a list of at most {MAX_HEADERS} pairs")
    out: list[tuple[str, str]] = []
    total = 0
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
        ):
            raise ForwardError("headers: every field must be a [name, value] pair of strings")
        name, value = item
        if "\r" in value or "\n" in value or "\0" in value or not _token(name):
            raise ForwardError(f"headers: invalid field {name[:40]!r}")
        total += len(name) + len(value)
        if total > MAX_HEADER_BYTES:
            raise ForwardError(f"headers: more than {MAX_HEADER_BYTES} bytes")
        out.append((name, value))
    return tuple(out)


def _token(name: str) -> bool:
    if name in _names_seen:
        return True
    if _TOKEN.fullmatch(name) is None:
        return False
    if len(_names_seen) >= _NAMES_KEPT:
        _names_seen.clear()
    _names_seen.add(name)
    return True


def _body(frames: tuple[bytes, ...]) -> bytes:
    if len(frames) > 1:
        raise ForwardError("expected at most one body frame")
    return frames[0] if frames else b""


def decode_request(meta: dict[str, Any], body: tuple[bytes, ...]) -> ForwardedRequest:
    method = _str(meta, "method", 64)
    if not _TOKEN.fullmatch(method):
        raise ForwardError("method: not an HTTP token")
    target = _str(meta, "target", MAX_TARGET)
    if (not target.startswith("/") or " " in target or "\r" in target or "\n" in target
            or "\0" in target):
        raise ForwardError("target: must be origin-form")
    ttl, hops = meta.get("ttl"), meta.get("hops")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 <= ttl <= 3600:
        raise ForwardError("ttl: expected seconds between 0 and 3600")
    if not isinstance(hops, int) or isinstance(hops, bool) or not 1 <= hops <= 16:
        raise ForwardError("hops: expected an integer between 1 and 16")
    life = meta.get("life", 0)  # absent from older senders
    if not isinstance(life, int) or isinstance(life, bool) or not 0 <= life < 2**64:
        raise ForwardError("life: expected an integer between 0 and 2**64 - 1")
    return ForwardedRequest(
        service=_str(meta, "service", 128),
        method=method,
        target=target,
        headers=_headers(meta.get("headers")),
        body=_body(body),
        scheme=_str(meta, "scheme", 8, "http"),
        host=_str(meta, "host", 1024, ""),
        client=_str(meta, "client", 64, ""),
        request_id=_str(meta, "rid", 256, ""),
        ttl=float(ttl),
        hops=hops,
        life=life,
    )


def decode_response(meta: dict[str, Any], body: tuple[bytes, ...]) -> ForwardedResponse:
    status = meta.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise ForwardError("status: expected an integer between 100 and 999")
    return ForwardedResponse(
        status=status,
        headers=_headers(meta.get("headers")),
        body=_body(body),
        node=_str(meta, "node", 256, ""),
        dc=_str(meta, "dc", 256, ""),
        outcome=_str(meta, "outcome", 32, ""),
        took_ms=_nonneg(meta.get("took", 0.0), "took"),
    )


def _nonneg(value: object, key: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e9:
        raise ForwardError(f"{key}: expected a non-negative number")
    return float(value)
