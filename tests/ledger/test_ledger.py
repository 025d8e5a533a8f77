"""Ledger rules: admission, replay and forgery, clearing at gate closure, settlement, block validity."""

from __future__ import annotations

import dataclasses

import pytest

from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    Block,
    Genesis,
    SignedOrder,
    admit,
    apply,
    check,
    decode_block,
    decode_tx,
    sign_cancel,
    sign_order,
    sign_reading,
)
from market.clearing import clear
from market.errors import InvalidInput, LedgerReason, OrderReason, Reason, UsageError, WireReason
from market.orders import Order, Side, Step
from market.settlement import GRID
from tests.ledger.helpers import T0_MS, Community
from tests.refusals import refused

SLOT_MS = 900_000
SLOT0 = T0_MS // SLOT_MS  # the slot delivering at genesis
OPEN = SLOT0 + 2  # gate closes at (SLOT0+2)*900 - 300 s: open at genesis


def gate_ms(slot: int) -> int:
    return slot * SLOT_MS - 300_000


def test_orders_are_admitted_and_cleared_at_gate_closure() -> None:
    c = Community()
    s0 = c.state()
    txs = [
        c.order(0, Side.SELL, OPEN, (100_000, 800)),
        c.order(1, Side.BUY, OPEN, (250_000, 500)),
        c.order(2, Side.BUY, OPEN, (200_000, 500)),
    ]
    b1, s1 = c.block(s0, T0_MS + 1_000, txs)
    assert len(b1.txs) == 3
    assert len(s1.orders[OPEN]) == 3 and not s1.trades
    # a block after the gate closes clears the slot from exactly the committed orders
    b2, s2 = c.block(s1, gate_ms(OPEN), [])
    expected = clear(
        [t.order for t in txs if isinstance(t, SignedOrder)], slot=OPEN, rule=c.genesis.rule
    )
    assert s2.trades[OPEN] == tuple(expected.trades)
    assert OPEN not in s2.orders
    assert s2.clearing_prices[OPEN] == expected.clearing_price_micro_per_kwh
    # every other node re-derives the same state from the blocks alone
    assert apply(apply(s0, b1), b2).digest() == s2.digest()


def test_settlement_with_readings_and_the_missing_reading_rule() -> None:
    c = Community(n_members=3)
    s = c.state()
    _, s = c.block(
        s,
        T0_MS + 1,
        [c.order(0, Side.SELL, OPEN, (100_000, 800)), c.order(1, Side.BUY, OPEN, (300_000, 800))],
    )
    _, s = c.block(s, gate_ms(OPEN), [])
    assert s.trades[OPEN]
    end_ms = (OPEN + 1) * SLOT_MS
    # seller reports, buyer stays silent, member 2 reports an import
    readings = [
        sign_reading(c.members[0], c.genesis, slot=OPEN, net_wh=800),
        sign_reading(c.members[2], c.genesis, slot=OPEN, net_wh=-300),
    ]
    _, s = c.block(s, end_ms + 1, readings)
    assert (
        OPEN in s.trades
    )  # not settled yet: the buyer's reading is missing and the deadline is ahead
    _, s = c.block(s, end_ms + c.genesis.reading_deadline_seconds * 1000, [])
    assert OPEN not in s.trades and OPEN not in s.readings and s.settled_slots == 1
    seller, buyer, other = (c.members[i].public_hex for i in range(3))
    price = s.clearing_prices[OPEN]
    assert price == 200_000
    amount = 800 * price // 1000
    assert s.totals[seller].bill_micro == -amount
    # the silent buyer counts as 0 Wh: its 800 Wh purchase is sold back at feed-in
    assert s.totals[buyer].bill_micro == amount - 800 * c.genesis.feed_in_micro_per_kwh // 1000
    assert s.totals[other].bill_micro == 300 * c.genesis.retail_micro_per_kwh // 1000
    assert sum(s.balances.values()) == 0
    assert s.balances[GRID] == s.totals[other].bill_micro + s.totals[buyer].bill_micro - amount


def test_slot_settles_early_when_every_member_reported() -> None:
    c = Community(n_members=2)
    s = c.state()
    _, s = c.block(
        s, T0_MS + 1, [c.order(0, Side.SELL, OPEN, (1, 10)), c.order(1, Side.BUY, OPEN, (9, 10))]
    )
    _, s = c.block(s, gate_ms(OPEN), [])
    reads = [
        sign_reading(k, c.genesis, slot=OPEN, net_wh=v)
        for k, v in zip(c.members, (10, -10), strict=True)
    ]
    _, s = c.block(s, (OPEN + 1) * SLOT_MS, reads)
    assert s.settled_slots == 1


