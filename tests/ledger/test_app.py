"""LedgerApp: the consensus hooks over the ledger, with a real mempool."""

from __future__ import annotations

from gridnode.core.app import LedgerApp
from gridnode.core.ledger import decode_block, sign_reading
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community

OPEN = T0_MS // 900_000 + 2


def test_propose_validate_apply_round_trip_across_two_nodes() -> None:
    c = Community()
    proposer = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    follower = LedgerApp(c.genesis, proposer=c.genesis.validators[1])
    txs = [
        c.order(i, Side.SELL if i % 2 else Side.BUY, OPEN, (150_000 + i, 100 * (i + 1)))
        for i in range(6)
    ]
    for tx in reversed(txs):  # arrival order does not matter
        assert proposer.submit(tx).accepted
        assert follower.submit(tx).accepted
    assert proposer.submit(txs[0]).reason == "duplicate"
    block = proposer.make_block(1, 0, T0_MS + 500)
    # same pool, same clock: the same transactions in the same order, whoever proposes
    assert decode_block(follower.make_block(1, 0, T0_MS + 500)).txs == decode_block(block).txs
    assert follower.block_error(1, block, T0_MS + 700) is None
    late = follower.block_error(1, block, T0_MS + 500 + c.genesis.max_drift_ms + 10_000)
    assert late is not None and late.reason == "time_too_old"
    # a value with a proof-of-lock is judged without the clock (consensus passes no ``now``)
    assert follower.block_error(1, block, None) is None
    wrong = follower.block_error(2, block, T0_MS + 700)
    assert wrong is not None and wrong.reason == "wrong_height"
    a = proposer.apply(1, block)
    b = follower.apply(1, block)
    assert a.digest() == b.digest()
    assert len(decode_block(block).txs) == 6 and len(proposer.mempool) == 0


def test_mempool_refuses_inadmissible_transactions_with_a_reason() -> None:
    c = Community()
    app = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    early = sign_reading(c.members[0], c.genesis, slot=OPEN, net_wh=1)
    assert app.submit(early).reason == "slot_not_delivered"
    tx = c.order(0, Side.SELL, OPEN, (1, 1))
    assert app.submit(tx).accepted
    app.apply(1, app.make_block(1, 0, T0_MS + 1))
    assert app.submit(tx).reason == "duplicate"  # remembered as committed
