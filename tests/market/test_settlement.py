"""Settlement: worked examples, and conservation/exactness properties over random slots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import Rule, clear
from market.errors import OrderReason, UsageError
from market.orders import Order, Side, Step
from market.settlement import (
    GRID,
    POOL,
    Netting,
    Tariff,
    TransferKind,
    grid_only_bill_micro,
    settle,
)
from market.units import amount_micro
from tests.market.strategies import books
from tests.refusals import refused

TARIFF = Tariff(
    retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000, grid_fee_micro_per_kwh=10_000
)


def test_worked_example_without_netting() -> None:
    book = [
        Order("b", "buyer", Side.BUY, 1, (Step(200_000, 800),)),
        Order("s", "seller", Side.SELL, 1, (Step(100_000, 800),)),
    ]
    trades = clear(book, slot=1).trades  # 800 Wh at 150 000 µ¤/kWh = 120 000 µ¤
    s = settle(1, trades, {"buyer": -1000, "seller": 1000}, TARIFF)
    buyer, seller = s.bill("buyer"), s.bill("seller")
    # buyer: 120 000 to seller + 8 000 fee + 200 Wh short at retail (60 000)
    assert (buyer.imbalance_wh, buyer.grid_import_wh, buyer.bill_micro) == (-200, 200, 188_000)
    assert buyer.grid_only_bill_micro == 300_000
    assert buyer.savings_micro == 112_000
    # seller: receives 120 000 + 200 Wh long at feed-in (16 000)
    assert (seller.imbalance_wh, seller.grid_export_wh, seller.bill_micro) == (200, 200, -136_000)
    assert seller.grid_only_bill_micro == -80_000
    assert s.grid_net_micro == 8_000 + 60_000 - 16_000


def test_community_netting_covers_shortfalls_first() -> None:
    # no trades at all: 300 Wh short at A, 100 Wh long at B and C
    s = settle(1, [], {"A": -300, "B": 100, "C": 100}, TARIFF, netting=Netting.COMMUNITY)
    price = TARIFF.netting_price_micro_per_kwh  # 190 000
    assert s.bill("A").netted_wh == 200
    assert s.bill("A").grid_import_wh == 100
    assert s.bill("A").bill_micro == amount_micro(200, price) + amount_micro(100, 300_000)
    assert s.bill("B").bill_micro == s.bill("C").bill_micro == -amount_micro(100, price)
    pool = [t for t in s.transfers if POOL in (t.payer, t.payee)]
    assert sum(t.amount_micro for t in pool if t.payee == POOL) == sum(
        t.amount_micro for t in pool if t.payer == POOL
    )


def test_households_without_trades_pay_grid_only() -> None:
    s = settle(4, [], {"a": -1234, "b": 567}, TARIFF)
    for h, net in (("a", -1234), ("b", 567)):
        assert (
            s.bill(h).bill_micro
            == s.bill(h).grid_only_bill_micro
            == grid_only_bill_micro(net, TARIFF)
        )
        assert s.bill(h).savings_micro == 0


def test_bad_input() -> None:
    book = [
        Order("b", "x", Side.BUY, 1, (Step(200, 8),)),
        Order("s", "y", Side.SELL, 1, (Step(100, 8),)),
    ]
    with refused(OrderReason.MISSING_READING):
        settle(1, clear(book, slot=1).trades, {"x": 0}, TARIFF)
    with refused(OrderReason.RESERVED_NAME):
        settle(1, [], {GRID: 0}, TARIFF)
    with pytest.raises(UsageError, match="feed-in"):
        Tariff(retail_micro_per_kwh=1, feed_in_micro_per_kwh=2)
    with pytest.raises(UsageError, match="grid_fee"):
        Tariff(retail_micro_per_kwh=1, feed_in_micro_per_kwh=0, grid_fee_micro_per_kwh=-1)


@settings(max_examples=300)
@given(
    book=books(prices=(80_000, 120_000, 150_000, 200_000, 300_000), max_energy=2000),
    rule=st.sampled_from(list(Rule)),
    netting=st.sampled_from(list(Netting)),
    readings=st.dictionaries(
        st.sampled_from(["h1", "h2", "h3", "h4", "h5"]), st.integers(-5000, 5000)
    ),
    fee=st.integers(0, 50_000),
)
def test_conservation_and_exact_savings(
    book: list[Order], rule: Rule, netting: Netting, readings: dict[str, int], fee: int
) -> None:
    tariff = Tariff(
        retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000, grid_fee_micro_per_kwh=fee
    )
    trades = clear(book, slot=7, rule=rule).trades
    meters = {h: readings.get(h, 0) for h in ("h1", "h2", "h3", "h4")} | readings
    s = settle(7, trades, meters, tariff, netting=netting)  # settle() itself runs check_settlement
    money: dict[str, int] = {}
    for t in s.transfers:
        money[t.payer] = money.get(t.payer, 0) - t.amount_micro
        money[t.payee] = money.get(t.payee, 0) + t.amount_micro
    assert sum(money.values()) == 0
    assert money.get(POOL, 0) == 0
    assert (
        sum(b.bought_p2p_wh for b in s.bills)
        == sum(b.sold_p2p_wh for b in s.bills)
        == sum(t.energy_wh for t in trades)
    )
    for b in s.bills:
        assert b.bill_micro == -money.get(b.household, 0)
        assert b.savings_micro == b.grid_only_bill_micro - b.bill_micro
        # energy balance at the meter: P2P + netting + grid explains the measurement exactly
        assert (
            b.measured_net_wh
            == b.sold_p2p_wh - b.bought_p2p_wh + b.grid_export_wh - b.grid_import_wh - b.netted_wh
        )
    if netting is Netting.NONE:
        assert all(t.kind is not TransferKind.NETTING for t in s.transfers)
