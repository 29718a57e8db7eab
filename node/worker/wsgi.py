"""Run a WSGI app (Flask, Django, ...) as a worker handler, in a thread pool.

`wsgi_handler(app, concurrency)` returns an async handler. The app runs in a
pool of `concurrency` threads (the worker offers the same number of slots, so
requests never wait for a thread). The environ follows PEP 3333; `wsgi.input`
pulls the request body from the event loop chunk by chunk, and the response
iterable is streamed back through a bounded channel, so neither direction
holds a whole large body in memory. A small response (one chunk or less) that
the app finishes at once is returned as bytes, in one frame; one still coming
FLUSH_AFTER seconds after its first block streams from there (PEP 3333: no block
the app yielded is held back waiting for the next).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes

from node.body import BodyChannel
from node.http import BodyError, Headers, Request, Response
from node.worker.sdk import Handler

CHUNK = 256 * 1024
FLUSH_AFTER = 0.05  # a body still coming this long after its first block streams
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
    if isinstance(request.body, bytes) and (request.body or "CONTENT_LENGTH" in env):
        env["CONTENT_LENGTH"] = str(len(request.body))  # none for a GET without a body
    return env


def wsgi_handler(app: WSGIApp, concurrency: int = 8) -> Handler:
    """An async handler running `app` in `concurrency` threads."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="wsgi")

    async def handle(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        head: asyncio.Future[Response] = loop.create_future()
        answer = _Answer(loop, head)
        env = build_environ(request, _Input(request.body, loop))
        done = loop.run_in_executor(pool, _run, app, env, answer)
        answer.timer = loop.call_later(FLUSH_AFTER, answer.tick)
        try:
            return await asyncio.shield(head)
        except asyncio.CancelledError:
            # Deadline or client gone. A thread cannot be stopped; if the app answers
            # later with a stream, nobody reads it: cancel it, so the thread's next
            # put fails and the thread comes back to the pool instead of waiting for ever.
            done.cancel()
            head.add_done_callback(_drop_stream)
            raise
        finally:
            if answer.timer is not None:
                answer.timer.cancel()

    return handle


def _drop_stream(head: asyncio.Future[Response]) -> None:
    if not head.cancelled() and not isinstance(body := head.result().body, bytes):
        body.cancel()


class _Answer:
    """The answer an app thread is producing, shared with the event loop under `lock`.

    The thread collects the blocks the app yields (`add`). A body that ends soon, within
    CHUNK bytes, goes out whole, as bytes (`end`). Otherwise it becomes a stream: when it
    grew past CHUNK, or when its first block has waited FLUSH_AFTER seconds for the app
    to finish (`tick`, on the loop) — PEP 3333 lets a server hold back no block the app
    yielded, so a view that streams (server-sent events, progress) is seen as it goes."""

    __slots__ = ("chan", "finished", "first_at", "head", "lock", "loop", "parts", "size",
                 "state", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, head: asyncio.Future[Response]) -> None:
        self.loop, self.head = loop, head
        self.lock = threading.Lock()
        self.parts: list[bytes] = []
        self.size = 0
        self.first_at = 0.0
        self.state: list[Any] = []  # [status, headers] from start_response
        self.chan: BodyChannel | None = None
        self.finished = False
        self.timer: asyncio.TimerHandle | None = None

    # -- the app's thread ----------------------------------------------------------
    def add(self, chunk: bytes) -> None:
        """One block from the app: collected, or put on the stream (with backpressure)."""
        with self.lock:
            chan = self.chan
            if chan is None:
                if not self.parts:
                    self.first_at = time.monotonic()
                self.parts.append(chunk)
                self.size += len(chunk)
                big = self.size > CHUNK
        if chan is not None:
            asyncio.run_coroutine_threadsafe(chan.put(chunk), self.loop).result()
        elif big:  # stream from here on, with backpressure: wait until the loop switched
            asyncio.run_coroutine_threadsafe(self._stream(), self.loop).result()

    @property
    def sent(self) -> bool:
        """Whether the head is out (or the whole answer is settled)."""
        with self.lock:
            return self.chan is not None or self.finished

    def restart(self, status: str, headers: list[tuple[str, str]]) -> None:
        """start_response again with exc_info before the head went out: the app's error
        answer replaces what it had begun."""
        with self.lock:
            self.state[:] = [status, headers]
            self.parts.clear()
            self.size = 0

    def end(self, error: str = "") -> None:
        """The app's iterable ended (`error`: it failed): the whole answer, the end of the
        stream, or a 500 (a broken stream once the head went out)."""
        with self.lock:
            chan, self.finished = self.chan, True
            body = b"".join(self.parts)
        if chan is not None:
            if error:
                self.loop.call_soon_threadsafe(chan.fail, error)
            else:
                self.loop.call_soon_threadsafe(chan.finish)
        elif error:
            self.settle(Response.error(500, "the WSGI app failed"))
        else:
            self.settle(_response(self.state, body))

    def settle(self, response: Response) -> None:
        def settle() -> None:
            if not self.head.done():
                self.head.set_result(response)

        self.loop.call_soon_threadsafe(settle)

    # -- the event loop -------------------------------------------------------------
    def tick(self) -> None:
        """Every FLUSH_AFTER seconds until the head is out: stream a body still coming."""
        self.timer = None
        if self.head.done():
            return
        with self.lock:
            waited = bool(self.parts) and time.monotonic() - self.first_at >= FLUSH_AFTER
        if not (waited and self.stream()) and not self.head.done():
            self.timer = self.loop.call_later(FLUSH_AFTER, self.tick)

    async def _stream(self) -> None:
        self.stream()

    def stream(self) -> bool:
        """Send the head now, with what the app yielded so far, and stream the rest."""
        if self.head.done():
            return False
        with self.lock:
            if self.chan is not None or self.finished or not self.parts or not self.state:
                return False
            chan = BodyChannel(8)
            try:
                response = _response(self.state, chan)
            except Exception:  # a bad status line: the thread answers 500 at its end
                return False
            self.chan = chan
            data = b"".join(self.parts)
            self.parts.clear()
            self.size = 0
        chan.put_nowait(data)
        self.head.set_result(response)
        return True


def _run(app: WSGIApp, env: dict[str, Any], answer: _Answer) -> None:
    """In an app thread: call the app and hand what it yields to `answer`.

    The app's mistakes (raising, a non-iterable, str instead of bytes, no
    start_response, start_response twice) are a 500 while the head is not out, a
    failed stream (ABORT to the node) once it is."""
    state = answer.state

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            if answer.sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif state:
            raise RuntimeError("start_response called twice without exc_info (PEP 3333)")
        answer.restart(status, headers)
        return lambda data: answer.add(_bytes(data))  # the legacy write() callable

    result: Iterable[bytes] | None = None
    try:
        result = app(env, start_response)
        for chunk in result:
            if chunk := _bytes(chunk):
                answer.add(chunk)
        if not state:
            raise RuntimeError("the WSGI app returned without calling start_response")
        answer.end()
    except BodyError:
        answer.end("the reader went away")  # nobody reads it; frees a waiting put
    except Exception as exc:
        print(f"scale0 wsgi: the app failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        answer.end("the WSGI app failed while streaming")
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


def _response(state: list[Any], body: bytes | BodyChannel) -> Response:
    if not state:
        raise RuntimeError("the WSGI app returned without calling start_response")
    status, headers = state
    return Response(int(status.split(" ", 1)[0]), Headers(headers), body,
                    reason=status.partition(" ")[2])
