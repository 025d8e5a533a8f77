"""The household agent, pure: one reading per delivered slot, the battery within bounds, quotes.

Properties (Hypothesis) against a naive reference (the battery dispatched once per slot in slot
order), worked examples of the quoting window and the policies, and re-quoting through the real
ledger: a later quote for a slot replaces the earlier order.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.policy import PolicyConfig, SlotQuantiles, median_only_order, quote_slot
from gridnode.core.ledger import sign_order
from gridnode.household.agent import (
    PRICE_DAYS,
    AgentConfig,
    Bidding,
    HouseholdAgent,
    Reading,
    expected_clearing_price,
)
from gridnode.household.battery import Battery, dispatch
from gridnode.household.forecast import SlotForecast
from market.errors import UsageError
from market.orders import Side
from market.slots import SlotClock
from tests.household.test_battery import batteries_and_soc
from tests.ledger.helpers import T0_MS, Community

CLOCK = SlotClock(900, 300)
FIRST = 2_000_000  # a slot
POLICY = PolicyConfig(feed_in_micro_per_kwh=80_000, retail_micro_per_kwh=300_000)


def agent(
    battery: Battery | None = None,
    *,
    soc_wh: int | None = None,
    bidding: Bidding = Bidding.FORECAST,
    quoted_slots: int = 1,
    last_slot: int | None = None,
    household: str = "me",
) -> HouseholdAgent:
    config = AgentConfig(
        household=household,
        clock=CLOCK,
        policy=POLICY,
        bidding=bidding,
        battery=battery,
        first_slot=FIRST,
        last_slot=last_slot,
        quoted_slots=quoted_slots,
    )
    return HouseholdAgent(config, soc_wh=soc_wh)


def boundary(slot: int) -> int:
    """When a driver calls the agent: just after ``slot`` starts (community seconds)."""
    return CLOCK.start(slot)


# ---------------------------------------------------------------------------------- readings


@st.composite
def runs(draw: st.DrawFn) -> tuple[Battery, int, list[tuple[int, bool]], dict[int, int | None]]:
    battery, soc = draw(batteries_and_soc())
    # boundaries: how many slots each step advances (a driver may miss boundaries) and whether
    # the step's submission failed (its readings go back to the agent)
    steps = draw(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=12))
    last = FIRST + sum(n for n, _ in steps) + 1
    natural = {s: draw(st.none() | st.integers(-3_000, 3_000)) for s in range(FIRST, last + 1)}
    return battery, soc, steps, natural


@settings(max_examples=200, deadline=None)
@given(runs(), st.integers(-2_000, 2_000))
def test_one_reading_per_delivered_slot_and_the_battery_moves_once_per_slot(
    run: tuple[Battery, int, list[tuple[int, bool]], dict[int, int | None]], contract: int
) -> None:
    battery, soc, steps, natural = run
    a = agent(battery, soc_wh=soc)
    slot = read_until = FIRST
    emitted: dict[int, Reading] = {}
    lost: list[Reading] = []
    for advance, fails in [*steps, (1, False)]:  # the last step gets through
        slot += advance
        now_s = boundary(slot) + 1
        needs = a.needs(now_s)
        assert needs.read == tuple(range(read_until, slot))  # delivered and not read yet
        read_until = slot
        actions = a.on_slot_boundary(
            now_s,
            natural_wh={s: natural[s] for s in needs.read},
            contract_wh={s: contract for s in needs.read},
            forecast=None,
        )
        got = [r.slot for r in actions.readings]
        assert got == sorted(got)  # ascending
        # what went back comes out first and unchanged; the rest are new slots read once
        assert list(actions.readings[: len(lost)]) == sorted(lost, key=lambda r: r.slot)
        for r in actions.readings[len(lost) :]:
            assert r.slot not in emitted and natural[r.slot] is not None
            emitted[r.slot] = r
        assert all(emitted[r.slot] == r for r in actions.readings)
        assert 0 <= a.soc_wh <= battery.capacity_wh
        if soc >= battery.reserve_wh:
            assert a.soc_wh >= battery.reserve_wh
        lost = list(actions.readings) if fails else []
        if fails:
            a.readings_lost(actions.readings)
    # every delivered slot with meter data has exactly one reading; the reference battery agrees
    assert sorted(emitted) == [s for s in range(FIRST, slot) if natural[s] is not None]
    ref = soc
    for s in sorted(emitted):
        n = natural[s]
        assert n is not None
        d = dispatch(battery, soc_wh=ref, natural_net_wh=n, contract_wh=contract, slot_seconds=900)
        ref = d.soc_wh
        assert emitted[s] == Reading(s, d.metered_net_wh, n, contract, d)
    assert a.soc_wh == ref


def test_without_a_battery_the_reading_is_the_meter_and_a_slot_without_data_is_skipped() -> None:
    a = agent()
    assert a.battery_state is None and a.soc_wh == 0
    actions = a.on_slot_boundary(
        boundary(FIRST + 3),
        natural_wh={FIRST: 120, FIRST + 1: None, FIRST + 2: -40},
        contract_wh={FIRST: 999},
        forecast=None,
    )
    assert actions.readings == (
        Reading(FIRST, 120, 120, 999, None),
        Reading(FIRST + 2, -40, -40, 0, None),
    )
    assert a.needs(boundary(FIRST + 3)).read == ()  # all read, the empty one for good
    with pytest.raises(UsageError, match=rf"slot {FIRST + 3} is delivered"):
        a.on_slot_boundary(boundary(FIRST + 4), natural_wh={}, contract_wh={}, forecast=None)


def test_the_agent_checks_its_settings() -> None:
    with pytest.raises(UsageError, match="soc_wh must lie in"):
        agent(Battery(capacity_wh=1000, power_w=500), soc_wh=1001)
    with pytest.raises(UsageError, match=r"quoted_slots must be >= 0"):
        agent(quoted_slots=-1)
    with pytest.raises(UsageError, match=r"last_slot .* is before first_slot"):
        agent(last_slot=FIRST - 1)


# ---------------------------------------------------------------------------------- quotes


def forecast(*rows: tuple[int, int, int, int], model: str = "m1") -> SlotForecast:
    return SlotForecast(model, tuple(SlotQuantiles(*r) for r in rows))


def test_it_quotes_the_first_open_slots_within_its_window() -> None:
    a = agent(quoted_slots=2, last_slot=FIRST + 5)
    # at a boundary the next slot is still open (gate 300 s before it)
    assert a.needs(boundary(FIRST)).quote == (FIRST + 1, FIRST + 2)
    # past the next slot's gate closure, the first open slot is the one after
    assert a.needs(CLOCK.gate_closure(FIRST + 1)).quote == (FIRST + 2, FIRST + 3)
    assert a.needs(boundary(FIRST + 4)).quote == (FIRST + 5,)  # not beyond last_slot
    assert a.needs(boundary(FIRST + 5)).quote == ()
    assert a.needs(boundary(FIRST + 5)).read == (FIRST, FIRST + 1, FIRST + 2, FIRST + 3, FIRST + 4)
    assert a.needs(boundary(FIRST + 9)).read[-1] == FIRST + 5  # nor read beyond it
    assert agent(quoted_slots=0).needs(boundary(FIRST)).quote == ()  # bidding off
    # none before first_slot
    assert agent(quoted_slots=3).needs(boundary(FIRST - 2)).quote == (FIRST, FIRST + 1)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(-5_000, 5_000),
    st.integers(0, 3_000),
    st.integers(0, 3_000),
    batteries_and_soc(),
    st.sampled_from(list(Bidding)),
)
def test_a_quote_is_the_policy_applied_to_the_forecast_and_the_battery_now(
    p50: int, below: int, above: int, battery_soc: tuple[Battery, int], bidding: Bidding
) -> None:
    battery, soc = battery_soc
    a = agent(battery, soc_wh=soc, bidding=bidding, quoted_slots=1)
    now_s = boundary(FIRST)
    slot = FIRST + 1
    q = SlotQuantiles(slot, p50 - below, p50, p50 + above)
    fc = SlotForecast("m7", (q, SlotQuantiles(slot + 1, 0, 10, 20)))  # slot + 1 is not quoted
    actions = a.on_slot_boundary(now_s, natural_wh={}, contract_wh={}, forecast=fc)
    (quote,) = actions.quotes
    assert (quote.slot, quote.forecast, quote.model) == (slot, q, "m7")
    if bidding is Bidding.NAIVE_FIXED_PRICE:
        expected = median_only_order(q, household="me", config=POLICY)
    else:
        expected = quote_slot(q, household="me", config=POLICY, slot_seconds=900,
                              battery=a.battery_state)  # fmt: skip
    assert quote.order == expected
    if quote.order is not None:
        assert quote.order.nonce == 0 and quote.order.household == "me"
    # no forecast, no quotes (the readings still come)
    assert a.on_slot_boundary(now_s, natural_wh={}, contract_wh={}, forecast=None).quotes == ()


def test_quotes_see_the_state_of_charge_after_the_delivered_slot() -> None:
    battery = Battery(capacity_wh=4000, power_w=4000)
    a = agent(battery, soc_wh=0)
    fc = forecast((FIRST + 2, 500, 800, 1000))
    actions = a.on_slot_boundary(
        boundary(FIRST + 1), natural_wh={FIRST: 2000}, contract_wh={}, forecast=fc
    )
    (reading,) = actions.readings
    assert reading.dispatch is not None and reading.dispatch.soc_wh == a.soc_wh > 0
    (quote,) = actions.quotes
    assert quote.order is not None and quote.order.side is Side.SELL
    # the battery's energy (charged in the delivered slot) is offered on top of the P90
    assert quote.order.energy_wh > 1000


def test_a_requote_replaces_the_earlier_order_in_the_ledger() -> None:
    c = Community(n_members=1, n_validators=1)
    key = c.members[0]
    slot0 = T0_MS // 1000 // 900
    a = agent(household=key.public_hex, quoted_slots=2)
    a = HouseholdAgent(replace(a.config, first_slot=slot0))
    target = slot0 + 2
    state = c.state()
    orders = []
    for nonce, (at_slot, rows) in enumerate(
        [(slot0, (target - 1, 0, 100, 200)), (slot0 + 1, (target, -300, -200, -100))], start=1
    ):
        now_s = boundary(at_slot)
        fc = forecast(rows, (target, 100, 400, 600)) if at_slot == slot0 else forecast(rows)
        quotes = a.on_slot_boundary(now_s, natural_wh=dict.fromkeys(a.needs(now_s).read, 0),
                                    contract_wh={}, forecast=fc).quotes  # fmt: skip
        (q,) = [q for q in quotes if q.slot == target]
        assert q.order is not None
        tx = sign_order(key, c.genesis, replace(q.order, nonce=10 * nonce))
        orders.append(tx)
        _, state = c.block(state, now_s * 1000 + 100, [tx])
    # the first quote sold, the re-quote buys: the ledger holds only the later one
    assert [o.order.side for o in orders] == [Side.SELL, Side.BUY]
    held = state.open_order(target, key.public_hex)
    assert held is not None and held.id == orders[1].id


def test_the_expected_clearing_price_is_the_median_of_the_same_time_on_past_days() -> None:
    per_day = 96
    slot = FIRST + 10 * per_day
    same_time = {slot - d * per_day: 100_000 + 10_000 * d for d in range(1, PRICE_DAYS + 1)}
    assert expected_clearing_price(slot, same_time, CLOCK) == 140_000  # days 1..7: the 4th
    # only what cleared at a price counts; an even count takes the lower middle
    some = {slot - per_day: 250_000, slot - 2 * per_day: None, slot - 3 * per_day: 90_000}
    assert expected_clearing_price(slot, some, CLOCK) == 90_000
    # no price at that time of day: the last slots' prices; none at all: none
    recent = {slot - 1: 200_000, slot - 2: 180_000, slot - 3: 210_000, slot - 9: 1}
    assert expected_clearing_price(slot, recent, CLOCK) == 200_000
    assert expected_clearing_price(slot, {}, CLOCK) is None
    # the agent quotes at the price it expects (the curve gets a level there)
    a = agent()
    now_s = boundary(slot - 1)
    q = SlotQuantiles(slot, 100, 500, 900)
    actions = a.on_slot_boundary(now_s, natural_wh=dict.fromkeys(a.needs(now_s).read, 0),
                                 contract_wh={}, forecast=SlotForecast("m", (q,)),
                                 clearing_prices=same_time)  # fmt: skip
    (quote,) = actions.quotes
    assert quote.expected_price_micro_per_kwh == 140_000
    assert quote.order == quote_slot(q, household="me", config=POLICY, slot_seconds=900,
                                     expected_price_micro_per_kwh=140_000)  # fmt: skip
    assert quote.order is not None and 140_000 in [s.price_micro_per_kwh for s in quote.order.steps]


def test_expected_prices_from_the_driver_are_what_the_agent_would_compute() -> None:
    """A driver of many agents may compute the expected clearing prices once a slot and hand
    them over: the same quotes as an agent computing them, and a slot they lack is computed."""
    per_day = 96
    slot = FIRST + 10 * per_day
    prices = {slot - d * per_day: 100_000 + 10_000 * d for d in range(1, PRICE_DAYS + 1)}
    q = SlotQuantiles(slot, 100, 500, 900)
    now_s = boundary(slot - 1)
    quotes = []
    for expected in (None, {slot: expected_clearing_price(slot, prices, CLOCK)}, {slot + 1: 1}):
        a = agent()
        quotes.append(a.on_slot_boundary(now_s, natural_wh=dict.fromkeys(a.needs(now_s).read, 0),
                                         contract_wh={}, forecast=SlotForecast("m", (q,)),
                                         clearing_prices=prices,
                                         expected_prices=expected).quotes)  # fmt: skip
    assert quotes[0] == quotes[1] == quotes[2]
    assert quotes[0][0].expected_price_micro_per_kwh == 140_000


def test_forecasts_that_keep_missing_make_the_agent_careful() -> None:
    """The agent's own record calibrates its bands: a forecaster that promises surplus the meter
    never shows makes the agent widen its lower half-band, so it offers less."""
    a = agent()
    q_for = lambda slot: SlotQuantiles(slot, 400, 500, 600)  # noqa: E731 - a local shorthand
    slot = FIRST + 1
    first = None
    for _k in range(40):
        now_s = boundary(slot - 1)
        needs = a.needs(now_s)
        actions = a.on_slot_boundary(
            now_s, natural_wh=dict.fromkeys(needs.read, -200), contract_wh={},
            forecast=SlotForecast("m", (q_for(slot),)),
        )  # fmt: skip
        (quote,) = actions.quotes
        if first is None:
            first = quote.order
        slot += 1
    lo, hi = a.calibration.scales
    assert lo > 1.0 and hi == 1.0  # the readings fell far below the P10, never above the P90
    assert first is not None and quote.order is not None
    offered = lambda o, price: sum(  # noqa: E731
        s.energy_wh for s in o.steps if s.price_micro_per_kwh <= price
    )
    assert offered(quote.order, 146_000) < offered(first, 146_000)  # the sure part shrank
    assert offered(quote.order, 300_000) == offered(first, 300_000)  # the median and P90 stay
    # perfect foresight's record is perfect: nothing to widen
    pf = agent(bidding=Bidding.PERFECT_FORESIGHT)
    slot = FIRST + 1
    for _ in range(40):
        now_s = boundary(slot - 1)
        pf.on_slot_boundary(now_s, natural_wh=dict.fromkeys(pf.needs(now_s).read, 300),
                            contract_wh={},
                            forecast=SlotForecast("pf", (SlotQuantiles(slot, 300, 300, 300),)))  # fmt: skip
        slot += 1
    assert pf.calibration.scales == (1.0, 1.0)
