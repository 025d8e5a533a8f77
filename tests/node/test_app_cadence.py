"""The ledger application's side of the adaptive cadence (its backlog), and committed blocks
applied without re-verifying their transactions' signatures."""

from __future__ import annotations

from gridnode.core.app import LedgerApp
from gridnode.core.consensus import Backlog
from gridnode.core.crypto import verify_counts
from gridnode.core.ledger import sign_reading
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community

SLOT_S = 900


def _tx_verifies(before: dict[str, int]) -> int:
    after = verify_counts()
    return sum(n - before.get(d, 0) for d, n in after.items() if d.startswith(("order", "reading")))


def test_backlog_counts_pending_and_names_the_next_gate_closure_and_reading_deadline() -> None:
    c = Community()
    app = LedgerApp(c.genesis, proposer=c.genesis.validators[0], max_block_txs=4)
    assert app.backlog() == Backlog(0, False, None)  # nothing waits, nothing is due
    slot = T0_MS // 1000 // SLOT_S + 3
    for m in range(3):
        assert app.submit(c.order(m, Side.SELL, slot, (100_000, 500)), now_ms=T0_MS + 1).accepted
    assert app.backlog() == Backlog(3, True, None)  # 3 of 4: over half a block
    block = app.make_block(1, 0, T0_MS + 1_000)
    app.apply(1, block)
    # the orders are in the state: the block at the slot's gate closure clears it
    assert app.backlog() == Backlog(0, False, c.genesis.clock.gate_closure(slot) * 1000)
    # a reading of an earlier slot waiting for settlement: its deadline comes first
    delivered = slot - 4
    reading = sign_reading(c.members[0], c.genesis, slot=delivered, net_wh=-200)
    assert app.submit(reading, now_ms=T0_MS + 2_000).accepted
    app.apply(2, app.make_block(2, 0, T0_MS + 2_000))
    deadline = c.genesis.clock.end(delivered) + c.genesis.reading_deadline_seconds
    assert app.backlog().due_ms == min(deadline, c.genesis.clock.gate_closure(slot)) * 1000


def test_a_committed_block_is_applied_without_one_verification_per_transaction() -> None:
    c = Community()
    proposer = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    slot = T0_MS // 1000 // SLOT_S + 3
    for m in range(5):
        proposer.submit(c.order(m, Side.BUY, slot, (120_000, 300)), now_ms=T0_MS + 1)
    block = proposer.make_block(1, 0, T0_MS + 1_000)
    # a validator judging the proposal verifies every signature in it ...
    validator = LedgerApp(c.genesis, proposer=c.genesis.validators[1])
    before = verify_counts()
    assert validator.block_error(1, block, T0_MS + 1_000) is None
    assert _tx_verifies(before) == 5
    # ... a full node applying the committed block (its commit verified by consensus) does not,
    # and still re-runs every other rule: it ends in the same state
    full = LedgerApp(c.genesis)
    before = verify_counts()
    full.apply(1, block)
    assert _tx_verifies(before) == 0
    validator.apply(1, block)
    proposer.apply(1, block)
    assert full.state.digest() == validator.state.digest() == proposer.state.digest()
    assert full.state.height == 1 and len(full.state.orders[slot]) == 5


def test_a_slot_every_member_read_is_settled_and_names_no_deadline() -> None:
    # it keeps its readings until its deadline (a re-reading is a duplicate), but it is settled:
    # waking a height at its deadline would make a block per slot for nothing (stop 27: the year
    # made 50 % more blocks until the cadence knew)
    c = Community(n_members=2)
    app = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    slot = T0_MS // 1000 // SLOT_S - 1
    for key in c.members:
        assert app.submit(
            sign_reading(key, c.genesis, slot=slot, net_wh=5), now_ms=T0_MS + 1
        ).accepted
    app.apply(1, app.make_block(1, 0, T0_MS + 1_000))
    assert app.state.settled_slots == 1 and slot in app.state.readings
    assert app.backlog() == Backlog(0, False, None)