@pytest.mark.parametrize(
    ("make_bad", "why"),
    [
        ("replay", LedgerReason.STALE_NONCE),
        ("forged", LedgerReason.BAD_SIGNATURE),
        ("outsider", LedgerReason.NOT_A_MEMBER),
        ("closed_slot", OrderReason.SLOT_CLOSED),
        ("far_ahead", OrderReason.SLOT_TOO_FAR_AHEAD),
        ("cancel_far_ahead", OrderReason.SLOT_TOO_FAR_AHEAD),
        ("stale_nonce", LedgerReason.STALE_NONCE),
        ("duplicate_id", OrderReason.DUPLICATE_ID),
        ("cancel_nothing", LedgerReason.NO_OPEN_ORDER),
        ("early_reading", LedgerReason.SLOT_NOT_DELIVERED),
        ("duplicate_reading", LedgerReason.DUPLICATE_READING),
        ("over_cap", OrderReason.PRICE_OUT_OF_RANGE),
    ],
)
def test_inadmissible_transactions_are_refused_and_invalidate_a_block(
    make_bad: str, why: Reason
) -> None:
    c = Community()
    s = c.state()
    good = c.order(0, Side.SELL, OPEN, (100_000, 500))
    _, s = c.block(s, T0_MS + 1, [good])
    outsider = KeyPair.from_rng(__import__("random").Random(99))
    bad = {
        "replay": lambda: good,
        "forged": lambda: dataclasses.replace(
            c.order(1, Side.BUY, OPEN, (1, 1)), signature=b"\x01" * 64
        ),
        "outsider": lambda: sign_order(
            outsider, c.genesis, Order("x", outsider.public_hex, Side.BUY, OPEN, (Step(1, 1),), 1)
        ),
        "closed_slot": lambda: c.order(1, Side.BUY, SLOT0, (1, 1)),
        "far_ahead": lambda: c.order(1, Side.BUY, OPEN + 672 + 1, (1, 1)),
        "cancel_far_ahead": lambda: sign_cancel(c.members[0], c.genesis, slot=2**63, nonce=9),
        "stale_nonce": lambda: sign_order(
            c.members[0], c.genesis, dataclasses.replace(good.order, order_id="again")
        ),  # type: ignore[union-attr]
        "duplicate_id": lambda: c.order(1, Side.BUY, OPEN, (1, 1), oid=good.order.order_id),  # type: ignore[union-attr]
        "cancel_nothing": lambda: sign_cancel(c.members[3], c.genesis, slot=OPEN, nonce=5),
        "early_reading": lambda: sign_reading(c.members[1], c.genesis, slot=OPEN, net_wh=5),
        "duplicate_reading": None,
        "over_cap": lambda: c.order(1, Side.BUY, OPEN, (c.genesis.retail_micro_per_kwh + 1, 1)),
    }[make_bad]
    if bad is None:  # a second reading for a delivered slot
        r1 = sign_reading(c.members[1], c.genesis, slot=SLOT0, net_wh=5)
        _, s = c.block(s, T0_MS + SLOT_MS, [r1])
        tx = sign_reading(c.members[1], c.genesis, slot=SLOT0, net_wh=6)
        time_ms = T0_MS + SLOT_MS + 1
    else:
        tx = bad()
        time_ms = T0_MS + 2
    block, after = c.block(s, time_ms, [tx])
    assert block.txs == ()  # the proposer filtered it out
    forced = dataclasses.replace(block, txs=(tx,))
    with refused(why):
        check(s, forced)
    assert after.nonces == s.nonces or make_bad == "duplicate_reading"


def test_a_built_block_is_the_admissible_part_and_its_state_is_the_checked_one() -> None:
    """build_block admits and applies in one pass: its block holds exactly what :func:`admit`
    keeps, and its state (root included) is what re-checking the block from scratch gives."""
    c = Community()
    s = c.state()
    r = sign_reading(c.members[0], c.genesis, slot=SLOT0, net_wh=-40)
    first = c.order(1, Side.SELL, OPEN, (100_000, 500))
    txs = [
        first,
        c.order(2, Side.BUY, OPEN, (150_000, 300)),
        c.order(3, Side.BUY, OPEN, (1, 1), oid=first.order.order_id),  # type: ignore[union-attr]
        first,  # a replay of a kept one
        c.order(1, Side.SELL, OPEN, (110_000, 200)),  # replaces the first
        r,
        sign_reading(c.members[0], c.genesis, slot=SLOT0, net_wh=-41),  # a second reading
        sign_reading(c.members[2], c.genesis, slot=SLOT0, net_wh=25),
    ]
    for time_ms in (T0_MS + 2, T0_MS + SLOT_MS + 1, gate_ms(OPEN) + 1):
        block, after = c.block(s, time_ms, txs)
        assert list(block.txs) == admit(s, txs, time_ms=block.time_ms)
        checked = check(s, block)
        assert checked.digest() == after.digest() and block.state_root == checked.digest()


