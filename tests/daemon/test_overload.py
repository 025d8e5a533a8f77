"""Overload: 4 validator daemons under a burst far beyond what they take degrade gracefully.

A client host (one libp2p host in this process, as ``benchmarks/daemons.py`` uses) sends one
validator 6,000 signed orders at once, as concurrent ``submit-batch`` requests on one stream (each
member's orders in one request, in nonce order: the requests may arrive in any order). The
validator takes submissions only up to its back-pressure limit (``gridnode.daemon.submit``) and
refuses the rest with the typed reason ``full``; every order it accepted commits on every
validator, and nothing it refused does. Behaviour only: no timing is asserted (deadlines only
bound the waits).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import SignedOrder, SignedReading, Tx, sign_order, sign_reading
from gridnode.daemon.submit import PENDING_MIN_TXS
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import NetConfig, NetHost, open_net_host, peer_id_of
from gridnode.txbatch import MAX_BATCH_TXS, decode_tx_results, encode_tx_batch
from market.errors import LedgerReason
from market.orders import Order, Side, Step
from sims.daemons import LocalCommunity

pytestmark = pytest.mark.net

MEMBERS = 600
SLOTS = 10  # orders per member, one per slot: MEMBERS * SLOTS in the burst
PER_REQUEST = 40  # members per request (their orders, then their readings): the requests may
# go out in any order, a member's nonces stay in order within its one request


def burst(members: list[KeyPair], lc: LocalCommunity, first_open: int) -> list[SignedOrder]:
    """Every member's orders for the next ``SLOTS`` slots, member by member in nonce order."""
    assert lc.genesis is not None
    rng = random.Random(3)
    out = []
    for i, key in enumerate(members):
        for n in range(1, SLOTS + 1):
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
        # each request: PER_REQUEST members' orders, then those members' readings of the last
        # delivered slot (readings are bounded by the community, one per household and slot, and
        # must never be refused for load: here they come right after orders refused for it)
        delivered = lc.genesis.clock.slot_at(int(time.time())) - 1
        batches: list[list[Tx]] = []
        for m in range(0, MEMBERS, PER_REQUEST):
            group = members[m : m + PER_REQUEST]
            batches.append(
                [
                    *orders[m * SLOTS : (m + PER_REQUEST) * SLOTS],
                    *(sign_reading(k, lc.genesis, slot=delivered, net_wh=-100) for k in group),
                ]
            )
        assert max(map(len, batches)) <= MAX_BATCH_TXS
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
        reading_reasons: list[LedgerReason | str | None] = []
        readings_after_full = 0  # readings answered after an order of their request was refused
        for batch, answer in zip(batches, answers, strict=True):
            rows = decode_tx_results(answer, expected=len(batch))
            assert [tid for tid, _ in rows] == [tx.id for tx in batch]
            full_seen = False
            for tx, (_, reason) in zip(batch, rows, strict=True):
                if isinstance(tx, SignedReading):
                    reading_reasons.append(reason)
                    readings_after_full += full_seen
                else:
                    reasons.append(reason)
                    full_seen = full_seen or reason == LedgerReason.MEMPOOL_FULL
        # every reading is taken, also right after orders refused for load (only if the test
        # crossed that slot's reading deadline may one be refused: as late, never for load)
        late = time.time() >= lc.genesis.clock.end(delivered) + lc.genesis.reading_deadline_seconds
        allowed = {None, LedgerReason.READING_TOO_LATE} if late else {None}
        assert set(reading_reasons) <= allowed, set(reading_reasons)
        assert readings_after_full > 0
        accepted = reasons.count(None)
        refused = [r for r in reasons if r is not None]
        # the burst is larger than the validator takes: the rest is refused, typed, and only so
        assert refused, "a burst of 6,000 orders was taken whole: no back-pressure"
        assert set(refused) == {LedgerReason.MEMPOOL_FULL}, set(refused)
        assert accepted + reading_reasons.count(None) >= PENDING_MIN_TXS  # the limit's floor

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
