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


def test_a_later_round_accepts_an_older_time_but_never_a_later_one() -> None:
    """The clock rule's old side widens by one drift bound per round of a fresh proposal (a node
    starved of CPU judges every proposal late); its future side never widens."""
    c = Community()
    proposer = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    drift = c.genesis.max_drift_ms
    for follower in (  # one that checked the block before (cached) and one that never saw it
        LedgerApp(c.genesis, proposer=c.genesis.validators[1]),
        LedgerApp(c.genesis, proposer=c.genesis.validators[2]),
    ):
        block = proposer.make_block(1, 0, T0_MS + 500)
        if follower.proposer == c.genesis.validators[1]:
            assert follower.block_error(1, block, T0_MS + 500) is None  # now cached
        seen_late = T0_MS + 500 + drift + drift // 2  # 1.5 bounds after the block's time
        late0 = follower.block_error(1, block, seen_late)
        assert late0 is not None and late0.reason == "time_too_old"
        assert follower.block_error(1, block, seen_late, round_=1) is None
        very_late = (
            T0_MS + 500 + 2 * drift + 1
        )  # beyond round 1's two bounds, within round 2's three
        late2 = follower.block_error(1, block, very_late, round_=1)
        assert late2 is not None and late2.reason == "time_too_old"
        assert follower.block_error(1, block, very_late, round_=2) is None
        early = T0_MS + 500 - drift - 1  # the block is from this node's future
        for round_ in (0, 1, 5):
            ahead = follower.block_error(1, block, early, round_=round_)
            assert ahead is not None and ahead.reason == "time_in_future"


def test_mempool_refuses_inadmissible_transactions_with_a_reason() -> None:
    c = Community()
    app = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    early = sign_reading(c.members[0], c.genesis, slot=OPEN, net_wh=1)
    assert app.submit(early).reason == "slot_not_delivered"
    tx = c.order(0, Side.SELL, OPEN, (1, 1))
    assert app.submit(tx).accepted
    app.apply(1, app.make_block(1, 0, T0_MS + 1))
    assert app.submit(tx).reason == "duplicate"  # remembered as committed


def test_a_shared_admission_cache_gives_every_node_the_same_answers_as_its_own_check() -> None:
    """Nodes sharing one admission cache (the in-process engine's) answer exactly as a node
    checking alone: admissions, refusals with their reason, before and after a block."""
    c = Community()
    shared: dict[tuple[int, bytes, bytes, int], str | None] = {}
    alone = LedgerApp(c.genesis, proposer=c.genesis.validators[0])
    pair = [
        LedgerApp(c.genesis, proposer=v, shared_admission=shared) for v in c.genesis.validators[:2]
    ]
    early = sign_reading(c.members[0], c.genesis, slot=OPEN, net_wh=1)
    orders = [c.order(i, Side.BUY, OPEN, (150_000, 100)) for i in range(3)]
    closed = c.order(3, Side.SELL, OPEN - 2, (100_000, 100))  # its gate has closed
    batch = [early, *orders, closed, orders[0]]

    def answers(app: LedgerApp, now_ms: int) -> list[tuple[bool, str]]:
        return [(r.accepted, r.reason) for r in (app.submit(tx, now_ms=now_ms) for tx in batch)]

    expected = answers(alone, T0_MS + 1)
    assert [a[0] for a in expected] == [False, True, True, True, False, False]
    assert expected[0][1] == "slot_not_delivered" and expected[-1][1] == "duplicate"
    assert all(answers(app, T0_MS + 1) == expected for app in pair)
    assert shared  # the second node's answers came from the first's checks
    block = alone.make_block(1, 0, T0_MS + 2)
    for app in (alone, *pair):
        app.apply(1, block)
    later = c.order(4, Side.SELL, OPEN, (100_000, 50))
    assert {app.submit(later, now_ms=T0_MS + 3).reason for app in (alone, *pair)} == {""}
    assert {app.submit(orders[1], now_ms=T0_MS + 3).reason for app in (alone, *pair)} == {
        "duplicate"
    }
