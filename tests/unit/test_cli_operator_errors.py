"""An operator's typo gets one line naming the flag and what it expects, never a traceback.

Each case is from a QA walkthrough: the real `scale0` script is run (a refused
command exits before it binds or connects anything; a bounded timeout keeps a
command that wrongly starts from hanging the suite).
"""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import threading
from argparse import Namespace
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testkit.procs import free_port, scale0_bin

from mesh.cli import AdminAddressError, admin_base, run_mesh
from node.cli import bind_flag
from node.config import NodeConfig
from node.worker.cli import is_async_handler


def scale0(*argv: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = subprocess.Popen([scale0_bin(), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group: the command and its children
        proc.communicate()
        pytest.fail(f"scale0 {' '.join(argv)} was accepted and kept running")
    return proc.returncode, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


WORKER = ("worker", "--service", "www", "--node")


@pytest.mark.parametrize(("argv", "expected"), [
    ((*WORKER, "127.0.0.1:7950", "--upstream", "http://127.0.0.1:9"),
     "scale0 worker: --node 127.0.0.1:7950: expected tcp://HOST:PORT or ipc://PATH; "
     "did you mean tcp://127.0.0.1:7950?"),
    ((*WORKER, "tcp://127.0.0.1:7950", "--wsgi", "os:path"),
     "scale0 worker: --wsgi os:path: a module is not callable; expected a WSGI application, "
     "app(environ, start_response)"),
    ((*WORKER, "tcp://127.0.0.1:7950", "--app", "os:getcwd"),
     "scale0 worker: --app os:getcwd: the plain function getcwd is not an async handler; "
     "expected `async def handle(request)` or an object whose __call__ is async def"),
    ((*WORKER, "tcp://127.0.0.1:7950", "--upstream", "http://127.0.0.1:9", "--curve",
      "/nonexist"),
     "scale0 worker: --curve /nonexist: no such directory (make one with `scale0 keygen`)"),
    # the node drops a READY it cannot take: the worker re-registered for ever, saying
    # only "node ... does not know us (restarted?)"
    (("worker", "--service", "", "--node", "tcp://127.0.0.1:9", "--upstream",
      "http://127.0.0.1:9"),
     "scale0 worker: --service '': a service name is letters, digits, '_', '.' and '-'"),
    (("worker", "--service", "www", "--service", "www example", "--node", "tcp://127.0.0.1:9",
      "--upstream", "http://127.0.0.1:9"),
     "scale0 worker: --service 'www example': a service name is letters, digits, '_', '.' "
     "and '-'"),
    ((*WORKER, "tcp://127.0.0.1:9", "--upstream", "http://127.0.0.1:9", "--concurrency",
      "100001"),
     "scale0 worker: --concurrency must be 1 to 100000"),
    ((*WORKER, "tcp://127.0.0.1:9", "--upstream", "http://127.0.0.1:9", "--name", "a\nb"),
     "scale0 worker: a node would refuse this worker: READY.name: string has forbidden "
     "characters: 'a\\nb'"),
    (("node", "--seed", "bogus"),
     "scale0: --seed bogus: expected tcp://HOST:PORT; e.g. tcp://10.0.0.5:7947"),
    (("node", "--seed", "127.0.0.1:7947"),
     "scale0: --seed 127.0.0.1:7947: expected tcp://HOST:PORT; "
     "did you mean tcp://127.0.0.1:7947?"),
    (("node", "--workers", "127.0.0.1:7950"),
     "scale0: --workers 127.0.0.1:7950: expected tcp://HOST:PORT or ipc://PATH; "
     "did you mean tcp://127.0.0.1:7950?"),
    (("node", "--gossip", "18146"),
     "scale0: --gossip 18146: expected tcp://HOST:PORT; e.g. tcp://*:7946"),
    (("node", "--peer", "tcp://*:99999"),
     "scale0: --peer tcp://*:99999: the port must be 1-65535 (or * for any free one), "
     "not '99999'"),
    (("node", "--cache", "off", "--curve", "/nonexist"),
     "scale0: --curve /nonexist: no such directory (make one with `scale0 keygen`)"),
    (("purge", "--admin", "bogus", "http://www.example.com/"),
     "scale0 purge: --admin bogus: expected an http(s) URL or HOST:PORT, e.g. 127.0.0.1:8081 "
     "or http://10.0.0.11:8081"),
    (("mesh", "--once", "--admin", "bogus"),
     "scale0 mesh: --admin bogus: expected an http(s) URL or HOST:PORT, e.g. 127.0.0.1:8081 "
     "or http://10.0.0.11:8081"),
])
def test_a_typo_is_one_line_and_exit_2(argv: tuple[str, ...], expected: str) -> None:
    code, out, err = scale0(*argv)
    assert (code, out) == (2, "")
    assert one_line(err) == expected


@pytest.mark.parametrize(("argv", "expected"), [
    (("demo", "--for", "-5"), "argument --for: must be more than 0 seconds, got -5"),
    (("demo", "--for", "0"), "argument --for: must be more than 0 seconds, got 0"),
    (("mesh", "--interval", "0"),
     "argument --interval: must be more than 0 and at most 3600 seconds, got 0"),
    (("purge", "--timeout", "-1", "http://a/"),
     "argument --timeout: must be more than 0 and at most 3600 seconds, got -1"),
    # the worker took --grace -1 and logged "grace -1s" (it acted as 0)
    (("worker", "--grace", "-1"), "argument --grace: must be at least 0 seconds, got -1"),
    (("worker", "--read-timeout", "0"),
     "argument --read-timeout: must be more than 0 seconds, got 0"),
    (("worker", "--grace", "nan"), "argument --grace: must be at least 0 seconds, got nan"),
])
def test_durations_must_be_positive_and_say_the_rule(argv: tuple[str, ...],
                                                     expected: str) -> None:
    code, _, err = scale0(*argv)
    assert code == 2
    assert expected in err.splitlines()[-1]


def test_purge_and_mesh_call_seconds_seconds() -> None:
    purge = " ".join(scale0("purge", "--help")[1].split())
    mesh = " ".join(scale0("mesh", "--help")[1].split())
    assert "--timeout SECONDS" in purge and "--timeout SECONDS" in mesh
    assert "TIMEOUT" not in purge


host_ports = st.tuples(
    st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,12}){0,3}", fullmatch=True),
              st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]")),
    st.integers(1, 65535))


