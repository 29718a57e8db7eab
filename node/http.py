"""Plain HTTP request and response objects: the request pipeline's contract.

The pipeline takes a `Request` and returns a `Response` and knows nothing of
the HTTP server around it, so the wire layer (Tornado today, a faster parser
later) can be swapped without touching it. Headers keep their order, their
repeats (several Set-Cookie) and the case the peer sent; lookups ignore case.
A body is either `bytes` (small, fully read) or a `BodyStream` pulled chunk by
chunk, so a 1 GiB transfer never sits in memory.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol


class Headers:
    """An ordered multi-map of header fields; lookups are case-insensitive.

    The lower-cased names are kept beside the fields (made once per field, not once
    per field and lookup): a browser's request carries a dozen fields and the
    pipeline asks for several of them, so lookups are a C-level `list.index`.
    Not safe for concurrent mutation (one request, one task)."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        self._keys: list[str] = [k.lower() for k, _ in self._items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        lname = name.lower()
        if lname not in self._keys:
            return default
        return self._items[self._keys.index(lname)][1]

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        keys = self._keys
        if lname not in keys:
            return []
        # By index, not zip(..., strict=True): a keyword sends zip through the slow
        # argument parser, a third of this call (the two lists are always as long).
        items = self._items
        return [items[i][1] for i in range(len(keys)) if keys[i] == lname]

    def get_joined(self, name: str) -> str | None:
        """All values of a list-valued field joined by ", " (RFC 9110 §5.3), or None."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def has_any(self, lower_names: builtins.set[str] | frozenset[str]) -> bool:
        """Whether a field is named by one of `lower_names` (lower-case)."""
        # A compiled loop of set lookups: isdisjoint is a method call mypyc cannot make
        # directly (a type lookup and argument parsing, a few hundred instructions a call
        # on the four or five calls of every proxied request).
        return any(key in lower_names for key in self._keys)

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._keys.append(name.lower())

    def add_all(self, fields: list[tuple[str, str]],
                lower_names: list[str] | None = None) -> None:
        """`add` each of `fields`, in order (one call for a proxy's few fields).
        `lower_names`: their names lower-cased, when the caller has them already (names
        of its own): a lower() per name was a third of this call."""
        self._items.extend(fields)
        self._keys.extend([k.lower() for k, _ in fields] if lower_names is None
                          else lower_names)

    def set(self, name: str, value: str) -> None:
        """Replace every `name` field by one with `value`, keeping its first position."""
        lname = name.lower()
        keys = self._keys
        if lname not in keys:
            self._items.append((name, value))
            keys.append(lname)
            return
        first = keys.index(lname)
        if keys.count(lname) == 1:
            self._items[first] = (name, value)
            return
        # Several: drop them all, then put the one back where the first was (nothing
        # before it had that name, so the position is unchanged).
        self._keep(lambda k: k != lname)
        self._keys.insert(first, lname)
        self._items.insert(first, (name, value))

    def remove(self, name: str) -> None:
        lname = name.lower()
        if lname in self._keys:
            self._keep(lambda k: k != lname)

    def remove_many(self, lower_names: builtins.set[str] | frozenset[str]) -> None:
        """Remove every field whose lower-cased name is in `lower_names`."""
        if self.has_any(lower_names):
            self._keep(lambda k: k not in lower_names)

    def has_prefixed(self, lower_prefix: str) -> bool:
        """Whether a field's lower-cased name starts with `lower_prefix`."""
        # a few names (compiled, a loop): cheaper than one join and a search over them
        return any(key.startswith(lower_prefix) for key in self._keys)

    def without(self, lower_names: builtins.set[str] | frozenset[str],
                prefix: str = "\x00") -> Headers:
        """A copy without the fields whose lower-cased name is in `lower_names` or starts
        with `prefix` (lower-case)."""
        clone = Headers()  # (compiled: a direct call; Headers.__new__ is a method lookup)
        keys = self._keys
        # Usually nothing goes (a request's fields are rarely hop-by-hop): say so with a
        # compiled pass or two over the names, and copy, instead of a Python call
        # per field (a third of the node's header work on a proxied request).
        if not self.has_any(lower_names) and not self.has_prefixed(prefix):
            clone._keys, clone._items = list(keys), list(self._items)
        else:
            clone._keys, clone._items = self._kept(
                lambda k: k not in lower_names and not k.startswith(prefix))
        return clone

    def _keep(self, wanted: Callable[[str], bool]) -> None:
        self._keys, self._items = self._kept(wanted)

    def _kept(self, wanted: Callable[[str], bool]) -> tuple[list[str], list[tuple[str, str]]]:
        """The (names, fields) whose lower-cased name `wanted` accepts, in order."""
        keys, items = self._keys, self._items
        kept = [i for i in range(len(keys)) if wanted(keys[i])]  # by index: see get_all
        return [keys[i] for i in kept], [items[i] for i in kept]

    def items(self) -> list[tuple[str, str]]:
        """The fields in order, as a new list."""
        return list(self._items)

    def copy(self) -> Headers:
        clone = Headers()  # (compiled: a direct call; Headers.__new__ is a method lookup)
        clone._items = list(self._items)
        clone._keys = list(self._keys)
        return clone

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class BodyStream(Protocol):
    """A body that arrives in chunks.

    `read()` returns the next non-empty chunk and b"" once the body is complete;
    it raises `BodyError` if the producer failed (upstream reset, client gone).
    The producer is held back while nobody reads (backpressure). `cancel()` is
    called by a consumer that will not read to the end (the client went away),
    so the producer can stop its work. Both are for one event loop only."""

    async def read(self) -> bytes: ...

    def cancel(self) -> None: ...


class BodyError(Exception):
    """A streamed body could not be completed."""


Body = bytes | BodyStream


# Request and Response, made for every request, write their __init__ out (init=False):
# mypyc leaves the one dataclasses generates interpreted (docs/ARCHITECTURE.md, "Compiled
# or pure"). dataclasses still makes repr and ==.
@dataclass(slots=True, init=False)
class Request:
    """One client request, as the pipeline sees it.

    `target` is origin-form (path and query); an absolute-form target has
    already been split into `scheme`/`host` and this by the wire layer."""

    method: str
    target: str
    headers: Headers
    body: Body
    scheme: str
    host: str  # authority as the client named it, lower-cased, port kept
    client: str  # peer IP address of the TCP connection
    request_id: str
    received: float  # time.monotonic() when made, unless given
    deadline: float  # absolute time.monotonic(); 0 = the service default
    hops: int  # how many nodes have forwarded this request already
    service: str  # filled by service mapping, before the cache stage
    # The caller has an answer of its own if this fails (a stale entry stale-if-error
    # allows): fail at once where there is no worker for it, rather than wait for one.
    fail_fast: bool

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, method: str, target: str, headers: Headers, body: Body = b"", scheme: str = "http",
        host: str = "", client: str = "", request_id: str = "", received: float | None = None,
        deadline: float = 0.0, hops: int = 0, service: str = "", fail_fast: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.scheme = scheme
        self.host = host
        self.client = client
        self.request_id = request_id
        self.received = time.monotonic() if received is None else received
        self.deadline = deadline
        self.hops = hops
        self.service = service
        self.fail_fast = fail_fast

    def with_headers(self, headers: Headers) -> Request:
        """This request with other headers (dataclasses.replace costs seven times more)."""
        return Request(self.method, self.target, headers, self.body, self.scheme, self.host,
                       self.client, self.request_id, self.received, self.deadline, self.hops,
                       self.service, self.fail_fast)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass(slots=True, init=False)
class Response:
    """One response, from a worker, a peer, the cache or the node itself.

    `served_by` names the node whose worker or cache produced it; `outcome`
    says how (local, forwarded, hit, stale, coalesced, ...) for logs and
    metrics; `worker` names the worker that answered, when one did."""

    status: int
    headers: Headers  # a new, empty Headers unless given
    body: Body
    reason: str
    served_by: str
    outcome: str
    worker: str

    def __init__(  # noqa: PLR0917 - the dataclass's signature, positional too
        self, status: int, headers: Headers | None = None, body: Body = b"", reason: str = "",
        served_by: str = "", outcome: str = "", worker: str = "",
    ) -> None:
        self.status = status
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.reason = reason
        self.served_by = served_by
        self.outcome = outcome
        self.worker = worker

    @classmethod
    def error(cls, status: int, reason: str, *, retry_after: int | None = None) -> Response:
        """A short plain-text error response saying what went wrong."""
        headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
        if retry_after is not None:
            headers.add("Retry-After", str(retry_after))
        return cls(status, headers, (reason + "\n").encode(), reason=reason, outcome="error")
