"""Overload: 4 validator daemons under a burst far beyond what they take degrade gracefully.

A client host (one libp2p host in this process, as ``benchmarks/daemons.py`` uses) sends one
validator 6,000 signed orders at once, pipelined as ``submit-batch`` requests on one stream. The
validator takes submissions only up to its back-pressure limit (``gridnode.daemon.submit``) and
refuses the rest with the typed reason ``full``; every order it accepted commits on every
validator, and nothing it refused does. Behaviour only: no timing is asserted (deadlines only
bound the waits).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import SignedOrder, sign_order
from gridnode.daemon.submit import PENDING_MIN_TXS
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from gridnode.txbatch import MAX_BATCH_TXS, decode_tx_results, encode_tx_batch
from market.errors import LedgerReason
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net

MEMBERS = 60
SLOTS = 100  # orders per member, one per slot: MEMBERS * SLOTS in the burst
BATCH = 500


def burst(members: list[KeyPair], lc: LocalCommunity, first_open: int) -> list[SignedOrder]:
    """Every member's orders for the next ``SLOTS`` slots, nonce order kept per member."""
    assert lc.genesis is not None
    rng = random.Random(3)
    out = []
    for n in range(1, SLOTS + 1):
        for i, key in enumerate(members):
            order = Order(
                f"burst-{i}-{n}",
                key.public_hex,
                Side.SELL if (i + n) % 2 else Side.BUY,
                first_open + 1 + n,
                (Step(rng.randint(80_000, 300_000), rng.randint(1, 2000)),),
                n,
            )
            out.append(sign_order(key, lc.genesis, order))
    return out


@pytest.mark.asyncio
async def test_a_burst_beyond_the_limit_is_refused_full_and_every_accepted_order_commits(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    members = [KeyPair.from_rng(rng) for _ in range(MEMBERS)]
    lc = LocalCommunity(
        tmp_path / "c",
        validators=4,
        full_nodes=0,
        speedup=1.0,
        extra_members=tuple(k.public_hex for k in members),
    )
    lc.create()
    assert lc.genesis is not None
    lc.start()
    try:
        lc.wait_ready(120)
        assert lc.wait_for(lambda: lc.api(0, "/api/status")["height"] >= 2, 90)
        status = lc.api(0, "/api/status")
        base_open = int(status["open_orders"])
        orders = burst(members, lc, int(status["first_open_slot"]))
        assert BATCH <= MAX_BATCH_TXS
        batches = [orders[i : i + BATCH] for i in range(0, len(orders), BATCH)]
        validator = peer_id_of(lc.households[0].key.public_key)

        async with TrioBridge() as bridge:
            client: NetHost = await bridge.enter(
                lambda: open_net_host(
                    KeyPair.from_rng(rng),
                    NetConfig(community=lc.genesis.community_id, request_timeout_s=120.0),
                )
            )
            await bridge.call(client.connect, lc.households[0].multiaddr())
            answers = await asyncio.gather(
                *(
                    bridge.call(client.request, validator, "submit-batch", encode_tx_batch(b))
                    for b in batches
                )
            )
        reasons: list[LedgerReason | str | None] = []
        for batch, answer in zip(batches, answers, strict=True):
            rows = decode_tx_results(answer, expected=len(batch))
            assert [tid for tid, _ in rows] == [tx.id for tx in batch]
            reasons.extend(reason for _, reason in rows)
        accepted = reasons.count(None)
        refused = [r for r in reasons if r is not None]
        # the burst is larger than the validator takes: the rest is refused, typed, and only so
        assert refused, "a burst of 6,000 orders was taken whole: no back-pressure"
        assert set(refused) == {LedgerReason.MEMPOOL_FULL}, set(refused)
        assert accepted >= PENDING_MIN_TXS

        # every accepted order commits, on every validator, and no refused one does
        def committed(i: int) -> int:
            return int(lc.api(i, "/api/status")["open_orders"]) - base_open

        def settled() -> bool:
            return all(
                committed(i) >= accepted and int(lc.api(i, "/api/status")["mempool_size"]) == 0
                for i in range(4)
            )

        assert lc.wait_for(settled, 240, 1.0), [committed(i) for i in range(4)]
        assert [committed(i) for i in range(4)] == [accepted] * 4
    finally:
        codes = lc.stop()
    assert all(code in (0, -9) for code in codes.values()), codes
