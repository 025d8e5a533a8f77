"""Imbalance energy and cost (a KPI over a settled slot): worked examples and exact properties."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import Rule, Trade, clear
from market.errors import UsageError
from market.orders import Order, Side, Step
from market.settlement import (
    Netting,
    Tariff,
    imbalance_cost_micro,
    imbalance_energy_wh,
    imbalance_reference_price_micro_per_kwh,
    settle,
)
from market.units import amount_micro
from tests.market.strategies import books

RETAIL, FEED_IN = 300_000, 80_000
PRICES = (80_000, 120_000, 150_000, 200_000, 300_000)  # every limit within [feed-in, retail]
HOUSEHOLDS = ("h1", "h2", "h3", "h4")


def _tariff(fee: int = 0) -> Tariff:
    return Tariff(
        retail_micro_per_kwh=RETAIL, feed_in_micro_per_kwh=FEED_IN, grid_fee_micro_per_kwh=fee
    )


def _contracted(trades: list[Trade]) -> dict[str, int]:
    out = dict.fromkeys(HOUSEHOLDS, 0)
    for t in trades:
        out[t.seller] += t.energy_wh
        out[t.buyer] -= t.energy_wh
    return out


def test_worked_example() -> None:
    book = [
        Order("b", "buyer", Side.BUY, 1, (Step(200_000, 800),)),
        Order("s", "seller", Side.SELL, 1, (Step(100_000, 800),)),
    ]
    result = clear(book, slot=1)  # 800 Wh at 150 000 µ¤/kWh
    p = imbalance_reference_price_micro_per_kwh(result.trades, result.clearing_price_micro_per_kwh)
    assert p == 150_000
    s = settle(1, result.trades, {"buyer": -1000, "seller": 600, "idle": -500}, _tariff())
    buyer, seller, idle = s.bill("buyer"), s.bill("seller"), s.bill("idle")
    # buyer 200 Wh short: bought at retail (60 000) instead of at the market (30 000)
    assert imbalance_energy_wh(buyer) == 200
    assert imbalance_cost_micro(buyer, p) == 60_000 - 30_000
    # seller 200 Wh short too: it delivered less than it sold and the grid covered it at retail
    assert imbalance_energy_wh(seller) == 200
    assert imbalance_cost_micro(seller, p) == 30_000
    # a household that did not trade is a grid customer, not in imbalance
    assert idle.imbalance_wh == -500
    assert imbalance_energy_wh(idle) == 0 and imbalance_cost_micro(idle, p) == 0
    assert imbalance_cost_micro(idle, None) == 0


def test_a_long_seller_loses_the_spread_between_the_market_and_feed_in() -> None:
    book = [
        Order("b", "buyer", Side.BUY, 1, (Step(200_000, 500),)),
        Order("s", "seller", Side.SELL, 1, (Step(100_000, 500),)),
    ]
    trades = clear(book, slot=1).trades
    s = settle(1, trades, {"buyer": -500, "seller": 900}, _tariff())
    seller = s.bill("seller")
    assert imbalance_energy_wh(seller) == 400
    assert imbalance_cost_micro(seller, 150_000) == amount_micro(400, 150_000) - amount_micro(
        400, FEED_IN
    )


def test_a_trader_needs_a_reference_price() -> None:
    book = [
        Order("b", "buyer", Side.BUY, 1, (Step(200_000, 500),)),
        Order("s", "seller", Side.SELL, 1, (Step(100_000, 500),)),
    ]
    s = settle(1, clear(book, slot=1).trades, {"buyer": -400, "seller": 500}, _tariff())
    with pytest.raises(UsageError, match="reference price"):
        imbalance_cost_micro(s.bill("buyer"), None)


def test_reference_price_under_pay_as_bid_is_the_volume_weighted_mean_rounded_half_up() -> None:
    def trade(energy_wh: int, price: int) -> Trade:
        return Trade("b", "s", "bo", "so", energy_wh, price, amount_micro(energy_wh, price))

    assert imbalance_reference_price_micro_per_kwh([], None) is None
    assert imbalance_reference_price_micro_per_kwh([trade(1, 100), trade(1, 101)], None) == 101
    assert imbalance_reference_price_micro_per_kwh([trade(2, 100), trade(1, 101)], None) == 100
    assert imbalance_reference_price_micro_per_kwh([trade(1, 100)], 250) == 250


@settings(max_examples=300)
@given(book=books(prices=PRICES, max_energy=2000), rule=st.sampled_from(list(Rule)))
def test_reference_price_is_the_clearing_price_or_the_exact_mean(
    book: list[Order], rule: Rule
) -> None:
    result = clear(book, slot=7, rule=rule)
    p = imbalance_reference_price_micro_per_kwh(result.trades, result.clearing_price_micro_per_kwh)
    if not result.trades:
        assert p is None
        return
    assert p is not None
    mean = Fraction(
        sum(t.energy_wh * t.price_micro_per_kwh for t in result.trades),
        sum(t.energy_wh for t in result.trades),
    )
    assert p - Fraction(1, 2) <= mean < p + Fraction(1, 2)  # half up
    assert min(t.price_micro_per_kwh for t in result.trades) <= p
    assert p <= max(t.price_micro_per_kwh for t in result.trades)
    if rule is Rule.PAY_AS_CLEAR:
        assert p == result.clearing_price_micro_per_kwh == mean


@settings(max_examples=300)
@given(
    book=books(prices=PRICES, max_energy=2000),
    rule=st.sampled_from(list(Rule)),
    netting=st.sampled_from(list(Netting)),
    deviation=st.dictionaries(st.sampled_from(HOUSEHOLDS), st.integers(-3000, 3000)),
    fee=st.integers(0, 50_000),
)
def test_imbalance_cost_properties(
    book: list[Order], rule: Rule, netting: Netting, deviation: dict[str, int], fee: int
) -> None:
    result = clear(book, slot=7, rule=rule)
    trades = list(result.trades)
    p = imbalance_reference_price_micro_per_kwh(trades, result.clearing_price_micro_per_kwh)
    contracted = _contracted(trades)
    meters = {h: contracted[h] + deviation.get(h, 0) for h in HOUSEHOLDS}
    s = settle(7, trades, meters, _tariff(fee), netting=netting)
    exact = settle(7, trades, contracted, _tariff(fee), netting=netting)
    for b, e in zip(s.bills, exact.bills, strict=True):
        energy, cost = imbalance_energy_wh(b), imbalance_cost_micro(b, p)
        assert type(energy) is int and type(cost) is int
        # measured = contracted: no imbalance energy, no cost
        assert imbalance_energy_wh(e) == 0 and imbalance_cost_micro(e, p) == 0
        traded = b.bought_p2p_wh > 0 or b.sold_p2p_wh > 0
        if not traded:  # not in imbalance, whatever its meter says
            assert energy == 0 and cost == 0
            continue
        assert p is not None
        assert energy == abs(deviation.get(b.household, 0)) == abs(b.imbalance_wh)
        short, long_ = max(-b.imbalance_wh, 0), max(b.imbalance_wh, 0)
        # the bill splits exactly into the P2P money, the imbalance at market value and its cost
        assert b.bill_micro == (
            b.paid_p2p_micro
            - b.received_p2p_micro
            + b.grid_fee_micro
            + amount_micro(short, p)
            - amount_micro(long_, p)
            + cost
        )
        if netting is Netting.NONE:
            # the grid is the only counterparty: short pays the retail spread, long loses the
            # feed-in spread; both >= 0 because every trade price lies in [feed-in, retail]
            if short:
                assert cost == amount_micro(short, RETAIL) - amount_micro(short, p) >= 0
            if long_:
                assert cost == amount_micro(long_, p) - amount_micro(long_, FEED_IN) >= 0
        if b.netted_wh == 0:
            # settled with the grid alone: the cost never exceeds the retail/feed-in spread
            assert 0 <= cost <= amount_micro(energy, RETAIL - FEED_IN) + 1


@settings(max_examples=200)
@given(
    short=st.integers(1, 10_000),
    p=st.integers(FEED_IN, RETAIL),
    q=st.integers(FEED_IN, RETAIL),
)
def test_a_higher_market_price_makes_a_shortfall_cheaper_and_an_excess_dearer(
    short: int, p: int, q: int
) -> None:
    lo, hi = min(p, q), max(p, q)
    book = [
        Order("b", "buyer", Side.BUY, 1, (Step(RETAIL, 10_000),)),
        Order("s", "seller", Side.SELL, 1, (Step(FEED_IN, 10_000),)),
    ]
    trades = clear(book, slot=1).trades
    s = settle(1, trades, {"buyer": -10_000 - short, "seller": 10_000 + short}, _tariff())
    buyer, seller = s.bill("buyer"), s.bill("seller")
    assert imbalance_cost_micro(buyer, hi) <= imbalance_cost_micro(buyer, lo)
    assert imbalance_cost_micro(seller, hi) >= imbalance_cost_micro(seller, lo)
    # at retail a shortfall costs nothing extra, at feed-in an excess costs nothing extra
    assert imbalance_cost_micro(buyer, RETAIL) == 0
    assert imbalance_cost_micro(seller, FEED_IN) == 0
