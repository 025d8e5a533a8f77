"""A hostile peer on the network: forged, replayed, malformed and oversize messages.

The daemons must reject every one before it spreads, count it against the sender (visible in
`/api/status`), and keep committing blocks.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from gridnode.config import load_identity
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import sign_order
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
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
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 60)
    victim = lc.households[0]
    victim_peer = peer_id_of(victim.key.public_key)
    member = load_identity(
        lc.households[1].dir
    )  # a real member key, to make a valid order to replay
    slot = lc.api(0, "/api/status")["first_open_slot"] + 2
    good = sign_order(
        member,
        lc.genesis,
        Order("replay-me", member.public_hex, Side.SELL, slot, (Step(100_000, 100),), 1),
    )
    forged = dataclasses.replace(
        good, order=dataclasses.replace(good.order, order_id="forged", nonce=2), signature=bytes(64)
    )
    outsider = KeyPair.from_rng(random.Random(5))
    stranger = sign_order(
        outsider,
        lc.genesis,
        Order("outsider", outsider.public_hex, Side.BUY, slot, (Step(1, 1),), 1),
    )

    config = NetConfig(community=lc.genesis.community_id, max_gossip_bytes=1 << 20)
    async with TrioBridge() as bridge:
        attacker: NetHost = await bridge.enter(lambda: open_net_host(outsider, config))
        await bridge.call(attacker.connect, victim.multiaddr())
        await bridge.call(attacker.subscribe, "orders", lambda origin, data: None)
        # a real submission first: the order is committed, so its re-broadcast below is a replay
        assert await bridge.call(attacker.request, victim_peer, "submit", good.encode())
        assert lc.wait_for(lambda: lc.api(0, "/api/orders")["orders"], 30)
        await bridge.call(_wait_mesh, attacker, victim_peer, lc.genesis.community_id)
        for data in (
            b"\x93\x01\x02",
            forged.encode(),
            stranger.encode(),
            good.encode(),
            b"\x00" * 100_000,
        ):
            await bridge.call(attacker.publish, "orders", data)
        # consensus stream garbage, and a submit of junk (answered "rejected")
        await bridge.call(attacker.send, victim_peer, "consensus", [b"\xff\xfe not msgpack"])
        with pytest.raises(InvalidInput):
            await bridge.call(attacker.request, victim_peer, "submit", b"\xc1")

        def counted() -> bool:
            bad = lc.api(0, "/api/status")["misbehaviour"]
            return all(
                bad.get(k, 0) >= 1
                for k in ("bad_signature", "not_a_member", "stale_nonce", "oversize", "malformed")
            )

        assert lc.wait_for(counted, 30), lc.api(0, "/api/status")["misbehaviour"]
        peers = lc.api(0, "/api/peers")["peers"]
        assert any(p["peer_id"] == attacker.peer_id and p["misbehaviour"] for p in peers)

    # nothing the attacker sent reached the ledger, and blocks keep coming
    h = lc.api(0, "/api/status")["height"]
    assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= h + 3, 30)
    ids = {o["order_id"] for o in lc.api(1, "/api/orders")["orders"]}
    assert "forged" not in ids and "outsider" not in ids
    assert ids <= {"replay-me"}


async def _wait_mesh(host: NetHost, peer: str, community: str) -> None:
    with trio.move_on_after(15):
        while peer not in host.gossip_peers(f"/gridnode/{community}/orders/1"):
            await trio.sleep(0.05)
