"""Hostile peers against real daemons: forged, replayed, malformed and oversize messages.

The daemons must refuse every one before it spreads, count it once against the peer that sent it
under its reason (visible in `/api/status` and `/api/peers`), keep committing blocks, and ban a
peer whose score falls below the threshold: disconnected, and refused for its back-off. A refusal
an honest household meets — its order arrived after the gate closed — is answered with its reason
and never counted. Gossip carries batches of orders (topic `orders/2`): one forged or foreign order
refuses its whole batch; a good batch reaches every node's book.

Each attacker below is its own identity and stays under the ban threshold (a fresh libp2p key
costs nothing), so every kind of refusal is seen and counted; the last test's attacker does not.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Iterator

import pytest
import trio

from gridnode.config import load_identity
from gridnode.core.consensus_messages import Vote, VoteType, encode_message
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Genesis, SignedOrder, sign_order
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from gridnode.txbatch import decode_tx_results, encode_tx_batch
from market.errors import LedgerReason, NetworkError, OrderReason, Rejected, WireReason
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity
from tests.refusals import refused

pytestmark = pytest.mark.net


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCommunity]:
    lc = LocalCommunity(tmp_path_factory.mktemp("c"), validators=4, full_nodes=0, speedup=60)
    lc.create()
    lc.start()
    try:
        lc.wait_ready(90)
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 60)
        yield lc
    finally:
        assert all(code == 0 for code in lc.stop().values())


class Orders:
    """Orders signed by a real member (node 1's key) for the community's slots."""

    def __init__(self, lc: LocalCommunity) -> None:
        assert lc.genesis is not None
        self.genesis: Genesis = lc.genesis
        self.member = load_identity(lc.households[1].dir)
        self.lc = lc

    def first_open(self) -> int:
        return int(self.lc.api(0, "/api/status")["first_open_slot"])

    def order(self, order_id: str, nonce: int, slot: int) -> SignedOrder:
        o = Order(order_id, self.member.public_hex, Side.SELL, slot, (Step(100_000, 100),), nonce)
        return sign_order(self.member, self.genesis, o)


def _key(seed: int) -> KeyPair:
    return KeyPair.from_rng(random.Random(seed))


async def _attacker(bridge: TrioBridge, lc: LocalCommunity, seed: int) -> NetHost:
    assert lc.genesis is not None
    config = NetConfig(community=lc.genesis.community_id, max_gossip_bytes=1 << 20)
    host: NetHost = await bridge.enter(lambda: open_net_host(_key(seed), config))
    await bridge.call(host.connect, lc.households[0].multiaddr())
    return host


async def _join_orders_topic(bridge: TrioBridge, host: NetHost, lc: LocalCommunity) -> None:
    assert lc.genesis is not None
    await bridge.call(
        functools.partial(host.subscribe, version=2), "orders", lambda origin, data: None
    )
    topic = f"/gridnode/{lc.genesis.community_id}/orders/2"
    victim = peer_id_of(lc.households[0].key.public_key)

    async def meshed() -> None:
        with trio.move_on_after(15):
            while victim not in host.gossip_peers(topic):
                await trio.sleep(0.05)

    await bridge.call(meshed)


def _book(lc: LocalCommunity, node: int) -> set[str]:
    body = lc.api(node, "/api/orders")
    return {o["order_id"] for o in body["orders"] + body["pending"]}


def _peer(lc: LocalCommunity, peer_id: str) -> dict[str, object]:
    peers = {p["peer_id"]: p for p in lc.api(0, "/api/peers")["peers"]}
    return peers.get(peer_id, {"misbehaviour": {}, "score": 0.0, "banned": False})


@pytest.mark.asyncio
async def test_each_refusal_is_counted_once_by_reason_and_the_community_keeps_working(
    community: LocalCommunity,
) -> None:
    lc = community
    mk = Orders(lc)
    slot = mk.first_open() + 2
    victim_peer = peer_id_of(lc.households[0].key.public_key)
    good = mk.order("replay-me", 1, slot)
    replacement = mk.order("replacement", 2, slot)  # replaces `good`: `good` is then a replay
    forged = dataclasses.replace(
        good, order=dataclasses.replace(good.order, order_id="forged", nonce=9), signature=bytes(64)
    )
    outsider = _key(5)
    stranger = sign_order(
        outsider,
        mk.genesis,
        Order("outsider", outsider.public_hex, Side.BUY, slot, (Step(1, 1),), 1),
    )
    fresh = mk.order("fresh", 3, slot + 1)  # valid, never submitted: reaches the book by gossip
    smuggled = mk.order("smuggled", 4, slot + 2)  # valid, but in a batch with a forgery

    def batch(*txs: SignedOrder) -> bytes:
        return encode_tx_batch(list(txs))

    async with TrioBridge() as bridge:
        # 1: a batched submission with a forgery and an outsider's order: one answer per
        # transaction, the sender blamed once per reason (bad_signature, not_a_member)
        a1 = await _attacker(bridge, lc, 101)
        answer = await bridge.call(
            a1.request, victim_peer, "submit-batch", batch(good, forged, stranger)
        )
        rows = decode_tx_results(answer, expected=3)
        assert rows == [
            (good.id, None),
            (forged.id, LedgerReason.BAD_SIGNATURE),
            (stranger.id, LedgerReason.NOT_A_MEMBER),
        ]
        # 2: bytes that are no batch and no transaction: refused whole, with a code
        a2 = await _attacker(bridge, lc, 102)
        with refused(WireReason.MALFORMED, error=Rejected):
            await bridge.call(a2.request, victim_peer, "submit-batch", b"\xc1")
        with refused(WireReason.MALFORMED, error=Rejected):
            await bridge.call(a2.request, victim_peer, "submit", b"\xc1")
        # the replacement, submitted honestly
        assert await bridge.call(a2.request, victim_peer, "submit", replacement.encode())
        assert lc.wait_for(lambda: "replacement" in _book(lc, 0), 30)
        # 3: malformed and oversize gossip
        a3 = await _attacker(bridge, lc, 103)
        await _join_orders_topic(bridge, a3, lc)
        for data in (b"\x93\x01\x02", b"\x00" * 100_000):
            await bridge.call(functools.partial(a3.publish, version=2), "orders", data)
        # 4: forged and foreign gossip: one forgery refuses its whole batch
        a4 = await _attacker(bridge, lc, 104)
        await _join_orders_topic(bridge, a4, lc)
        for data in (batch(smuggled, forged), batch(stranger)):
            await bridge.call(functools.partial(a4.publish, version=2), "orders", data)
        # 5: a replay (stale nonce: a race can cause it, so refused but not counted), an order
        # outside a batch (bad_shape), and a good batch, which is accepted and forwarded
        a5 = await _attacker(bridge, lc, 105)
        await _join_orders_topic(bridge, a5, lc)
        for data in (batch(good), good.encode(), batch(fresh)):
            await bridge.call(functools.partial(a5.publish, version=2), "orders", data)
        # 6: consensus garbage, and mempool sharing (`tx`) from a peer that is no validator
        a6 = await _attacker(bridge, lc, 106)
        await bridge.call(a6.send, victim_peer, "consensus", [b"\xff\xfe not msgpack"])
        await bridge.call(a6.send, victim_peer, "tx", [b"junk"])

        expected = {
            a1.peer_id: {"bad_signature": 1, "not_a_member": 1},
            a2.peer_id: {"malformed": 2},
            a3.peer_id: {"malformed": 1, "oversize": 1},
            a4.peer_id: {"bad_signature": 1, "not_a_member": 1},
            a5.peer_id: {"bad_shape": 1},
            a6.peer_id: {"malformed": 1, "not_permitted": 1},
        }
        totals: dict[str, int] = {}
        for counts in expected.values():
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v

        def counted() -> bool:
            return lc.api(0, "/api/status")["misbehaviour"] == totals

        assert lc.wait_for(counted, 30), lc.api(0, "/api/status")["misbehaviour"]
        status = lc.api(0, "/api/status")
        assert status["misbehaviour_total"] == sum(totals.values())  # each refusal once
        assert status["banned_peers"] == 0
        for peer_id, counts in expected.items():
            seen = _peer(lc, peer_id)
            assert seen["misbehaviour"] == counts, (peer_id, seen)
            assert not seen["banned"] and -100 < float(seen["score"]) < 0  # type: ignore[arg-type]
        # the good batch was accepted and forwarded: another validator sees its order
        assert lc.wait_for(lambda: "fresh" in _book(lc, 2), 30), _book(lc, 2)

    # nothing the attackers sent reached the ledger, and blocks keep coming
    h = lc.api(0, "/api/status")["height"]
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= h + 3, 30)
    for node in range(4):
        ids = _book(lc, node)
        assert "forged" not in ids and "outsider" not in ids and "smuggled" not in ids, ids
        assert ids <= {"replacement", "fresh"}, ids


@pytest.mark.asyncio
async def test_a_peer_that_keeps_forging_is_banned_and_an_honest_late_household_is_not(
    community: LocalCommunity,
) -> None:
    lc = community
    mk = Orders(lc)
    victim_peer = peer_id_of(lc.households[0].key.public_key)
    async with TrioBridge() as bridge:
        # an honest household whose orders keep arriving after their gate closed, by `submit`
        # and by `submit-batch`: answered slot_closed every time, never counted
        honest = await _attacker(bridge, lc, 201)
        closed = mk.first_open() - 1
        for i in range(10):
            late = mk.order(f"late-{i}", 1_000 + i, closed)
            with refused(OrderReason.SLOT_CLOSED, error=Rejected):
                await bridge.call(honest.request, victim_peer, "submit", late.encode())
            answer = await bridge.call(
                honest.request, victim_peer, "submit-batch", encode_tx_batch([late])
            )
            assert decode_tx_results(answer, expected=1) == [(late.id, OrderReason.SLOT_CLOSED)]

        # a hostile peer keeps sending forged votes for the height being decided
        hostile = await _attacker(bridge, lc, 202)

        async def forge_until_dropped() -> int:
            sent = 0
            with trio.move_on_after(30):
                while victim_peer in hostile.connected_peers() and sent < 200:
                    height = lc.api(0, "/api/status")["height"] + 1  # the height being decided
                    vote = Vote(VoteType.PREVOTE, height, 0, b"\x01" * 32, 0, bytes(64))
                    try:
                        await hostile.send(victim_peer, "consensus", [encode_message(vote)])
                    except NetworkError:
                        break
                    sent += 1
                    await trio.sleep(0.05)
            return sent

        sent = await bridge.call(forge_until_dropped)
        assert lc.wait_for(lambda: _peer(lc, hostile.peer_id)["banned"] is True, 30)
        seen = _peer(lc, hostile.peer_id)
        assert seen["misbehaviour"] == {"bad_signature": 2}, (sent, seen)  # 2 x 60 > 100
        assert lc.api(0, "/api/status")["banned_peers"] == 1

        # disconnected, and refused for its back-off: a fresh dial is closed, nothing is served
        async def dropped() -> bool:
            with trio.move_on_after(15):
                while victim_peer in hostile.connected_peers():
                    await trio.sleep(0.05)
            return victim_peer not in hostile.connected_peers()

        assert await bridge.call(dropped)

        async def come_back() -> bytes:
            await hostile.connect(lc.households[0].multiaddr())
            return await hostile.request(victim_peer, "submit", b"\xc1", timeout_s=2)

        with pytest.raises(NetworkError):
            await bridge.call(come_back)
        assert _peer(lc, hostile.peer_id)["misbehaviour"] == {"bad_signature": 2}  # unread

        # the honest household was not penalised and is still served
        seen = _peer(lc, honest.peer_id)
        assert seen["misbehaviour"] == {} and seen["score"] == 0 and not seen["banned"]
        ok = mk.order("on-time", 2_000, mk.first_open() + 1)
        assert await bridge.call(honest.request, victim_peer, "submit", ok.encode()) == ok.id
