"""Batteries with real household daemons: each daemon dispatches its own battery, and the daemon
engine reads what the batteries did back from the ledger's readings and the meters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gridnode.chain import ChainReader, stored_blocks
from gridnode.household.battery import Battery, contract_wh, dispatch
from gridnode.meter import shipped_replay
from gridnode.store import NodeStore
from market.clearing import Trade
from market.slots import SlotClock
from sims.daemon_collect import _battery_moves
from sims.daemon_engine import run_daemons
from sims.daemons import LocalCommunity
from sims.scenario import HouseholdSpec, load_scenario

BATTERIES = Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "batteries.toml"


def test_battery_moves_recover_what_the_model_did() -> None:
    clock = SlotClock(900, 300)
    first = clock.slot_at(1_700_000_000) + 1
    meter = shipped_replay(node_anchor_s=1_700_000_000, hour=8.0, pv_scale=1.5)
    spec = HouseholdSpec(0, "h000", "g", 5.1, 1.0, 5.0, 2.5, 0)
    battery, soc = Battery(capacity_wh=5000, power_w=2500), 2500
    readings: dict[int, dict[str, int]] = {}
    expected = {}
    for i, slot in enumerate(range(first, first + 40)):
        natural = meter.slot_net_wh(slot, clock)
        assert natural is not None
        d = dispatch(
            battery, soc_wh=soc, natural_net_wh=natural, contract_wh=(i % 3 - 1) * 400,
            slot_seconds=900,
        )  # fmt: skip
        soc = d.soc_wh
        readings[slot] = {"me": d.metered_net_wh, "other": 5}
        expected[slot] = (d.charged_wh, d.discharged_wh, d.loss_wh, d.soc_wh)
    moves = _battery_moves(meter, spec, "me", readings, clock)
    assert moves == expected
    assert any(m[0] for m in moves.values()) and any(m[1] for m in moves.values())


@pytest.mark.net
def test_household_daemons_dispatch_their_batteries(tmp_path: Path) -> None:
    sc = dataclasses.replace(load_scenario(BATTERIES, households=4, seed=7), start_hour=11.0)
    owners = {s.name for s in sc.household_specs() if s.battery_kwh > 0}
    assert len(owners) == 1
    run = run_daemons(sc, tmp_path / "d", speedup=60, slots=3)
    r = run.result
    assert not r.interrupted and r.slots_done == 3, r.notes
    assert r.ledger_agreement is True and r.conservation_ok is True, r.notes
    (owner,) = [h for h in r.households if h.name in owners]
    assert owner.battery_charged_wh + owner.battery_discharged_wh > 0
    assert owner.battery_charged_wh - owner.battery_discharged_wh == (
        owner.battery_soc_end_wh - owner.battery_soc_start_wh + owner.battery_loss_wh
    )
    assert sum(s.battery_charged_wh for s in r.slots) == owner.battery_charged_wh
    assert all(
        (h.battery_charged_wh, h.battery_discharged_wh) == (0, 0)
        for h in r.households
        if h.name not in owners
    )
    # exact: every reading the daemon signed is the model dispatched against its committed trades
    # for the slot, from half full at its first reading
    lc = LocalCommunity.load(tmp_path / "d")
    assert lc.genesis is not None
    clock = lc.genesis.clock
    readings: dict[int, int] = {}  # slot -> the owner's signed reading
    traded: dict[int, tuple[Trade, ...]] = {}  # slot -> the ledger's trades
    with NodeStore.open(lc.households[0].dir / "data" / "node.sqlite") as store:
        for facts in ChainReader(lc.genesis).read_all(stored_blocks(store)):
            readings.update(
                {r.slot: r.net_wh for r in facts.readings if r.household == owner.household}
            )
            traded.update({c.slot: c.trades for c in facts.cleared})
    spec = next(s for s in sc.household_specs() if s.name in owners)
    meter = shipped_replay(
        node_anchor_s=lc.genesis.genesis_time_ms // 1000, day=sc.start_day,
        day_offset=spec.day_offset, hour=sc.start_hour, pv_scale=spec.pv_scale,
        load_scale=spec.load_scale,
    )  # fmt: skip
    battery, soc = Battery(capacity_wh=5000, power_w=2500), 2500
    slots = sorted(readings)
    assert len(slots) >= 3
    for slot in slots:
        natural = meter.slot_net_wh(slot, clock)
        assert natural is not None
        trades = traded.get(slot, ())
        d = dispatch(
            battery, soc_wh=soc, natural_net_wh=natural,
            contract_wh=contract_wh(trades, owner.household), slot_seconds=clock.slot_seconds,
        )  # fmt: skip
        assert readings[slot] == d.metered_net_wh, slot
        soc = d.soc_wh
