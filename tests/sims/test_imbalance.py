"""The imbalance KPIs of an in-process run: sums agree, a recomputation from the trades and the
meters agrees, and what perfect foresight changes about them."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from market.clearing import Trade
from market.settlement import (
    HouseholdBill,
    Netting,
    imbalance_cost_micro,
    imbalance_energy_wh,
    settle,
)
from market.units import amount_micro
from sims.inproc import _Engine, run_inproc
from sims.results import SimResult
from sims.scenario import Scenario
from tests.sims.test_inproc import _daytime

Run = tuple[Scenario, SimResult, list[dict[str, Any]]]


def _run(policy: str) -> Run:
    sc = _daytime(policy=policy)
    trades: list[dict[str, Any]] = []
    return sc, run_inproc(sc, trades_out=trades), trades


@pytest.fixture(scope="module")
def forecast() -> Run:
    return _run("forecast")


@pytest.fixture(scope="module")
def foresight() -> Run:
    return _run("perfect-foresight")


def _bills(
    sc: Scenario, r: SimResult, trades: list[dict[str, Any]]
) -> list[tuple[int, HouseholdBill]]:
    """``(slot, bill)`` of every traded household-slot, settled afresh from the run's trades and the
    households' meters (no batteries here, so the signed reading is the natural net)."""
    e = _Engine(sc)
    assert e.first_slot == r.slots[0].slot and not any(s.battery_kwh for s in e.specs)
    by_slot: dict[int, list[Trade]] = defaultdict(list)
    for t in trades:
        by_slot[t["slot"]].append(
            Trade(t["buyer"], t["seller"], "", "", t["energy_wh"], t["price_micro_per_kwh"],
                  t["amount_micro"])
        )  # fmt: skip
    out = []
    for rec in r.slots:
        net, _pv, _load = e.slot_energy(rec.slot)
        meters = {k.public_hex: int(net[i]) for i, k in enumerate(e.hh_keys)}
        s = settle(rec.slot, by_slot[rec.slot], meters, e.genesis.tariff, netting=e.genesis.netting)
        out.extend((rec.slot, b) for b in s.bills if b.bought_p2p_wh or b.sold_p2p_wh)
    return out


def test_community_imbalance_is_the_sum_over_households_and_over_slots(forecast: Run) -> None:
    _sc, r, _trades = forecast
    c = r.community()
    assert c["imbalance_wh"] == sum(h.imbalance_wh for h in r.households)
    assert c["imbalance_wh"] == sum(s.imbalance_wh for s in r.slots)
    assert c["imbalance_cost_micro"] == sum(h.imbalance_cost_micro for h in r.households)
    assert c["imbalance_cost_micro"] == sum(s.imbalance_cost_micro for s in r.slots)
    # present and not trivially zero: forecast bidding misses its contracts
    assert c["imbalance_wh"] > 0 and c["imbalance_cost_micro"] > 0
    # a slot without trades has no imbalance (its households are plain grid customers)
    assert all(s.imbalance_wh == s.imbalance_cost_micro == 0 for s in r.slots if not s.trades)
    assert any(s.trades for s in r.slots)


def test_the_kpis_match_a_recomputation_from_the_trades_and_the_meters(forecast: Run) -> None:
    sc, r, trades = forecast
    assert sc.netting is Netting.NONE and sc.rule.value == "pay-as-clear"
    price = {s.slot: s.clearing_price_micro_per_kwh for s in r.slots}
    assert all(t["price_micro_per_kwh"] == price[t["slot"]] for t in trades)  # uniform price
    per_hh: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_slot: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for slot, b in _bills(sc, r, trades):
        p = price[slot]
        assert p is not None
        # without netting, by hand: the grid's price of the imbalance minus the market's
        short, long_ = max(-b.imbalance_wh, 0), max(b.imbalance_wh, 0)
        by_hand = (
            amount_micro(short, sc.retail_micro_per_kwh)
            - amount_micro(short, p)
            + amount_micro(long_, p)
            - amount_micro(long_, sc.feed_in_micro_per_kwh)
        )
        assert imbalance_cost_micro(b, p) == by_hand
        assert imbalance_energy_wh(b) == abs(b.imbalance_wh)
        for acc in (per_hh[b.household], per_slot[slot]):
            acc[0] += abs(b.imbalance_wh)
            acc[1] += by_hand
    assert {h.household: [h.imbalance_wh, h.imbalance_cost_micro] for h in r.households} == {
        h.household: per_hh.get(h.household, [0, 0]) for h in r.households
    }
    assert {s.slot: [s.imbalance_wh, s.imbalance_cost_micro] for s in r.slots} == {
        s.slot: per_slot.get(s.slot, [0, 0]) for s in r.slots
    }


def _over_contracted_wh(bills: list[tuple[int, HouseholdBill]]) -> int:
    """Energy contracted beyond what the household had: a seller short or a buyer long."""
    return sum(
        max(b.sold_p2p_wh - b.bought_p2p_wh - b.measured_net_wh, 0)
        if b.sold_p2p_wh > b.bought_p2p_wh
        else max(b.measured_net_wh - (b.sold_p2p_wh - b.bought_p2p_wh), 0)
        for _slot, b in bills
    )


def test_perfect_foresight_never_over_contracts_forecast_bidding_does(
    forecast: Run, foresight: Run
) -> None:
    """Perfect foresight quotes exactly the measured net, so its only imbalance is the part of its
    quote the market did not fill: a seller is never short, a buyer never long. That residual is
    not zero (the quotes of the two sides rarely match), so its imbalance energy is smaller than
    forecast bidding's but far from zero; forecast bidding also sells energy it then lacks."""
    fb, pb = _bills(*forecast), _bills(*foresight)
    for _slot, b in pb:
        contracted = b.sold_p2p_wh - b.bought_p2p_wh
        assert contracted != 0 and (b.measured_net_wh > 0) == (contracted > 0)
        if contracted > 0:
            assert b.imbalance_wh >= 0  # sold at most what it fed in
        else:
            assert b.imbalance_wh <= 0  # bought at most what it used
    assert _over_contracted_wh(pb) == 0
    assert _over_contracted_wh(fb) > 0
    f, p = forecast[1].community(), foresight[1].community()
    assert 0 < p["imbalance_wh"] < f["imbalance_wh"]
    assert 0 < p["imbalance_cost_micro"] < f["imbalance_cost_micro"]
    # the imbalance cost is part of the bill: less of it goes with more savings here
    assert p["savings_micro"] > f["savings_micro"]
