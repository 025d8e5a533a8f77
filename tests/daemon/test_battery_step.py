"""The household daemon's battery: the reading it signs is the meter's net after dispatch."""

from __future__ import annotations

from pathlib import Path

from forecasting.policy import PolicyConfig
from gridnode.config import Config
from gridnode.household.agent import AgentConfig, HouseholdAgent
from gridnode.household.battery import Battery, contract_wh, dispatch
from gridnode.household_driver import battery_of
from gridnode.meter import shipped_replay
from market.clearing import Trade
from market.slots import SlotClock

CLOCK = SlotClock(900, 300)
START_S = 1_700_000_000
METER = shipped_replay(node_anchor_s=START_S, hour=10.0, pv_scale=1.5)


def _household(battery_kwh: float) -> HouseholdAgent:
    """The daemon's agent for a config with ``battery_kwh`` (the driver builds it the same way)."""
    config = Config(dir=Path("."), battery_kwh=battery_kwh, battery_kw=2.5)
    return HouseholdAgent(
        AgentConfig(
            household="me",
            clock=CLOCK,
            policy=PolicyConfig(feed_in_micro_per_kwh=80_000, retail_micro_per_kwh=300_000),
            battery=battery_of(config),
            first_slot=CLOCK.slot_at(START_S) + 1,
            quoted_slots=0,
        )
    )


def test_battery_of_config() -> None:
    assert battery_of(Config(dir=Path("."))) is None
    assert battery_of(Config(dir=Path("."), battery_kwh=5.0, battery_kw=2.5)) == Battery(
        capacity_wh=5000, power_w=2500
    )


def test_readings_are_metered_after_dispatch_against_the_committed_trades() -> None:
    first = CLOCK.slot_at(START_S) + 1
    slots = range(first, first + 4)
    sold = Trade("other", "me", "b", "s", 700, 150_000, 105_000)
    trades = {first + 1: (sold,)}
    hh, plain = _household(5.0), _household(0.0)
    assert hh.soc_wh == 2500 and plain.battery_state is None  # half full at every start
    soc = 2500
    natural = [METER.slot_net_wh(s, CLOCK) for s in slots]
    assert all(n is not None for n in natural)
    metered = []
    for slot, n in zip(slots, natural, strict=True):
        now_s = CLOCK.end(slot) + 1  # just after the slot was delivered
        needs = hh.needs(now_s)
        assert needs.read == (slot,) and needs.quote == ()
        contracts = {s: contract_wh(trades.get(s, ()), "me") for s in needs.read}
        actions = hh.on_slot_boundary(
            now_s, natural_wh={slot: n}, contract_wh=contracts, forecast=None
        )
        expected = dispatch(
            Battery(capacity_wh=5000, power_w=2500),
            soc_wh=soc,
            natural_net_wh=n,
            contract_wh=700 if slot == first + 1 else 0,
            slot_seconds=900,
        )
        soc = expected.soc_wh
        (reading,) = actions.readings
        assert (reading.slot, reading.net_wh, reading.dispatch) == (
            slot,
            expected.metered_net_wh,
            expected,
        )
        assert hh.soc_wh == soc
        metered.append(reading.net_wh)
        # a reading that did not reach a validator goes again, the same, and the battery stays
        hh.readings_lost(actions.readings)
        again = hh.on_slot_boundary(now_s, natural_wh={}, contract_wh={}, forecast=None)
        assert again.readings == actions.readings and hh.soc_wh == soc
        # without a battery the reading is the meter's
        (bare,) = plain.on_slot_boundary(
            now_s, natural_wh={slot: n}, contract_wh=contracts, forecast=None
        ).readings
        assert bare.net_wh == n and bare.dispatch is None
    # the battery did something on this morning: the readings are not the meter's
    assert metered != natural
    state = hh.battery_state
    assert state is not None and (state.energy_wh, state.capacity_wh, state.max_power_w) == (
        soc,
        5000,
        2500,
    )
