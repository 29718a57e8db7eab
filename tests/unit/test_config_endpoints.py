"""ZeroMQ endpoints are checked when the config is built, and keys are named as written.

`check_endpoint` parses operator text, so it is held to properties over generated
endpoints: every well-formed one passes unchanged, any text at all is either
accepted or refused with one ConfigError line naming where it came from.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from node.config import check_endpoint, from_mapping, load_config
from node.errors import ConfigError

labels = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
ports = st.integers(1, 65535).map(str)


@given(st.one_of(names, ipv4, ipv6), ports, st.booleans())
def test_every_tcp_host_port_is_accepted_unchanged(host: str, port: str, bind: bool) -> None:
    endpoint = f"tcp://{host}:{port}"
    assert check_endpoint(endpoint, "--x", bind=bind) == endpoint


@given(st.sampled_from(["*", "0"]), st.sampled_from(["*", "127.0.0.1", "eth0"]))
def test_binding_takes_wildcards_connecting_does_not(port: str, host: str) -> None:
    endpoint = f"tcp://{host}:{port}"
    assert check_endpoint(endpoint, "--workers", bind=True) == endpoint
    with pytest.raises(ConfigError, match=r"^--seed "):
        check_endpoint(endpoint, "--seed", bind=False)


@given(st.one_of(names, ipv4, ipv6), ports)
def test_a_missing_scheme_is_refused_with_the_fix(host: str, port: str) -> None:
    """The QA case: `127.0.0.1:7950` for `tcp://127.0.0.1:7950`."""
    value = f"{host}:{port}"
    with pytest.raises(ConfigError) as caught:
        check_endpoint(value, "--node", bind=False, ipc=True)
    assert str(caught.value) == (f"--node {value}: expected tcp://HOST:PORT or ipc://PATH; "
                                 f"did you mean tcp://{value}?")


@given(st.text(max_size=40), st.booleans(), st.booleans())
@example(":\n", False, False)  # a second line in the "did you mean" hint
def test_any_text_is_accepted_or_refused_in_one_line(text: str, bind: bool, ipc: bool) -> None:
    try:
        accepted = check_endpoint(text, "--peer", bind=bind, ipc=ipc)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"--peer {text}: ")
        assert "\n" not in message.removeprefix(f"--peer {text}")
    else:
        assert accepted == text
        assert text.startswith("tcp://") or (ipc and text.startswith("ipc://"))


@pytest.mark.parametrize("value", ["bogus", "127.0.0.1:7947", "tcp://127.0.0.1", "tcp://*:7947",
                                   "tcp://::1:7947", "tcp://300.1.1.1:7947", "udp://h:1",
                                   "tcp://h:70000", "ipc:///tmp/w.sock"])
def test_seeds_are_tcp_endpoints_to_dial(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--seed "):
        load_config(None, {"seeds": [value]})


@pytest.mark.parametrize(("flag", "overrides"), [
    ("--workers", {"workers": {"endpoint": "127.0.0.1:7950"}}),
    ("--gossip", {"gossip": "18146"}),
    ("--peer", {"peer": "tcp://*:99999"}),
])
def test_node_flags_are_named_when_their_endpoint_is_wrong(flag: str,
                                                           overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=rf"^{flag} \S+: "):
        load_config(None, overrides)


def test_the_worker_socket_may_be_ipc_the_mesh_sockets_may_not() -> None:
    assert from_mapping({"workers": {"endpoint": "ipc:///run/scale0/w.sock"}})
    with pytest.raises(ConfigError, match="expected tcp://HOST:PORT;"):
        from_mapping({"peer": "ipc:///run/scale0/p.sock"})


def test_file_keys_are_named_as_written() -> None:
    with pytest.raises(ConfigError, match=r"^f: 'seed' must be a list of strings, not 'x'$"):
        from_mapping({"seed": "x"}, "f")
    with pytest.raises(ConfigError, match=r"^f: \[workers\] endpoint = 127.0.0.1:7950: "):
        from_mapping({"workers": {"endpoint": "127.0.0.1:7950"}}, "f")


def test_an_unknown_cache_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"cache": {"max": "10GiB"}}, "f")
    message = str(caught.value)
    assert message.startswith("f [cache]: unknown key 'max' (known: ")
    assert "max_object_size" in message and "store" in message
    assert "keyword argument" not in message
