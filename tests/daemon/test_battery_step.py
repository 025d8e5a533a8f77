"""The household daemon's battery: the reading it signs is the meter's net after dispatch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from gridnode.config import Config
from gridnode.core.battery import Battery, dispatch
from gridnode.daemon import DaemonNode, battery_of
from gridnode.meter import shipped_replay
from market.clearing import Trade
from market.slots import SlotClock


def _household(battery_kwh: float, trades: dict[int, tuple[Trade, ...]]) -> SimpleNamespace:
    """The parts of a DaemonNode that the reading path uses (a fake, not a mock)."""
    config = Config(dir=Path("."), battery_kwh=battery_kwh, battery_kw=2.5)
    battery = battery_of(config)
    return SimpleNamespace(
        meter=shipped_replay(node_anchor_s=1_700_000_000, hour=10.0, pv_scale=1.5),
        battery=battery,
        battery_soc_wh=battery.capacity_wh // 2 if battery else 0,
        _metered={},
        runtime=SimpleNamespace(state=SimpleNamespace(trades=trades)),
        key=SimpleNamespace(public_hex="me"),
    )


def test_battery_of_config() -> None:
    assert battery_of(Config(dir=Path("."))) is None
    assert battery_of(Config(dir=Path("."), battery_kwh=5.0, battery_kw=2.5)) == Battery(
        capacity_wh=5000, power_w=2500
    )


def test_readings_are_metered_after_dispatch_against_the_committed_trades() -> None:
    clock = SlotClock(900, 300)
    first = clock.slot_at(1_700_000_000) + 1
    slots = range(first, first + 4)
    sold = Trade("other", "me", "b", "s", 700, 150_000, 105_000)
    trades = {first + 1: (sold,)}
    hh = _household(5.0, trades)
    plain = _household(0.0, trades)
    soc = 2500
    natural = [hh.meter.slot_net_wh(s, clock) for s in slots]
    assert all(n is not None for n in natural)
    for slot, n in zip(slots, natural, strict=True):
        reading = DaemonNode._metered_net(hh, slot, clock)  # type: ignore[arg-type]
        expected = dispatch(
            Battery(capacity_wh=5000, power_w=2500),
            soc_wh=soc,
            natural_net_wh=n,
            contract_wh=700 if slot == first + 1 else 0,
            slot_seconds=900,
        )
        soc = expected.soc_wh
        assert reading == expected.metered_net_wh and hh.battery_soc_wh == soc
        # a retried reading (network error) is the same and does not move the battery again
        assert DaemonNode._metered_net(hh, slot, clock) == reading  # type: ignore[arg-type]
        assert hh.battery_soc_wh == soc
        # without a battery the reading is the meter's
        assert DaemonNode._metered_net(plain, slot, clock) == n  # type: ignore[arg-type]
    # the battery did something on this morning: the readings are not the meter's
    assert [hh._metered[s] for s in slots] != natural
    state = DaemonNode._battery_state(hh)  # type: ignore[arg-type]
    assert state is not None and (state.energy_wh, state.capacity_wh, state.max_power_w) == (
        soc,
        5000,
        2500,
    )
    assert DaemonNode._battery_state(plain) is None  # type: ignore[arg-type]
