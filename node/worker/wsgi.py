"""Run a WSGI app (Flask, Django, ...) as a worker handler, in a thread pool.

`wsgi_handler(app, concurrency)` returns an async handler. The app runs in a
pool of `concurrency` threads (the worker offers the same number of slots, so
requests never wait for a thread). The environ follows PEP 3333; `wsgi.input`
pulls the request body from the event loop chunk by chunk, and the response
iterable is streamed back through a bounded channel, so neither direction
holds a whole large body in memory. A small response (one chunk or less) is
returned as bytes, in one frame.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes

from node.body import BodyChannel
from node.http import BodyError, Headers, Request, Response
from node.worker.sdk import Handler

CHUNK = 256 * 1024
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Input:
    """`wsgi.input`: a blocking file-like over the request body, for the app's thread."""

    def __init__(self, body: bytes | Any, loop: asyncio.AbstractEventLoop) -> None:
        self._buf = body if isinstance(body, bytes) else b""
        self._stream = None if isinstance(body, bytes) else body
        self._loop = loop

    def _fill(self) -> bool:
        if self._stream is None:
            return False
        chunk: bytes = asyncio.run_coroutine_threadsafe(self._stream.read(), self._loop).result()
        if not chunk:
            self._stream = None
            return False
        self._buf += chunk
        return True

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buf) < size) and self._fill():
            pass
        n = len(self._buf) if size < 0 else size
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buf and (size < 0 or len(self._buf) < size) and self._fill():
            pass
        end = self._buf.find(b"\n") + 1 or len(self._buf)
        if size >= 0:
            end = min(end, size)
        out, self._buf = self._buf[:end], self._buf[end:]
        return out

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def build_environ(request: Request, wsgi_input: Any) -> dict[str, Any]:
    """The PEP 3333 environ for `request`."""
    host = request.host or request.headers.get("Host", "") or "localhost"
    name, _, port = host.rpartition(":") if host.rsplit(":", 1)[-1].isdigit() else (host, "", "")
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
        "QUERY_STRING": request.query,
        "SERVER_NAME": name or host,
        "SERVER_PORT": port or ("443" if request.scheme == "https" else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.client,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": wsgi_input,
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for k, v in request.headers:
        key = k.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = v
            continue
        key = "HTTP_" + key
        if key in env:
            env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + v
        else:
            env[key] = v
    if isinstance(request.body, bytes):
        env["CONTENT_LENGTH"] = str(len(request.body))
    return env


def wsgi_handler(app: WSGIApp, concurrency: int = 8) -> Handler:
    """An async handler running `app` in `concurrency` threads."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="wsgi")

    async def handle(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        head: asyncio.Future[Response] = loop.create_future()
        env = build_environ(request, _Input(request.body, loop))
        done = loop.run_in_executor(pool, _run, app, env, loop, head)
        try:
            return await asyncio.shield(head)
        except asyncio.CancelledError:
            # Deadline or client gone. A thread cannot be stopped; if the app answers
            # later with a stream, nobody reads it: cancel it, so the thread's next
            # put fails and the thread comes back to the pool instead of waiting for ever.
            done.cancel()
            head.add_done_callback(_drop_stream)
            raise

    return handle


def _drop_stream(head: asyncio.Future[Response]) -> None:
    if not head.cancelled() and not isinstance(body := head.result().body, bytes):
        body.cancel()


def _run(app: WSGIApp, env: dict[str, Any], loop: asyncio.AbstractEventLoop,
         head: asyncio.Future[Response]) -> None:
    """In an app thread: call the app; hand the head back; stream the rest.

    The app's mistakes (raising, a non-iterable, str instead of bytes, no
    start_response, start_response twice) are a 500 while the head is not out, a
    failed stream (ABORT to the node) once it is."""
    state: list[Any] = []
    written: list[bytes] = []
    answered = False

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            if answered:
                raise exc_info[1].with_traceback(exc_info[2])
        elif state:
            raise RuntimeError("start_response called twice without exc_info (PEP 3333)")
        state[:] = [status, headers]
        return lambda data: written.append(_bytes(data))  # the legacy write() callable

    def answer(resp: Response) -> None:
        nonlocal answered
        answered = True

        def settle() -> None:
            if not head.done():
                head.set_result(resp)

        loop.call_soon_threadsafe(settle)

    result: Iterable[bytes] | None = None
    chan: BodyChannel | None = None
    try:
        result = app(env, start_response)
        parts, size = list(written), sum(map(len, written))
        it = iter(result)
        for chunk in it:
            if chunk := _bytes(chunk):
                parts.append(chunk)
                size += len(chunk)
            if size > CHUNK:
                break
        else:
            answer(_response(state, b"".join(parts)))
            return
        stream = BodyChannel(8)
        answer(_response(state, stream))
        chan = stream
        for chunk in _chain(parts, it):
            if chunk := _bytes(chunk):
                asyncio.run_coroutine_threadsafe(chan.put(chunk), loop).result()
        loop.call_soon_threadsafe(chan.finish)
    except BodyError:
        pass  # the reader went away
    except Exception as exc:
        print(f"scale0 wsgi: the app failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if chan is None:
            answer(Response.error(500, "the WSGI app failed"))
        else:
            loop.call_soon_threadsafe(chan.fail, "the WSGI app failed while streaming")
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:  # the answer is settled; only say so
                print(f"scale0 wsgi: the app's close() failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)


def _bytes(chunk: object) -> bytes:
    if type(chunk) is not bytes:
        raise TypeError(f"the app gave {type(chunk).__name__}, not bytes (PEP 3333)")
    return chunk


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def _response(state: list[Any], body: bytes | BodyChannel) -> Response:
    if not state:
        raise RuntimeError("the WSGI app returned without calling start_response")
    status, headers = state
    return Response(int(status.split(" ", 1)[0]), Headers(headers), body,
                    reason=status.partition(" ")[2])
