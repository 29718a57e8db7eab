"""Real ZeroMQ sockets on loopback: PUB/SUB delivery, peer request/reply, timeouts, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from gossip.transport import (
    VERSION,
    PeerProtocolError,
    PeerRefused,
    PeerReply,
    PeerRequest,
    PeerTimeout,
    Refuse,
    Transport,
    TransportConfig,
    pack_meta,
    unpack_meta,
)

LOOP = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def until(check: Callable[[], object], what: str, within: float = 5.0,
                between: Callable[[], object] | None = None) -> None:
    """Poll a real condition with a deadline, yielding to the loop (and acting) between polls."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        if between is not None:
            between()
        await asyncio.sleep(0.01)


def started(config: TransportConfig = LOOP) -> Transport:
    t = Transport(config)
    t.start()
    return t


def test_pub_sub_delivers_frames_by_topic() -> None:
    async def main() -> None:
        a, b = started(), started()
        got: list[list[bytes]] = []
        b.on_topic(b"g", got.append)
        b.follow(a.gossip_endpoint)
        # PUB/SUB loses what is sent before the subscription lands: publish until heard.
        await until(lambda: got, "first gossip message",
                    between=lambda: a.publish(b"g", b"hello", b"\x00\xff"))
        assert got[0] == [b"hello", b"\x00\xff"]
        a.publish(b"other", b"x")  # b never subscribed to it: filtered by ZeroMQ
        a.publish(b"g", b"last")
        await until(lambda: got[-1] == [b"last"], "last message")
        assert b.stats.inbound["sub:g"] == len(got)
        assert a.stats.outbound["pub:g"] >= len(got)
        b.unfollow(a.gossip_endpoint)
        assert a.gossip_endpoint not in b.following
        a.close()
        b.close()

    run(main())


def test_request_reply_with_meta_and_large_body() -> None:
    async def main() -> None:
        server, client = started(), started()
        seen: list[PeerRequest] = []

        async def echo(req: PeerRequest) -> PeerReply:
            seen.append(req)
            return PeerReply({"n": req.meta["n"] + 1, "kind": req.kind}, req.body[::-1])

        server.register_handler("echo", echo)
        big = bytes(range(256)) * 4096  # 1 MiB body frame, never copied into msgpack
        reply = await client.request(server.peer_endpoint, "echo", {"n": 41}, (b"a", big))
        assert reply.meta == {"n": 42, "kind": "echo"}
        assert reply.body == (big, b"a")
        replies = await asyncio.gather(
            *(client.request(server.peer_endpoint, "echo", {"n": i}) for i in range(50)))
        assert [r.meta["n"] for r in replies] == [i + 1 for i in range(50)]
        assert server.stats.inbound["req:echo"] == 51
        assert client.stats.inbound["reply:ok"] == 51
        server.close()
        client.close()

    run(main())


def test_refusals_unknown_kinds_and_handler_bugs_answer_err() -> None:
    async def main() -> None:
        server, client = started(), started()

        async def no(req: PeerRequest) -> PeerReply:
            raise Refuse("not today")

        async def buggy(req: PeerRequest) -> PeerReply:
            raise KeyError("oops")

        server.register_handler("no", no)
        server.register_handler("buggy", buggy)
        with pytest.raises(PeerRefused, match="not today"):
            await client.request(server.peer_endpoint, "no")
        with pytest.raises(PeerRefused, match="unknown request kind"):
            await client.request(server.peer_endpoint, "nonesuch")
        with pytest.raises(PeerRefused, match="buggy failed on the peer"):
            await client.request(server.peer_endpoint, "buggy")
        assert server.stats.dropped["peer:handler-error:buggy"] == 1
        assert server.stats.dropped["peer:unknown-kind"] == 1
        server.close()
        client.close()

    run(main())


def test_timeouts_slow_handler_and_absent_peer_then_recovery() -> None:
    async def main() -> None:
        server, client = started(), started()
        release = asyncio.Event()
        calls: list[str] = []

        async def slow(req: PeerRequest) -> PeerReply:
            calls.append(req.kind)
            await release.wait()
            return PeerReply()

        server.register_handler("slow", slow)
        with pytest.raises(PeerTimeout, match="no reply within"):
            await client.request(server.peer_endpoint, "slow", timeout=0.2)
        release.set()  # its late reply must be dropped quietly, not confuse the next request

        async def fast(req: PeerRequest) -> PeerReply:
            calls.append(req.kind)
            return PeerReply({"ok": True})

        server.register_handler("fast", fast)
        assert (await client.request(server.peer_endpoint, "fast")).meta == {"ok": True}

        # Nobody listens there yet: time out, and the queued request must be discarded
        # rather than delivered when a server appears at that endpoint.
        port_holder = started()
        endpoint = port_holder.peer_endpoint
        port_holder.close()
        with pytest.raises(PeerTimeout):
            await client.request(endpoint, "fast", timeout=0.2)
        late = Transport(TransportConfig(gossip="tcp://127.0.0.1:*", peer=endpoint))
        late.start()
        late_calls: list[str] = []

        async def count(req: PeerRequest) -> PeerReply:
            late_calls.append(req.kind)
            return PeerReply()

        late.register_handler("fast", count)
        await client.request(endpoint, "fast", timeout=5)
        assert late_calls == ["fast"]
        for t in (server, client, late):
            t.close()

    run(main())


