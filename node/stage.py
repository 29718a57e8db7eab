"""A pipeline stage: the one shape every step of the request path takes.

A stage gets the request and `call_next` (the rest of the pipeline). It may
answer by itself (static file, cache hit), call the rest and post-process the
answer (store it in the cache), or call the rest several times (a retry). The
pipeline is a list of stages ending in the dispatcher; stages know nothing of
the wire layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from node.http import Request, Response

Next = Callable[[Request], Awaitable[Response]]


class Stage(Protocol):
    """An `async def`, or a plain `def` that returns the awaitable of the step it hands
    the request to (`return call_next(request)`): a stage with nothing to do after the
    rest answers need not be a coroutine frame that every answer passes back through."""

    def __call__(self, request: Request, call_next: Next) -> Awaitable[Response]: ...
