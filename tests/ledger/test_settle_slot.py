"""The one rule for a missing reading (gridnode.core.ledger.settle_slot), and that apply uses it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.core.ledger import apply_with_outcome, settle_slot, sign_reading
from market.clearing import Trade
from market.errors import InvalidInput
from market.orders import Side
from market.settlement import settle
from tests.ledger.helpers import T0_MS, Community

SLOT = T0_MS // 1000 // 900 + 1
HOUSEHOLDS = ["a" * 64, "b" * 64, "c" * 64, "d" * 64]


@st.composite
def trades_and_readings(draw: st.DrawFn) -> tuple[list[Trade], dict[str, int]]:
    trades = []
    for i in range(draw(st.integers(0, 4))):
        buyer, seller = draw(st.sampled_from(HOUSEHOLDS)), draw(st.sampled_from(HOUSEHOLDS))
        energy, price = draw(st.integers(1, 2_000)), draw(st.integers(80_000, 300_000))
        trades.append(Trade(buyer, seller, f"b{i}", f"s{i}", energy, price, energy * price // 1000))
    readings = draw(
        st.dictionaries(st.sampled_from(HOUSEHOLDS), st.integers(-3_000, 3_000), max_size=4)
    )
    return trades, readings


@settings(max_examples=60, deadline=None)
@given(case=trades_and_readings())
def test_a_trader_without_a_reading_is_settled_as_if_it_read_0_wh(
    case: tuple[list[Trade], dict[str, int]],
) -> None:
    trades, readings = case
    genesis = Community().genesis
    got = settle_slot(genesis, SLOT, trades, readings)
    traders = {t.buyer for t in trades} | {t.seller for t in trades}
    explicit = {**{h: 0 for h in traders}, **readings}
    assert got == settle(SLOT, trades, explicit, genesis.tariff, netting=genesis.netting)
    for h in traders - set(readings):
        assert got.bill(h).measured_net_wh == 0
    assert {b.household for b in got.bills} == traders | set(readings)


def test_the_market_alone_refuses_a_missing_reading_the_ledger_rule_fills_it() -> None:
    genesis = Community().genesis
    trade = Trade(HOUSEHOLDS[0], HOUSEHOLDS[1], "b", "s", 500, 100_000, 50_000)
    with pytest.raises(InvalidInput) as caught:
        settle(SLOT, [trade], {HOUSEHOLDS[0]: -500}, genesis.tariff)
    assert caught.value.reason == "missing_reading" and caught.value.field == HOUSEHOLDS[1]
    bill = settle_slot(genesis, SLOT, [trade], {HOUSEHOLDS[0]: -500}).bill(HOUSEHOLDS[1])
    assert bill.measured_net_wh == 0 and bill.grid_import_wh == 500


def test_the_ledger_settles_with_that_rule() -> None:
    """A seller that never reads: the settlement apply reports is settle_slot's."""
    c = Community(n_members=3)
    state = c.state()
    block, state = c.block(
        state,
        T0_MS + 1_000,
        [c.order(0, Side.SELL, SLOT, (100_000, 600)), c.order(1, Side.BUY, SLOT, (200_000, 400))],
    )
    block, state = c.block(state, (SLOT * 900 - 300) * 1000 + 1_000, [])
    trades = state.trades[SLOT]
    reading = sign_reading(c.members[1], c.genesis, slot=SLOT, net_wh=-380)
    block, state = c.block(state, (SLOT + 1) * 900_000 + 1_000, [reading])
    before = state
    block, state = c.block(state, (SLOT + 2) * 900_000 + 1_000, [])
    outcome = apply_with_outcome(before, block)
    assert outcome.state.digest() == state.digest()
    (settled,) = outcome.settled
    assert dict(settled.readings) == {c.members[1].public_hex: -380}
    assert settled.settlement == settle_slot(c.genesis, SLOT, trades, settled.readings)
    assert settled.settlement.bill(c.members[0].public_hex).measured_net_wh == 0
