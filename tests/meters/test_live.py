"""LiveMeter: samples in, slot readings and history out, kept in a real SQLite file across restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridnode.meters.live import LiveMeter, MeterStore, SlotEnergy
from gridnode.meters.registers import Rules
from market.errors import InvalidInput
from market.slots import SlotClock

SLOT = 900
CLOCK = SlotClock(SLOT, 300)
T0 = 1_700_000_100  # node seconds; slot boundaries every 900 s


class FakeClock:
    """Node time set by the test (a fake, not a mock): the meter stamps samples with it."""

    def __init__(self, s: int) -> None:
        self.ms = s * 1000

    def now_ms(self) -> int:
        return self.ms

    def at(self, s: float) -> FakeClock:
        self.ms = int(s * 1000)
        return self


def open_meter(path: Path, clock: FakeClock, **kw: object) -> LiveMeter:
    return LiveMeter(
        store=MeterStore.open(path),
        rules=Rules(slot_seconds=SLOT, max_age_s=600),
        now_ms=clock.now_ms,
        **kw,  # type: ignore[arg-type]
    )


def feed(
    meter: LiveMeter,
    clock: FakeClock,
    start_s: int,
    end_s: int,
    every_s: int,
    w_import: int,
    w_export: int,
    base: tuple[int, int],
) -> tuple[int, int]:
    """Samples every ``every_s`` from ``start_s`` at constant powers; returns the registers (mWh)."""
    imp, exp = base
    t = start_s
    while t < end_s:
        clock.at(t)
        meter.record({"import": imp, "export": exp})
        imp += w_import * every_s * 1000 // 3600
        exp += w_export * every_s * 1000 // 3600
        t += every_s
    return imp, exp


def test_readings_are_the_register_differences_and_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "meter.sqlite", clock)
    first = CLOCK.slot_at(T0) + 1
    start = CLOCK.start(first)
    regs = feed(meter, clock, start - 10, start + 3 * SLOT + 1, 10, 3600, 0, (5_000_000, 0))
    # every 10 s at 3600 W import: 10 Wh per sample, one on each boundary: 90 samples' worth a slot
    clock.at(start + 3 * SLOT + 0.05)  # the daemon asks 50 ms after the boundary
    assert [meter.slot_net_wh(first + k, CLOCK) for k in range(3)] == [-900, -900, -900]
    assert meter.slot_net_wh(first + 3, CLOCK) is None  # not over yet
    assert meter.slot_net_wh(first - 1, CLOCK) is None  # started before the first sample
    meter.close()

    # a restart: the finished slots are still there, the next one continues from the stored sample
    clock.at(start + 3 * SLOT + 5)
    again = open_meter(tmp_path / "meter.sqlite", clock)
    assert again.slot_net_wh(first + 1, CLOCK) == -900
    regs = feed(again, clock, start + 3 * SLOT + 5, start + 4 * SLOT + 5, 10, 0, 1800, regs)
    clock.at(start + 4 * SLOT + 10)
    # the boundary holds the sample on it; the next holds the one 5 s before it (89 x 5 Wh export),
    # and the import register moved on by the 10 Wh counted since the boundary sample
    assert again.slot_energy(first + 3) == SlotEnergy(first + 3, 10, 445)
    again.close()


def test_boundary_values_are_final_once_node_time_passed_them(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "m.sqlite", clock)
    slot = CLOCK.slot_at(T0) + 1
    a, b = CLOCK.start(slot), CLOCK.end(slot)
    clock.at(a - 1)
    meter.record({"import": 1_000_000, "export": 0})
    clock.at(b - 1)
    meter.record({"import": 1_500_000, "export": 0})
    clock.at(b)  # exactly at the boundary: a sample could still be stamped at b
    assert meter.slot_net_wh(slot, CLOCK) is None
    clock.at(b + 0.001)
    assert meter.slot_net_wh(slot, CLOCK) == -500
    clock.at(b)  # the clock steps back: the next sample is still stamped after the query
    meter.record({"import": 9_000_000, "export": 0})
    assert meter.slot_net_wh(slot, CLOCK) == -500


def test_a_meter_replacement_costs_the_slot_it_happens_in(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "m.sqlite", clock)
    slot = CLOCK.slot_at(T0) + 1
    start = CLOCK.start(slot)
    clock.at(start - 5)
    meter.record({"import": 8_000_000, "export": 100_000})
    clock.at(start + 100)
    meter.record({"import": 8_100_000, "export": 100_000})
    clock.at(start + 200)  # new meter, counting from 0
    meter.record({"import": 0, "export": 0})
    clock.at(start + SLOT - 5)
    meter.record({"import": 50_000, "export": 0})
    clock.at(start + 2 * SLOT - 5)
    meter.record({"import": 250_000, "export": 20_000})
    clock.at(start + 2 * SLOT + 1)
    assert meter.slot_net_wh(slot, CLOCK) is None
    assert meter.slot_net_wh(slot + 1, CLOCK) == 20 - 200
    assert meter.counts["break:decrease"] == 2


def test_history_is_mean_power_per_slot_with_short_gaps_filled(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "m.sqlite", clock, registers=("import", "export", "pv"))
    first = CLOCK.slot_at(T0) + 1
    imp = exp = pv = 0
    for k in range(12):
        if k in (5, 6):  # the reader was down for two slots (boundaries 5 and 6 have no value)
            imp += 900_000
            pv += 450_000
            continue
        clock.at(CLOCK.start(first + k) - 1)
        meter.record({"import": imp, "export": exp, "pv": pv})
        imp += 900_000  # 900 Wh per slot = 3600 W
        exp += 90_000
        pv += 450_000
    clock.at(CLOCK.start(first + 12))
    history = meter.history_before(CLOCK.start(first + 11) + 10, days=1)
    assert history.start_s == CLOCK.start(first) and history.step_s == SLOT
    assert history.steps == 11 - 0  # slots first .. first+10 (the slot at node_s is not finished)
    assert history.pv_w is not None and history.load_w is not None
    # known slots: import 3600 W, export 360 W, pv 1800 W -> net -3240 W, load 5040 W
    assert history.net_w[0, 0] == pytest.approx(-3240.0)
    assert history.load_w[0, 1] == pytest.approx(5040.0)
    # slots 4, 5, 6 (boundaries 5 and 6 missing) are filled linearly between their neighbours
    assert np.isfinite(history.net_w).all()
    assert meter.slot_energy(first + 4) is None
    assert meter.slot_energy(first + 7) == SlotEnergy(first + 7, 900, 90, 450)


def test_history_needs_two_slots_and_ends_after_a_long_gap(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "m.sqlite", clock)
    with pytest.raises(InvalidInput) as exc:
        meter.history_before(T0, days=1)
    assert exc.value.reason == "no_history"
    first = CLOCK.slot_at(T0) + 1
    for k in [0, 1, 2, *range(10, 14)]:  # a gap of 7 slots
        clock.at(CLOCK.start(first + k) - 1)
        meter.record({"import": 1000 * k, "export": 0})
    clock.at(CLOCK.start(first + 14))
    history = meter.history_before(CLOCK.start(first + 14), days=1)
    assert history.start_s == CLOCK.start(first + 10) and history.steps == 3


def test_power_integration_is_flagged_and_counts_both_directions(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    meter = open_meter(tmp_path / "m.sqlite", clock, exact=False)
    slot = CLOCK.slot_at(T0) + 1
    start = CLOCK.start(slot)
    for k in range(-1, 91):
        clock.at(start + 10 * k)
        meter.record_power(2000 if k < 45 else -1000)  # 450 s at +2 kW, 450 s at -1 kW
    clock.at(start + SLOT + 1)
    energy = meter.slot_energy(slot)
    assert energy == SlotEnergy(slot, 250, 125, None) and not meter.exact