def test_garbage_on_router_and_sub_is_counted_and_survived() -> None:
    async def main() -> None:
        small = TransportConfig(gossip="tcp://127.0.0.1:*", peer="tcp://127.0.0.1:*",
                                max_msg_size=64 * 1024, max_meta_size=1024)
        server = started(small)
        hits: list[PeerRequest] = []

        async def ok(req: PeerRequest) -> PeerReply:
            hits.append(req)
            return PeerReply()

        server.register_handler("ok", ok)
        server.on_topic(b"g", lambda frames: None)
        ctx = zmq.Context.instance()
        rid = b"\x00" * 8
        garbage = [
            [b"x"],  # too short
            [b"\x09", b"ok", rid, pack_meta({})],  # unknown version
            [VERSION, b"ok", b"short", pack_meta({})],  # id of the wrong size
            [VERSION, b"ok", rid, b"\xc1"],  # 0xc1 is never valid msgpack
            [VERSION, b"ok", rid, msgpack.packb([1, 2])],  # not a map
            [VERSION, b"ok", rid, msgpack.packb({"k": "v" * 5000})],  # meta over the limit
        ]
        raw = ctx.socket(zmq.DEALER)  # queues until connected; closed at the end
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.peer_endpoint)
        for frames in garbage:
            raw.send_multipart(frames)
        # Over MAXMSGSIZE: ZeroMQ cuts that sender's link, so it gets a link of its own.
        huge = ctx.socket(zmq.DEALER)
        huge.setsockopt(zmq.LINGER, 0)
        huge.connect(server.peer_endpoint)
        huge.send_multipart([VERSION, b"ok", rid, pack_meta({}), b"z" * 100_000])
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind("tcp://127.0.0.1:*")
        server.follow(pub.getsockopt_string(zmq.LAST_ENDPOINT))
        server.on_topic(b"", lambda frames: None)  # subscribe to everything, handle only b""
        drops = server.stats.dropped
        await until(lambda: drops["peer:short"] and drops["peer:version"] >= 2
                    and drops["peer:meta"] >= 3, "the router's drops")
        await until(lambda: drops["sub:unknown-topic"], "a SUB drop",
                    between=lambda: pub.send_multipart([b"junk", b"1"]))
        client = started()
        await client.request(server.peer_endpoint, "ok", {"still": "alive"})
        assert [h.meta for h in hits] == [{"still": "alive"}]
        pub.close()
        raw.close()
        huge.close()
        server.close()
        client.close()

    run(main())


def test_malformed_replies_fail_the_request_not_the_loop() -> None:
    async def main() -> None:
        ctx = zmq.Context.instance()
        fake = ctx.socket(zmq.ROUTER)
        fake.setsockopt(zmq.LINGER, 0)
        fake.bind("tcp://127.0.0.1:*")
        endpoint = fake.getsockopt_string(zmq.LAST_ENDPOINT)
        client = started()
        loop = asyncio.get_running_loop()

        async def answer(reply: Callable[[list[bytes]], list[bytes]]) -> None:
            frames = await loop.run_in_executor(None, fake.recv_multipart)
            fake.send_multipart(reply(frames))

        garbage = answer(lambda f: [f[0], b"nonsense"])
        with pytest.raises(PeerTimeout):
            await asyncio.gather(client.request(endpoint, "x", timeout=0.5), garbage)
        assert client.stats.dropped["reply:malformed"] == 1
        bad_meta = answer(lambda f: [f[0], VERSION, b"ok", f[3], b"\xc1"])
        with pytest.raises(PeerProtocolError, match="bad reply meta"):
            await asyncio.gather(client.request(endpoint, "x", timeout=5), bad_meta)
        fake.close()
        client.close()

    run(main())


@given(st.binary(max_size=512))
def test_unpack_meta_only_returns_maps_or_raises_value_error(data: bytes) -> None:
    try:
        meta = unpack_meta(data, 256)
    except ValueError:
        return
    assert isinstance(meta, dict)
    assert all(isinstance(k, str) for k in meta)


meta_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=20) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=16), meta_values, max_size=8))
def test_meta_round_trips(meta: dict[str, Any]) -> None:
    assert unpack_meta(pack_meta(meta), 1 << 20) == meta


def test_serving_counts_the_peer_requests_being_answered() -> None:
    """What the node's heap trim asks (node.server Node.in_flight): a request forwarded to
    us counts from its arrival until its answer is out, and never after."""
    async def main() -> None:
        server, client = started(), started()
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow(req: PeerRequest) -> PeerReply:
            entered.set()
            await release.wait()
            return PeerReply({}, ())

        server.register_handler("slow", slow)
        assert server.serving == 0
        asking = asyncio.ensure_future(client.request(server.peer_endpoint, "slow", {}))
        await asyncio.wait_for(entered.wait(), 10)
        assert server.serving == 1
        release.set()
        await asking
        await until(lambda: server.serving == 0, "the served request to be forgotten")
        server.close()
        client.close()

    run(main())
