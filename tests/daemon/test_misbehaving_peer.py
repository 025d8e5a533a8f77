"""A hostile peer on the network: forged, replayed, malformed and oversize messages.

The daemons must reject every one before it spreads, count it against the sender (visible in
`/api/status`), and keep committing blocks. Gossip carries batches of orders (topic `orders/2`): one
forged, foreign or replayed order refuses its whole batch; a good batch reaches every node's book.
A batched submission (`submit-batch`) is answered with one result per transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from gridnode.config import load_identity
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import SignedOrder, sign_order
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from gridnode.txbatch import decode_tx_results, encode_tx_batch
from market.errors import InvalidInput
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net


@pytest.fixture
def community(tmp_path: Path) -> Iterator[LocalCommunity]:
    lc = LocalCommunity(tmp_path / "c", validators=4, full_nodes=0, speedup=60)
    lc.create()
    lc.start()
    try:
        lc.wait_ready(90)
        yield lc
    finally:
        assert all(code == 0 for code in lc.stop().values())


@pytest.mark.asyncio
async def test_hostile_peer_is_counted_and_the_community_keeps_working(
    community: LocalCommunity,
) -> None:
    lc = community
    assert lc.genesis is not None
    genesis = lc.genesis
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 60)
    victim = lc.households[0]
    victim_peer = peer_id_of(victim.key.public_key)
    member = load_identity(lc.households[1].dir)  # a real member key, to make valid orders
    slot = lc.api(0, "/api/status")["first_open_slot"] + 2

    def order(order_id: str, nonce: int, at: int = slot) -> SignedOrder:
        return sign_order(
            member,
            genesis,
            Order(order_id, member.public_hex, Side.SELL, at, (Step(100_000, 100),), nonce),
        )

    good = order("replay-me", 1)
    replacement = order("replacement", 2)  # replaces `good`: re-sending `good` is then a replay
    forged = dataclasses.replace(
        good, order=dataclasses.replace(good.order, order_id="forged", nonce=9), signature=bytes(64)
    )
    outsider = KeyPair.from_rng(random.Random(5))
    stranger = sign_order(
        outsider,
        genesis,
        Order("outsider", outsider.public_hex, Side.BUY, slot, (Step(1, 1),), 1),
    )
    fresh = order("fresh", 3, slot + 1)  # valid, never submitted: reaches the book by gossip only
    smuggled = order("smuggled", 4, slot + 2)  # valid, but in a batch with a forgery

    def batch(*txs: SignedOrder) -> bytes:
        return encode_tx_batch(list(txs))

    def book(node: int) -> set[str]:
        body = lc.api(node, "/api/orders")
        return {o["order_id"] for o in body["orders"] + body["pending"]}

    config = NetConfig(community=genesis.community_id, max_gossip_bytes=1 << 20)
    async with TrioBridge() as bridge:
        attacker: NetHost = await bridge.enter(lambda: open_net_host(outsider, config))
        await bridge.call(attacker.connect, victim.multiaddr())
        await bridge.call(
            functools.partial(attacker.subscribe, version=2), "orders", lambda origin, data: None
        )
        # a batched submission: one answer per transaction, in order
        answer = await bridge.call(
            attacker.request, victim_peer, "submit-batch", batch(good, forged, stranger)
        )
        rows = decode_tx_results(answer, expected=3)
        assert [tid for tid, _ in rows] == [good.id, forged.id, stranger.id]
        assert [reason for _, reason in rows] == ["", "bad_signature", "not_a_member"]
        with pytest.raises(InvalidInput):  # not a batch at all: refused as a whole
            await bridge.call(attacker.request, victim_peer, "submit-batch", b"\xc1")
        assert await bridge.call(attacker.request, victim_peer, "submit", replacement.encode())
        assert lc.wait_for(lambda: "replacement" in book(0), 30)
        await bridge.call(_wait_mesh, attacker, victim_peer, genesis.community_id)
        for data in (
            b"\x93\x01\x02",  # malformed
            batch(smuggled, forged),  # one forgery refuses the whole batch: bad_signature
            batch(stranger),  # not_a_member
            batch(good),  # replayed (superseded by `replacement`): stale_nonce
            good.encode(),  # an order that is not in a batch: bad_shape
            b"\x00" * 100_000,  # oversize
            batch(fresh),  # a good batch
        ):
            await bridge.call(functools.partial(attacker.publish, version=2), "orders", data)
        # consensus stream garbage, and a submit of junk (answered "rejected")
        await bridge.call(attacker.send, victim_peer, "consensus", [b"\xff\xfe not msgpack"])
        with pytest.raises(InvalidInput):
            await bridge.call(attacker.request, victim_peer, "submit", b"\xc1")

        def counted() -> bool:
            bad = lc.api(0, "/api/status")["misbehaviour"]
            return all(
                bad.get(k, 0) >= 1
                for k in (
                    "bad_signature",
                    "not_a_member",
                    "stale_nonce",
                    "bad_shape",
                    "oversize",
                    "malformed",
                )
            )

        assert lc.wait_for(counted, 30), lc.api(0, "/api/status")["misbehaviour"]
        peers = lc.api(0, "/api/peers")["peers"]
        assert any(p["peer_id"] == attacker.peer_id and p["misbehaviour"] for p in peers)
        # the good batch was accepted and forwarded: another validator sees its order
        assert lc.wait_for(lambda: "fresh" in book(2), 30), book(2)

    # nothing the attacker sent reached the ledger, and blocks keep coming
    h = lc.api(0, "/api/status")["height"]
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= h + 3, 30)
    for node in range(4):
        ids = book(node)
        assert "forged" not in ids and "outsider" not in ids and "smuggled" not in ids, ids
        assert ids <= {"replacement", "fresh"}, ids


async def _wait_mesh(host: NetHost, peer: str, community: str) -> None:
    with trio.move_on_after(15):
        while peer not in host.gossip_peers(f"/gridnode/{community}/orders/2"):
            await trio.sleep(0.05)