@given(host_ports, st.sampled_from(["", "http://", "https://"]), st.sampled_from(["", "/"]))
def test_admin_addresses_in_either_form_become_urls(hp: tuple[str, int], scheme: str,
                                                    slash: str) -> None:
    host, port = hp
    assert admin_base(f" {scheme}{host}:{port}{slash} ") == f"{scheme or 'http://'}{host}:{port}"


@given(host_ports, st.sampled_from(["http://", "https://"]),
       st.sampled_from(["/_scale0", "/_scale0/", "/_scale0/mesh"]))
def test_the_dashboards_own_url_names_its_admin_listener(hp: tuple[str, int], scheme: str,
                                                         page: str) -> None:
    """Operators paste the dashboard's URL: `scale0 mesh` asked it for
    /_scale0/_scale0/mesh and got a 404."""
    host, port = hp
    assert admin_base(f"{scheme}{host}:{port}{page}") == f"{scheme}{host}:{port}"
    assert admin_base(f"{scheme}{host}:{port}/behind/a/proxy") == (
        f"{scheme}{host}:{port}/behind/a/proxy")  # any other path is a prefix, kept


@given(st.text(max_size=30))
def test_any_admin_text_is_a_url_or_one_refusal(text: str) -> None:
    try:
        url = admin_base(text)
    except AdminAddressError as exc:
        assert str(exc).startswith(f"--admin {text}: expected an http(s) URL or HOST:PORT")
    else:
        assert url.startswith(("http://", "https://"))
        assert "://" in text or ":" in text  # a bare name is never taken for http://NAME/


@pytest.mark.parametrize("text", ["bogus", "localhost", ":8081", "ftp://h:1", "h:99999",
                                  "http://h:8081/?x=1", "h:0"])
def test_admin_addresses_refused(text: str) -> None:
    with pytest.raises(AdminAddressError):
        admin_base(text)


@pytest.fixture
def not_admin() -> Iterator[str]:
    """An HTTP server answering 404 to everything, as the node's public port does."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/nonexistent")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_mesh_at_a_non_admin_port_says_which_address_it_wants(not_admin: str) -> None:
    import io

    err = io.StringIO()
    args = Namespace(admin=not_admin, admin_token_file="", timeout=5.0, json=False, once=True,
                     interval=1.0)
    assert run_mesh(args, out=io.StringIO(), err=err) == 1
    assert one_line(err.getvalue()).endswith(
        "answered 404 File not found; is this the node's admin address "
        "(--admin, default 127.0.0.1:8081)?")


def test_the_default_named_in_the_hint_is_the_nodes_default() -> None:
    from mesh.cli import DEFAULT_ADMIN, NOT_ADMIN

    assert f"default {NodeConfig().admin})" in NOT_ADMIN
    assert f"http://{NodeConfig().admin}" == DEFAULT_ADMIN


async def handler_fn(request: Any) -> Any:
    return request


class AsyncCall:
    async def __call__(self, request: Any) -> Any:
        return request


def returns_a_coroutine(request: Any) -> Any:
    return handler_fn(request)


class SyncCall:
    def __call__(self, request: Any) -> Any:
        return request


@pytest.mark.parametrize(("obj", "ok"), [
    (handler_fn, True), (functools.partial(handler_fn), True), (AsyncCall(), True),
    (type("Sub", (AsyncCall,), {})(), True),
    (AsyncCall, False),  # the class: calling it makes an instance, not an awaitable
    (SyncCall(), False), (len, False), (returns_a_coroutine, False),
    (os, False),
])
def test_an_app_handler_is_what_the_sdk_awaits(obj: object, ok: bool) -> None:
    assert is_async_handler(obj) is ok


def test_a_failed_bind_names_its_flag() -> None:
    config = NodeConfig(gossip="tcp://127.0.0.1:18146", peer="tcp://127.0.0.1:18147")
    said = "cannot bind tcp://127.0.0.1:18146: Address already in use"
    assert bind_flag(said, config) == ("cannot bind tcp://127.0.0.1:18146 (--gossip): "
                                       "Address already in use")
    said = "cannot bind the worker socket tcp://*:7950: Address already in use"
    assert "tcp://*:7950 (--workers): " in bind_flag(said, config)
    same = NodeConfig(gossip="tcp://*:7000", peer="tcp://*:7000")
    assert "(--gossip/--peer)" in bind_flag("cannot bind tcp://*:7000: x", same)
    assert bind_flag("something else", config) == "something else"
