"""The bidding policy: documented invariants as properties, and planning from real history."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.models import QuantileRegression
from forecasting.policy import (
    BatteryState,
    PolicyConfig,
    SlotQuantiles,
    median_only_order,
    order_id,
    plan_orders,
    quote_slot,
)
from forecasting.series import MeterHistory
from market.errors import UsageError
from market.orders import OrderLimits, Side, validate_order
from market.slots import SlotClock
from tests.forecasting.conftest import local_midnight_utc


@st.composite
def quantiles(draw: st.DrawFn) -> SlotQuantiles:
    values = sorted(draw(st.lists(st.integers(-20_000, 20_000), min_size=3, max_size=3)))
    return SlotQuantiles(draw(st.integers(0, 10**7)), *values)


@st.composite
def configs(draw: st.DrawFn) -> PolicyConfig:
    feed_in = draw(st.integers(0, 500_000))
    retail = draw(st.integers(feed_in, 1_000_000))
    permille = st.integers(0, 1000)
    return PolicyConfig(
        feed_in,
        retail,
        sell_permille=tuple(sorted(draw(st.lists(permille, min_size=3, max_size=3)))),  # type: ignore[arg-type]
        buy_permille=tuple(sorted(draw(st.lists(permille, min_size=3, max_size=3)), reverse=True)),  # type: ignore[arg-type]
        battery_sell_permille=draw(permille),
        battery_buy_permille=draw(permille),
        requote_window_s=draw(st.integers(0, 7200)),
        converge_permille=draw(permille),
    )


@st.composite
def batteries(draw: st.DrawFn) -> BatteryState | None:
    if draw(st.booleans()):
        return None
    capacity = draw(st.integers(0, 20_000))
    return BatteryState(
        energy_wh=draw(st.integers(0, capacity)),
        capacity_wh=capacity,
        max_power_w=draw(st.integers(0, 10_000)),
        reserve_wh=draw(st.integers(0, capacity)),
    )


@given(quantiles(), configs(), batteries(), st.integers(-3600, 200_000))
@settings(max_examples=400)
def test_orders_respect_the_documented_invariants(
    q: SlotQuantiles, cfg: PolicyConfig, battery: BatteryState | None, lead_s: int
) -> None:
    order = quote_slot(
        q, household="h1", config=cfg, slot_seconds=900, lead_s=lead_s, battery=battery, nonce=7
    )
    avail = battery.available_wh(900) if battery else 0
    room = battery.headroom_wh(900) if battery else 0
    if order is None:
        return
    validate_order(
        order, limits=OrderLimits(price_cap_micro_per_kwh=max(cfg.retail_micro_per_kwh, 1))
    )
    assert order.slot == q.slot and order.nonce == 7 and order.household == "h1"
    for step in order.steps:
        assert cfg.feed_in_micro_per_kwh <= step.price_micro_per_kwh <= cfg.retail_micro_per_kwh
    prices = [s.price_micro_per_kwh for s in order.steps]
    assert prices == sorted(set(prices))  # merged by price, in price order
    if order.side is Side.SELL:
        assert q.p50_wh >= 0
        assert order.energy_wh <= max(q.p90_wh, 0) + avail
    else:
        assert q.p50_wh < 0
        assert order.energy_wh <= max(-q.p10_wh, 0) + room
    again = quote_slot(
        q, household="h1", config=cfg, slot_seconds=900, lead_s=lead_s, battery=battery, nonce=7
    )
    assert again == order


def test_confident_surplus_is_offered_cheaper_than_uncertain_surplus() -> None:
    cfg = PolicyConfig(feed_in_micro_per_kwh=80_000, retail_micro_per_kwh=300_000)
    order = quote_slot(
        SlotQuantiles(5, 100, 300, 600), household="h", config=cfg, slot_seconds=900, lead_s=10**6
    )
    assert order is not None and order.side is Side.SELL
    assert [(s.price_micro_per_kwh, s.energy_wh) for s in order.steps] == [
        (124_000, 100),  # P10 part at 20 % of the spread
        (190_000, 200),  # P10..P50 at 50 %
        (256_000, 300),  # P50..P90 at 80 %
    ]


def test_a_sure_shortfall_is_bid_high_and_the_battery_covers_it_first() -> None:
    cfg = PolicyConfig(feed_in_micro_per_kwh=80_000, retail_micro_per_kwh=300_000)
    q = SlotQuantiles(5, -600, -300, -100)
    order = quote_slot(q, household="h", config=cfg, slot_seconds=900, lead_s=10**6)
    assert order is not None and order.side is Side.BUY
    assert [(s.price_micro_per_kwh, s.energy_wh) for s in order.steps] == [
        (124_000, 300),  # the uncertain part, up to d90 = 600, bid low
        (190_000, 200),  # up to d50 = 300
        (256_000, 100),  # the sure part d10 = 100, bid high
    ]
    battery = BatteryState(energy_wh=1000, capacity_wh=5000, max_power_w=800, reserve_wh=500)
    assert battery.available_wh(900) == 200 and battery.headroom_wh(900) == 200
    with_battery = quote_slot(
        q, household="h", config=cfg, slot_seconds=900, lead_s=10**6, battery=battery
    )
    assert with_battery is not None
    bought = {s.price_micro_per_kwh: s.energy_wh for s in with_battery.steps}
    # 200 Wh of the shortfall come from the battery; 200 Wh of headroom are bid for at 10 %
    assert bought == {102_000: 200, 124_000: 300, 190_000: 100}


def test_quotes_converge_to_the_middle_as_gate_closure_nears() -> None:
    cfg = PolicyConfig(80_000, 300_000, requote_window_s=3600, converge_permille=1000)
    q = SlotQuantiles(5, 100, 300, 600)
    far = quote_slot(q, household="h", config=cfg, slot_seconds=900, lead_s=7200)
    near = quote_slot(q, household="h", config=cfg, slot_seconds=900, lead_s=0)
    assert far is not None and near is not None
    assert len(far.steps) == 3
    assert [(s.price_micro_per_kwh, s.energy_wh) for s in near.steps] == [(190_000, 600)]


def test_nothing_to_trade_means_no_order_and_ids_are_content_derived() -> None:
    cfg = PolicyConfig(80_000, 300_000)
    assert (
        quote_slot(SlotQuantiles(1, 0, 0, 0), household="h", config=cfg, slot_seconds=900, lead_s=0)
        is None
    )
    assert median_only_order(SlotQuantiles(1, -5, 0, 5), household="h", config=cfg) is None
    assert order_id("h", 1, Side.BUY, 0) == order_id("h", 1, Side.BUY, 0)
    assert order_id("h", 1, Side.BUY, 0) != order_id("h", 1, Side.SELL, 0)
    with pytest.raises(UsageError):
        SlotQuantiles(1, 5, 0, 10)
    with pytest.raises(UsageError):
        PolicyConfig(300_000, 80_000)


def test_plan_orders_from_real_history_covers_the_open_slots(shipped_15min: MeterHistory) -> None:
    now = local_midnight_utc(2009, 6, 1) + 10 * 3600 + 7 * 60  # 10:07 local
    hourly = shipped_15min.resample(3600)
    past = hourly.until(now - now % 3600)
    fitted = QuantileRegression(horizon=24, train_days=120, origin_steps_of_day=(10,)).fit(past)
    clock = SlotClock(slot_seconds=900, gate_lead_seconds=300)
    cfg = PolicyConfig(80_000, 300_000)
    orders = plan_orders(
        past, fitted, now=now, clock=clock, config=cfg, household="me", horizon=24, nonce=40
    )
    slots = [o.slot for o in orders]
    assert slots == sorted(slots) and len(set(slots)) == len(slots)
    assert slots[0] >= clock.first_open_slot(now)
    assert all(clock.is_open(o.slot, now) for o in orders)
    assert clock.start(slots[-1]) < past.end_s + 24 * 3600
    assert [o.nonce for o in orders] == list(range(40, 40 + len(orders)))
    # a June day at midday: the household sells; at night it buys
    by_hour = {((clock.start(o.slot) + past.utc_offset_s) // 3600) % 24: o.side for o in orders}
    assert by_hour[12] is Side.SELL and by_hour[23] is Side.BUY
    assert orders == plan_orders(
        past, fitted, now=now, clock=clock, config=cfg, household="me", horizon=24, nonce=40
    )
    with pytest.raises(UsageError):
        plan_orders(
            hourly.until(now + 3600 - now % 3600), fitted, now=now, clock=clock, config=cfg,
            household="me", horizon=24,
        )  # fmt: skip
