"""Clearing: worked examples, edge cases, and properties against a brute-force oracle."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import ClearingResult, Rule, clear
from market.errors import OrderReason
from market.orders import Order, Side, Step
from market.units import amount_micro
from tests.market.strategies import books
from tests.refusals import refused


def o(
    oid: str, side: Side, *steps: tuple[int, int], household: str | None = None, slot: int = 7
) -> Order:
    return Order(oid, household or f"h-{oid}", side, slot, tuple(Step(p, e) for p, e in steps))


B, S = Side.BUY, Side.SELL


# ---------------------------------------------------------------- the oracle


def units(book: list[Order], side: Side) -> list[int]:
    """One entry per Wh: its limit price."""
    return [
        s.price_micro_per_kwh
        for x in book
        if x.side is side
        for s in x.steps
        for _ in range(s.energy_wh)
    ]


def oracle_volume(book: list[Order]) -> int:
    """max over candidate prices p of min(demand at p, supply at p), counted unit by unit."""
    buys, sells = units(book, B), units(book, S)
    prices = set(buys) | set(sells)
    return max(
        (min(sum(b >= p for b in buys), sum(s <= p for s in sells)) for p in prices), default=0
    )


def oracle_welfare(book: list[Order]) -> int:
    """max over k of (k best bids - k best asks), in µ¤ (floor of the sum / 1000)."""
    buys = sorted(units(book, B), reverse=True)
    sells = sorted(units(book, S))
    best = 0
    for k in range(min(len(buys), len(sells)) + 1):
        best = max(best, sum(buys[:k]) - sum(sells[:k]))
    return best // 1000


def filled(result: ClearingResult) -> dict[str, int]:
    return result.filled_wh()


# ---------------------------------------------------------------- examples


def test_worked_example_pay_as_clear() -> None:
    book = [
        o("b1", B, (300, 1000), (200, 500)),
        o("s1", S, (100, 800)),
        o("s2", S, (250, 800)),
    ]
    r = clear(book, slot=7)
    # demand 1000@300 then 500@200; supply 800@100 then 800@250: 1000 Wh cross;
    # b_m=300, s_m=250, b_u=200, s_u=250 -> interval [250, 250]
    assert r.volume_wh == 1000
    assert r.clearing_price_micro_per_kwh == 250
    assert [(t.sell_order, t.energy_wh, t.amount_micro) for t in r.trades] == [
        ("s1", 800, 200),
        ("s2", 200, 50),
    ]
    assert r.welfare_micro == (1000 * 300 - 800 * 100 - 200 * 250) // 1000


def test_price_is_midpoint_of_crossing_interval() -> None:
    r = clear([o("b", B, (300_000, 500)), o("s", S, (100_000, 500))], slot=7)
    assert r.clearing_price_micro_per_kwh == 200_000
    assert r.trades[0].amount_micro == amount_micro(500, 200_000) == 100_000


def test_pay_as_bid_prices_each_pair_at_its_midpoint() -> None:
    book = [o("b1", B, (300, 1000)), o("s1", S, (100, 800)), o("s2", S, (250, 800))]
    r = clear(book, slot=7, rule=Rule.PAY_AS_BID)
    assert r.clearing_price_micro_per_kwh is None
    assert [(t.sell_order, t.price_micro_per_kwh) for t in r.trades] == [("s1", 200), ("s2", 275)]


def test_pro_rata_at_the_margin_with_largest_remainder() -> None:
    # 10 Wh of supply at one price shared by three equal bids of 5 Wh at the marginal price
    book = [o("s", S, (100, 10)), o("x", B, (200, 5)), o("y", B, (200, 5)), o("z", B, (200, 5))]
    r = clear(book, slot=7)
    f = filled(r)
    assert (f["x"], f["y"], f["z"]) == (4, 3, 3)  # 10/3 each, the leftover Wh to the first id
    assert r.volume_wh == 10


def test_pro_rata_is_proportional_to_size() -> None:
    book = [o("s", S, (100, 30)), o("big", B, (200, 40)), o("small", B, (200, 20))]
    f = filled(clear(book, slot=7))
    assert (f["big"], f["small"]) == (20, 10)


def test_better_priced_steps_fill_first() -> None:
    book = [o("s", S, (100, 10)), o("hi", B, (300, 8)), o("lo", B, (200, 8))]
    f = filled(clear(book, slot=7))
    assert (f["hi"], f["lo"]) == (8, 2)


@pytest.mark.parametrize(
    "book",
    [
        [],
        [o("b", B, (300, 10))],
        [o("s", S, (300, 10))],
        [o("b", B, (100, 10)), o("s", S, (101, 10))],
    ],
    ids=["empty", "buy-only", "sell-only", "no-crossing"],
)
def test_books_that_clear_nothing(book: list[Order]) -> None:
    for rule in Rule:
        r = clear(book, slot=7, rule=rule)
        assert (r.volume_wh, r.clearing_price_micro_per_kwh, len(r.trades), r.welfare_micro) == (
            0,
            None,
            0,
            0,
        )


def test_all_at_the_same_price() -> None:
    book = [o(f"b{i}", B, (150, 7)) for i in range(5)] + [o(f"s{i}", S, (150, 4)) for i in range(4)]
    r = clear(book, slot=7)
    assert r.volume_wh == 16
    assert r.clearing_price_micro_per_kwh == 150
    assert r.welfare_micro == 0
    assert sorted(v for k, v in filled(r).items() if k.startswith("b")) == [3, 3, 3, 3, 4]


def test_huge_quantities_are_exact() -> None:
    big = 10**12
    book = [o("b", B, (10**12, big), (10**12 - 1, big)), o("s", S, (1, big), (2, big // 3))]
    r = clear(book, slot=7)
    assert r.volume_wh == big + big // 3
    assert sum(t.amount_micro for t in r.trades) == sum(
        amount_micro(t.energy_wh, t.price_micro_per_kwh) for t in r.trades
    )
    assert r.welfare_micro == oracle_welfare_big(book)


def oracle_welfare_big(book: list[Order]) -> int:
    # too big for unit expansion: the two-step curves cross fully, so welfare is a direct sum
    return (10**12 * 10**12 + (10**12 - 1) * (10**12 // 3) - 1 * 10**12 - 2 * (10**12 // 3)) // 1000


def test_many_tiny_steps() -> None:
    rng = random.Random(3)
    book = [
        o(f"o{i}", rng.choice([B, S]), *[(rng.randint(90, 110), 1) for _ in range(16)])
        for i in range(200)
    ]
    r = clear(book, slot=7)
    assert r.volume_wh == oracle_volume(book)


def test_rejects_duplicate_ids_and_wrong_slot() -> None:
    with refused(OrderReason.DUPLICATE_ID):
        clear([o("a", B, (1, 1)), o("a", S, (1, 1))], slot=7)
    with refused(OrderReason.WRONG_SLOT):
        clear([o("a", B, (1, 1), slot=8)], slot=7)


# ---------------------------------------------------------------- properties


@settings(max_examples=300)
@given(book=books(), rule=st.sampled_from(list(Rule)))
def test_volume_and_welfare_match_the_oracle(book: list[Order], rule: Rule) -> None:
    r = clear(book, slot=7, rule=rule)
    assert r.volume_wh == oracle_volume(book)
    assert r.welfare_micro == oracle_welfare(book)


@settings(max_examples=300)
@given(book=books(), rule=st.sampled_from(list(Rule)))
def test_conservation_and_offer_limits(book: list[Order], rule: Rule) -> None:
    r = clear(book, slot=7, rule=rule)
    by_id = {x.order_id: x for x in book}
    assert sum(t.energy_wh for t in r.trades) == r.volume_wh
    for oid, e in filled(r).items():
        assert 0 < e <= by_id[oid].energy_wh  # nobody buys or sells more than it offered
    for t in r.trades:
        assert by_id[t.buy_order].side is B and by_id[t.sell_order].side is S
        assert (t.buyer, t.seller) == (by_id[t.buy_order].household, by_id[t.sell_order].household)
        assert t.amount_micro == amount_micro(t.energy_wh, t.price_micro_per_kwh)


@settings(max_examples=300)
@given(book=books())
def test_uniform_price_is_a_competitive_equilibrium(book: list[Order]) -> None:
    r = clear(book, slot=7)
    p = r.clearing_price_micro_per_kwh
    if p is None:
        return
    demand_above = sum(
        s.energy_wh for x in book if x.side is B for s in x.steps if s.price_micro_per_kwh > p
    )
    demand_at = sum(
        s.energy_wh for x in book if x.side is B for s in x.steps if s.price_micro_per_kwh >= p
    )
    supply_below = sum(
        s.energy_wh for x in book if x.side is S for s in x.steps if s.price_micro_per_kwh < p
    )
    supply_at = sum(
        s.energy_wh for x in book if x.side is S for s in x.steps if s.price_micro_per_kwh <= p
    )
    # everyone strictly in the money is served in full; nobody trades outside their limit
    assert demand_above <= r.volume_wh <= demand_at
    assert supply_below <= r.volume_wh <= supply_at
    f = filled(r)
    for x in book:
        willing = sum(
            s.energy_wh
            for s in x.steps
            if (s.price_micro_per_kwh >= p if x.side is B else s.price_micro_per_kwh <= p)
        )
        assert f.get(x.order_id, 0) <= willing


@settings(max_examples=300)
@given(book=books())
def test_pay_as_bid_prices_lie_within_the_pair_limits(book: list[Order]) -> None:
    r = clear(book, slot=7, rule=Rule.PAY_AS_BID)
    by_id = {x.order_id: x for x in book}
    for t in r.trades:
        highest_bid = max(s.price_micro_per_kwh for s in by_id[t.buy_order].steps)
        lowest_ask = min(s.price_micro_per_kwh for s in by_id[t.sell_order].steps)
        assert lowest_ask <= t.price_micro_per_kwh <= highest_bid


@settings(max_examples=200)
@given(book=books(max_orders=8), rule=st.sampled_from(list(Rule)), seed=st.integers(0, 2**32))
def test_deterministic_under_permutation(book: list[Order], rule: Rule, seed: int) -> None:
    shuffled = list(book)
    random.Random(seed).shuffle(shuffled)
    assert clear(shuffled, slot=7, rule=rule) == clear(book, slot=7, rule=rule)