def test_a_newer_order_replaces_the_open_one_and_cancel_removes_it() -> None:
    c = Community()
    s = c.state()
    first = c.order(0, Side.SELL, OPEN, (100_000, 500))
    second = c.order(0, Side.SELL, OPEN, (120_000, 300))
    _, s = c.block(s, T0_MS + 1, [first, second])
    assert s.open_order(OPEN, c.members[0].public_hex) == second
    cancel = sign_cancel(
        c.members[0], c.genesis, slot=OPEN, nonce=c.nonce[c.members[0].public_hex] + 1
    )
    _, s = c.block(s, T0_MS + 2, [cancel])
    assert s.open_order(OPEN, c.members[0].public_hex) is None
    assert OPEN not in s.orders


def test_block_validity_rules() -> None:
    c = Community()
    s0 = c.state()
    b1, s1 = c.block(s0, T0_MS + 10, [c.order(0, Side.SELL, OPEN, (1, 1))])
    assert check(s0, b1, now_ms=T0_MS + 10).digest() == s1.digest()
    cases = {
        "wrong_height": dataclasses.replace(b1, height=2),
        "wrong_prev_hash": dataclasses.replace(b1, prev_hash=b"\x01" * 32),
        "time_not_monotonic": dataclasses.replace(b1, time_ms=T0_MS),
        "not_a_validator": dataclasses.replace(b1, proposer=c.members[0].public_hex),
        "wrong_state_root": dataclasses.replace(b1, state_root=b"\x02" * 32),
    }
    for reason, block in cases.items():
        with pytest.raises(InvalidInput) as info:
            check(s0, block)
        assert info.value.reason == reason
    with refused(LedgerReason.TIME_IN_FUTURE):
        check(s0, b1, now_ms=T0_MS + 10 - c.genesis.max_drift_ms - 1)
    with refused(LedgerReason.TIME_TOO_OLD):
        check(s0, b1, now_ms=T0_MS + 10 + c.genesis.max_drift_ms + 1)


def test_block_and_tx_encoding_round_trip_and_strictness() -> None:
    c = Community()
    txs = [
        c.order(0, Side.SELL, OPEN, (1, 1)),
        sign_cancel(c.members[0], c.genesis, slot=OPEN, nonce=9),
        sign_reading(c.members[1], c.genesis, slot=1, net_wh=-7),
    ]
    block = Block(1, b"\x00" * 32, 5, "p", tuple(txs), b"\x00" * 32)
    assert decode_block(block.encode()) == block
    for tx in txs:
        assert decode_tx(tx.encode()) == tx
    with refused(WireReason.BAD_SHAPE):
        decode_tx(block.encode())
    with refused(WireReason.BAD_SHAPE):
        decode_block(txs[0].encode())


def test_signatures_do_not_cross_communities() -> None:
    a = Community()
    b_genesis = dataclasses.replace(a.genesis, community_id="other")
    tx = a.order(0, Side.SELL, OPEN, (1, 1))
    from gridnode.core.ledger import verify_signature

    assert verify_signature(a.genesis, tx)
    assert not verify_signature(b_genesis, tx)


def test_genesis_round_trip_and_errors() -> None:
    g = Community().genesis
    assert Genesis.from_dict(g.to_dict()) == g
    with pytest.raises(UsageError, match="unknown key 'colour'"):
        Genesis.from_dict(g.to_dict() | {"colour": 1})
    with pytest.raises(UsageError, match="'slot_seconds' must be an integer"):
        Genesis.from_dict(g.to_dict() | {"slot_seconds": "15m"})
    with pytest.raises(UsageError, match="not a hex Ed25519 public key"):
        Genesis.from_dict(g.to_dict() | {"members": ["alice"]})
    with pytest.raises(UsageError, match="missing key 'validators'"):
        Genesis.from_dict({k: v for k, v in g.to_dict().items() if k != "validators"})


def test_state_snapshot_round_trip() -> None:
    from gridnode.core.ledger import decode_state

    c = Community(n_members=3)
    s = c.state()
    _, s = c.block(
        s,
        T0_MS + 1,
        [c.order(0, Side.SELL, OPEN, (100_000, 800)), c.order(1, Side.BUY, OPEN, (300_000, 800))],
    )
    _, s = c.block(s, gate_ms(OPEN), [c.order(2, Side.BUY, OPEN + 4, (1, 5))])
    _, s = c.block(
        s, (OPEN + 1) * SLOT_MS + 1, [sign_reading(c.members[0], c.genesis, slot=OPEN, net_wh=700)]
    )
    assert s.trades and s.orders and s.readings
    back = decode_state(s.encode(), c.genesis)
    assert back == s
    assert back.digest() == s.digest()
    with refused(LedgerReason.WRONG_GENESIS):
        decode_state(s.encode(), dataclasses.replace(c.genesis, community_id="other"))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 255, 65_535, 65_536])
def test_array_header_is_msgpacks(n: int) -> None:
    from gridnode.core.ledger.state import _array_header
    from market.codec import pack

    packed = pack([None] * n)  # None packs as one byte
    assert _array_header(n) == packed[: len(packed) - n]
