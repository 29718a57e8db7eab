"""Each gossip channel carries only its own message types, from whom it should (real sockets).

A LEAVE is a Reliable envelope: it comes from its publisher's PUB, or as the answer
to our own ResendRequest to that publisher. Handed over the peer socket in another
member's name, it used to make the receiver list that member as left.
"""

from __future__ import annotations

from integration.test_gossip_agents import LOOPBACK, agent, run, states, until

from gossip.messages import Beat, Push, Reliable, Suspect, encode
from gossip.transport import PeerRefused, Transport


def test_no_leave_or_beat_in_anothers_name_over_the_peer_socket() -> None:
    async def main() -> None:
        a = agent("a")
        await a.start()
        b = agent("b", seeds=(a.self_info.addresses.peer,))
        await b.start()
        await until(lambda: states(a).get("b") == "alive" and states(b).get("a") == "alive",
                    "a and b to list each other")
        mallory = Transport(LOOPBACK)
        mallory.start()
        try:
            target = a.self_info.addresses.peer
            forged = [Reliable("b", 1, 1, "leave"), Reliable("b", 2, 2, "leave"),
                      Beat("b", 3, b.self_info.incarnation, "east", b.self_info.addresses)]
            for msg in forged:
                try:
                    await mallory.request(target, "gossip", body=(encode(msg),))
                    raise AssertionError(f"{type(msg).__name__} accepted as a request")
                except PeerRefused as exc:
                    assert "not a request" in str(exc)
            assert a.stats()["dropped"]["peer:unexpected-type"] == 3
            # Relayed news still travels this way (a leaving node's Push), and is refuted.
            lie = Push("mallory", 4, (Suspect("b", b.self_info.incarnation, "mallory"),))
            await mallory.request(target, "gossip", body=(encode(lie),))
            await until(lambda: b.membership is not None and b.membership.stats["refuted"] >= 1,
                        "b to refute the suspicion a relayed to it")
            await until(lambda: states(a).get("b") == "alive", "a to list b alive again")
            assert a.membership is not None and a.membership.member("b").state == "alive"  # type: ignore[union-attr]
        finally:
            mallory.close()
            await b.stop()
            await a.stop()

    run(main())
