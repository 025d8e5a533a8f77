"""Batteries in the in-process engine: more self-consumption, exact energy accounting, sound ledger."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sims.compare import compare
from sims.inproc import _Engine, results_digest, run_inproc
from sims.report import kpi_rows, render_html, write_outputs
from sims.results import SimResult
from sims.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _afternoon(**changes: object) -> Scenario:
    """The shipped battery scenario from 09:00 to 21:00 (charging at noon, discharging at dusk)."""
    base = load_scenario(SCENARIOS / "batteries.toml")
    fields: dict[str, object] = {"days": 0.5, "start_hour": 9.0, "block_interval_s": 120}
    fields.update(changes)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _without_batteries(sc: Scenario) -> Scenario:
    groups = tuple(dataclasses.replace(g, battery_kwh=0.0, battery_kw=0.0) for g in sc.groups)
    return dataclasses.replace(sc, groups=groups)


@pytest.fixture(scope="module")
def runs() -> tuple[SimResult, SimResult]:
    sc = _afternoon()
    return run_inproc(sc), run_inproc(_without_batteries(sc))


def test_batteries_raise_self_consumption_and_cut_the_bill(
    runs: tuple[SimResult, SimResult],
) -> None:
    with_b, without = runs
    a, b = with_b.community(), without.community()
    # the same community (same draws), only the batteries differ
    assert [(h.name, h.pv_kwp) for h in with_b.households] == [
        (h.name, h.pv_kwp) for h in without.households
    ]
    assert a["pv_wh"] == b["pv_wh"] and a["load_wh"] == b["load_wh"]
    assert sum(h.battery_kwh > 0 for h in with_b.households) == 3
    assert a["battery_charged_wh"] > 0 and a["battery_discharged_wh"] > 0
    assert b["battery_charged_wh"] == b["battery_discharged_wh"] == 0
    assert a["self_consumption"] > b["self_consumption"]
    assert a["self_sufficiency"] > b["self_sufficiency"]
    assert a["grid_export_wh"] < b["grid_export_wh"] and a["grid_import_wh"] < b["grid_import_wh"]
    assert a["bill_micro"] < b["bill_micro"]
    for r in runs:
        assert r.ledger_agreement is True and r.conservation_ok is True, r.notes
        assert not r.interrupted and r.slots_done == r.slots_planned == 48


def test_energy_through_the_battery_is_accounted_exactly(
    runs: tuple[SimResult, SimResult],
) -> None:
    with_b, _ = runs
    e = _Engine(_afternoon())  # the meters' natural net (PV − load) of every slot
    natural = sum(e.slot_energy(s)[0] for s in range(e.first_slot, e.last_slot + 1))
    for i, h in enumerate(with_b.households):
        # what the ledger settled (netting "none": imbalances go to the grid) is the metered net,
        # which is the natural net moved by the battery, to the Wh
        metered = h.sold_p2p_wh - h.bought_p2p_wh + h.grid_export_wh - h.grid_import_wh
        assert metered == natural[i] - h.battery_charged_wh + h.battery_discharged_wh
        # inside the battery: what went in minus what came out = stored change + losses
        stored = h.battery_soc_end_wh - h.battery_soc_start_wh
        assert h.battery_charged_wh - h.battery_discharged_wh == stored + h.battery_loss_wh
        if h.battery_kwh > 0:
            assert h.battery_soc_start_wh == round(h.battery_kwh * 1000) // 2  # starts half full
            assert 0 <= h.battery_soc_end_wh <= round(h.battery_kwh * 1000)
            # losses ≈ 5 % of each direction (rounded up per slot)
            through = h.battery_charged_wh + h.battery_discharged_wh
            assert 0.04 * through <= h.battery_loss_wh <= 0.07 * through + 48
        else:
            assert (h.battery_charged_wh, h.battery_discharged_wh, h.battery_loss_wh) == (0, 0, 0)
    # the slot records carry the same battery energy as the households
    assert sum(s.battery_charged_wh for s in with_b.slots) == sum(
        h.battery_charged_wh for h in with_b.households
    )
    assert sum(s.battery_discharged_wh for s in with_b.slots) == sum(
        h.battery_discharged_wh for h in with_b.households
    )


def test_the_report_shows_battery_throughput(
    runs: tuple[SimResult, SimResult], tmp_path: Path
) -> None:
    with_b, without = runs
    write_outputs(with_b, tmp_path)
    assert SimResult.read_json(tmp_path / "results.json").households == with_b.households
    header = (tmp_path / "households.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith(
        "battery_kw,battery_charged_wh,battery_discharged_wh,battery_loss_wh,"
        "battery_soc_start_wh,battery_soc_end_wh"
    )
    slots_header = (tmp_path / "slots.csv").read_text(encoding="utf-8").splitlines()[0]
    assert slots_header.endswith("battery_charged_wh,battery_discharged_wh")
    rows = dict(kpi_rows(with_b))
    c = with_b.community()
    label = "battery throughput: charged / discharged (losses)"
    assert rows[label].startswith(f"{c['battery_charged_wh'] / 1000:,.1f} kWh / ")
    assert rows[label].endswith("in 3 households")
    assert label not in dict(kpi_rows(without))
    page = render_html(with_b)
    assert "into batteries (kWh)" in page and "from batteries (kWh)" in page
    assert "into batteries (kWh)" not in render_html(without)
    # `gridnode sim compare` without → with: the batteries' throughput appears as the difference
    line = next(x for x in compare(without, with_b).splitlines() if x.startswith("battery charged"))
    assert f"+{c['battery_charged_wh'] / 1000:,.1f} kWh" in line


def test_battery_runs_are_deterministic() -> None:
    sc = _afternoon(days=1 / 8, start_hour=17.0)  # discharging into the evening
    first = run_inproc(sc)
    assert first.community()["battery_discharged_wh"] > 0
    assert results_digest(run_inproc(sc)) == results_digest(first)
