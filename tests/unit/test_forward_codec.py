"""The forwarded-request wire form: round trips, and hostile metadata is refused cleanly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.forward import (
    ForwardedRequest,
    ForwardedResponse,
    ForwardError,
    decode_request,
    decode_response,
    request_meta,
    response_meta,
)

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_0123456789", min_size=1, max_size=20)
value = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"), max_size=40)
headers = st.lists(st.tuples(token, value), max_size=10).map(tuple)

requests = st.builds(
    ForwardedRequest,
    service=st.text(max_size=20),
    method=token,
    target=st.text("abc/?=&%", max_size=30).map(lambda t: "/" + t),
    headers=headers,
    body=st.binary(max_size=64),
    scheme=st.sampled_from(["http", "https"]),
    host=st.text(max_size=30),
    client=st.text(max_size=30),
    request_id=st.text(max_size=30),
    ttl=st.floats(0, 3600),
    hops=st.integers(1, 16),
)
responses = st.builds(
    ForwardedResponse,
    status=st.integers(100, 999),
    headers=headers,
    body=st.binary(max_size=64),
    node=st.text(max_size=20),
    dc=st.text(max_size=20),
    outcome=st.text(max_size=20),
    took_ms=st.floats(0, 1e6),
)


@given(requests)
def test_request_round_trip(req: ForwardedRequest) -> None:
    body = (req.body,) if req.body else ()
    assert decode_request(request_meta(req), body) == req


@given(responses)
def test_response_round_trip(resp: ForwardedResponse) -> None:
    body = (resp.body,) if resp.body else ()
    assert decode_response(response_meta(resp), body) == resp


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            ["method", "target", "headers", "ttl", "hops", "service", "status", "host", "rid"]
        ),
        json_like,
    )
)
def test_arbitrary_meta_decodes_or_raises_forward_error(meta: dict[str, Any]) -> None:
    for decode in (decode_request, decode_response):
        try:
            decode(meta, ())
        except ForwardError:
            pass


@pytest.mark.parametrize(
    "change",
    [
        {"hops": 0},
        {"hops": True},
        {"ttl": -1},
        {"method": "GET /x"},
        {"target": "http://evil/x"},
        {"headers": [["X-A", "b\r\nInjected: 1"]]},
        {"headers": [["Bad Name", "v"]]},
        {"headers": [["X-A\n", "v"]]},  # a regex `$` matches before a final LF
        {"method": "GET\n"},
        {"headers": [["X", "v"]] * 300},
    ],
)
def test_hostile_requests_are_refused(change: dict[str, Any]) -> None:
    req = ForwardedRequest("www", "GET", "/a", (("Host", "x"),), b"")
    meta = request_meta(req) | change
    with pytest.raises(ForwardError):
        decode_request(meta, ())


def test_more_than_one_body_frame_is_refused() -> None:
    with pytest.raises(ForwardError):
        decode_response({"status": 200, "headers": []}, (b"a", b"b"))
