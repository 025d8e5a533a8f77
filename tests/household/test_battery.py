"""The battery model: properties of one-slot dispatch (Hypothesis) and a few worked examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.household.battery import (
    Battery,
    Dispatch,
    battery_from_sizes,
    contract_wh,
    contracts_wh,
    dispatch,
)
from market.clearing import Trade
from market.errors import UsageError

SLOT_S = st.sampled_from([60, 300, 900, 3600])
ENERGY = st.integers(-3_000, 3_000) | st.integers(-50_000, 50_000)


@st.composite
def batteries_and_soc(draw: st.DrawFn) -> tuple[Battery, int]:
    capacity = draw(st.integers(0, 30_000))
    battery = Battery(
        capacity_wh=capacity,
        power_w=draw(st.integers(0, 20_000)),
        charge_permille=draw(st.integers(1, 1000)),
        discharge_permille=draw(st.integers(1, 1000)),
        reserve_wh=draw(st.integers(0, capacity)),
    )
    return battery, draw(st.integers(0, capacity))


@settings(max_examples=500)
@given(batteries_and_soc(), ENERGY, ENERGY, SLOT_S)
def test_dispatch_obeys_every_limit_and_conserves_energy(
    b_soc: tuple[Battery, int], gap: int, contract: int, slot_s: int
) -> None:
    b, soc = b_soc
    natural = contract + gap
    d = dispatch(b, soc_wh=soc, natural_net_wh=natural, contract_wh=contract, slot_seconds=slot_s)
    # SoC stays in [0, capacity]; never discharged below the reserve (if it started above it)
    assert 0 <= d.soc_wh <= b.capacity_wh
    if soc >= b.reserve_wh:
        assert d.soc_wh >= b.reserve_wh
    else:
        assert d.discharged_wh == 0 and d.soc_wh >= soc
    # the power limit, AC side; only one direction per slot
    limit = b.power_w * slot_s // 3600
    assert 0 <= d.charged_wh <= limit and 0 <= d.discharged_wh <= limit
    assert d.charged_wh == 0 or d.discharged_wh == 0
    # conservation at the meter, exactly, and inside the battery with non-negative losses
    assert d.metered_net_wh == natural - d.charged_wh + d.discharged_wh
    assert d.loss_wh >= 0
    assert d.soc_wh - soc == d.charged_wh - d.discharged_wh - d.loss_wh
    # the stored / drawn energy follow the documented rounding (against the battery)
    if d.charged_wh:
        assert d.soc_wh - soc == d.charged_wh * b.charge_permille // 1000
    if d.discharged_wh:
        assert soc - d.soc_wh == -(-d.discharged_wh * 1000 // b.discharge_permille)
    # never worse than no battery, never past the contract
    before, after = natural - contract, d.metered_net_wh - contract
    assert abs(after) <= abs(before)
    assert after * before >= 0


@given(st.integers(0, 20_000), ENERGY, ENERGY, SLOT_S, st.integers(1, 1000))
def test_a_battery_with_no_capacity_or_no_power_is_the_identity(
    power: int, natural: int, contract: int, slot_s: int, eta: int
) -> None:
    for b in (
        Battery(capacity_wh=0, power_w=power, charge_permille=eta, discharge_permille=eta),
        Battery(capacity_wh=10_000, power_w=0, charge_permille=eta, discharge_permille=eta),
    ):
        soc = b.capacity_wh // 2
        d = dispatch(
            b, soc_wh=soc, natural_net_wh=natural, contract_wh=contract, slot_seconds=slot_s
        )
        assert d == Dispatch(natural, 0, 0, soc, 0)


@given(batteries_and_soc(), ENERGY, SLOT_S)
def test_on_contract_the_battery_idles(b_soc: tuple[Battery, int], net: int, slot_s: int) -> None:
    b, soc = b_soc
    d = dispatch(b, soc_wh=soc, natural_net_wh=net, contract_wh=net, slot_seconds=slot_s)
    assert d == Dispatch(net, 0, 0, soc, 0)


@given(ENERGY, SLOT_S)
def test_a_big_lossless_battery_meets_any_contract(gap: int, slot_s: int) -> None:
    b = Battery(
        capacity_wh=200_000, power_w=3_600_000, charge_permille=1000, discharge_permille=1000
    )
    d = dispatch(b, soc_wh=100_000, natural_net_wh=gap, contract_wh=0, slot_seconds=slot_s)
    assert d.metered_net_wh == 0 and d.loss_wh == 0


def test_worked_examples() -> None:
    b = Battery(capacity_wh=10_000, power_w=4_000, reserve_wh=1_000)  # 950 ‰ each way
    # 1,500 Wh surplus, nothing sold: all of it is charged (within 1,000 Wh/15 min? no: 4 kW → 1 kWh)
    d = dispatch(b, soc_wh=5_000, natural_net_wh=1_500, contract_wh=0, slot_seconds=900)
    assert d == Dispatch(metered_net_wh=500, charged_wh=1_000, discharged_wh=0, soc_wh=5_950,
                         loss_wh=50)  # fmt: skip
    # sold 800 Wh but only 300 Wh surplus: 500 Wh discharged, 527 Wh (ceil 500/0.95) drawn
    d = dispatch(b, soc_wh=5_000, natural_net_wh=300, contract_wh=800, slot_seconds=900)
    assert d == Dispatch(metered_net_wh=800, charged_wh=0, discharged_wh=500, soc_wh=4_473,
                         loss_wh=27)  # fmt: skip
    # a shortfall with the battery near its reserve: only what lies above it (100 Wh → 95 Wh)
    d = dispatch(b, soc_wh=1_100, natural_net_wh=-700, contract_wh=0, slot_seconds=900)
    assert d.discharged_wh == 95 and d.soc_wh == 1_000 and d.metered_net_wh == -605
    # nearly full: 10 Wh of room stores 10 Wh from 11 Wh AC (the least that stores 10)
    d = dispatch(b, soc_wh=9_990, natural_net_wh=2_000, contract_wh=0, slot_seconds=900)
    assert (d.charged_wh, d.soc_wh, d.loss_wh) == (11, 10_000, 1)
    # bought 1,000 Wh while needing 400: the extra 600 Wh are stored (570 Wh after losses)
    d = dispatch(b, soc_wh=5_000, natural_net_wh=-400, contract_wh=-1_000, slot_seconds=900)
    assert d == Dispatch(metered_net_wh=-1_000, charged_wh=600, discharged_wh=0, soc_wh=5_570,
                         loss_wh=30)  # fmt: skip
    # a 1 Wh surplus at 950 ‰ would store nothing: it is not charged at all
    d = dispatch(b, soc_wh=5_000, natural_net_wh=1, contract_wh=0, slot_seconds=900)
    assert d == Dispatch(1, 0, 0, 5_000, 0)


def test_misuse_is_refused() -> None:
    with pytest.raises(UsageError, match="reserve_wh"):
        Battery(capacity_wh=100, power_w=10, reserve_wh=101)
    with pytest.raises(UsageError, match="charge_permille"):
        Battery(capacity_wh=100, power_w=10, charge_permille=0)
    with pytest.raises(UsageError, match="capacity_wh and power_w"):
        Battery(capacity_wh=-1, power_w=10)
    b = Battery(capacity_wh=100, power_w=10)
    with pytest.raises(UsageError, match="soc_wh"):
        dispatch(b, soc_wh=101, natural_net_wh=0, contract_wh=0, slot_seconds=900)
    with pytest.raises(UsageError, match="slot_seconds"):
        dispatch(b, soc_wh=0, natural_net_wh=0, contract_wh=0, slot_seconds=0)


def test_the_contract_is_sold_minus_bought() -> None:
    def trade(buyer: str, seller: str, energy_wh: int) -> Trade:
        return Trade(buyer, seller, f"b-{buyer}", f"s-{seller}", energy_wh, 100_000, 0)

    trades = [trade("a", "b", 300), trade("c", "b", 200), trade("b", "d", 50), trade("a", "d", 7)]
    assert contract_wh(trades, "b") == 300 + 200 - 50
    assert contract_wh(trades, "a") == -307
    assert contract_wh(trades, "d") == 57
    assert contract_wh(trades, "x") == 0 and contract_wh([], "a") == 0
    assert contracts_wh(trades) == {h: contract_wh(trades, h) for h in "abcd"}


def test_sizes_in_kwh_and_kw_become_a_battery_or_none() -> None:
    assert battery_from_sizes(5.0, 2.5) == Battery(capacity_wh=5_000, power_w=2_500)
    assert battery_from_sizes(0.0, 2.5) is None and battery_from_sizes(0.0004, 1.0) is None
    b = Battery(capacity_wh=1_000, power_w=1_000)
    assert (b.stored_wh(1_000), b.drawn_wh(950), b.drawn_wh(951)) == (950, 1_000, 1_002)
