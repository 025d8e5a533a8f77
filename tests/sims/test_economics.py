"""Economics reported honestly: the KPIs' definitions hold exactly on a real run, policies compare,
and ``gridnode sim SCENARIO --policies …`` writes every run with the comparison."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from market.settlement import HouseholdBill, Tariff
from sims.compare import compare, load_result
from sims.economics import comparison, table
from sims.inproc import run_inproc
from sims.ledger_kpis import over_contracted
from sims.report import kpi_rows, render_html
from sims.results import SimResult
from sims.scenario import load_scenario
from tests.sims.test_report import make_result

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "sims" / "scenarios" / "small.toml"
TARIFF = Tariff(retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000,
                grid_fee_micro_per_kwh=10_000)  # fmt: skip


def bill(measured: int, bought: int = 0, sold: int = 0) -> HouseholdBill:
    return HouseholdBill(
        household="h", measured_net_wh=measured, bought_p2p_wh=bought, sold_p2p_wh=sold,
        imbalance_wh=measured - (sold - bought), netted_wh=0, grid_import_wh=0, grid_export_wh=0,
        paid_p2p_micro=0, received_p2p_micro=0, grid_fee_micro=0, netting_micro=0,
        grid_import_micro=0, grid_export_micro=0, bill_micro=0, grid_only_bill_micro=0,
    )  # fmt: skip


def test_over_contracted_is_what_a_contract_could_not_honour() -> None:
    # a seller that sold 500 Wh and delivered 200: 300 Wh bought back at retail, paid 200,000
    assert over_contracted(bill(200, sold=500), 200_000, TARIFF) == (300, 30_000)
    # one that consumed instead: all 500 bought back (its own consumption is its own business)
    assert over_contracted(bill(-100, sold=500), 200_000, TARIFF) == (500, 50_000)
    # a buyer of 400 Wh that used 100: 300 Wh sold back at feed-in after the price and the fee
    assert over_contracted(bill(-100, bought=400), 150_000, TARIFF) == (300, 24_000)
    # a buyer that had surplus after all: everything it bought
    assert over_contracted(bill(50, bought=400), 150_000, TARIFF) == (400, 32_000)
    # contracts honoured (or no contract): nothing
    assert over_contracted(bill(600, sold=500), 200_000, TARIFF) == (0, 0)
    assert over_contracted(bill(-700, bought=400), 200_000, TARIFF) == (0, 0)
    assert over_contracted(bill(-700), None, TARIFF) == (0, 0)


def test_the_comparison_and_its_table() -> None:
    runs = {"forecast": make_result(1), "perfect-foresight": make_result(2)}
    runs = {k: dataclasses.replace(r, policy=k) for k, r in runs.items()}
    comp = comparison(runs)
    pf = runs["perfect-foresight"].community()["savings_micro"]
    for policy, r in runs.items():
        c = r.community()
        assert comp[policy]["savings_micro"] == c["savings_micro"]
        assert comp[policy]["share_of_perfect_foresight"] == pytest.approx(c["savings_micro"] / pf)
        assert comp[policy]["p2p_gains_micro"] == c["savings_micro"] + c["imbalance_cost_micro"]
    text = table(comp)
    assert text.splitlines()[0].startswith("policy") and "perfect-foresight" in text
    assert (
        comparison({"forecast": make_result(1)})["forecast"]["share_of_perfect_foresight"] is None
    )


def test_the_kpis_hold_exactly_on_a_real_run_and_are_reported(tmp_path: Path) -> None:
    sc = load_scenario(SMALL, households=6, days=0.25, seed=7)
    sc = dataclasses.replace(sc, start_hour=9.0)  # daytime: the prosumers sell
    result = run_inproc(sc)
    assert result.ledger_agreement is True and result.conservation_ok is True
    c = result.community()
    # savings = P2P gains − imbalance cost, by definition, exactly
    assert c["savings_micro"] == c["p2p_gains_micro"] - c["imbalance_cost_micro"]
    # every household has one week (a 6-hour run counts as one), whose savings are its savings
    assert c["household_weeks"] == 6
    for h in result.households:
        assert h.weekly_savings_micro == (h.savings_micro,)
        assert 0 <= h.over_contracted_wh <= h.bought_p2p_wh + h.sold_p2p_wh
    assert c["household_weeks_worse_off"] == sum(h.savings_micro < 0 for h in result.households)
    assert c["homes"] == 1  # all replay the one shipped household
    rows = dict(kpi_rows(result))
    assert "household-weeks worse off than grid-only" in rows
    assert "P2P gains (savings + imbalance cost) / imbalance cost's share" in rows
    # through results.json and back, and into compare
    result.write_json(tmp_path / "results.json")
    again = SimResult.read_json(tmp_path / "results.json")
    assert again.households == result.households and again.community() == c
    assert "household-weeks worse off than grid-only" in compare(result, again)


@pytest.mark.timeout(600)
def test_sim_policies_runs_each_policy_and_writes_the_comparison(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "gridnode", "sim", str(SMALL), "--households", "4", "--days",
         "0.1", "--policies", "forecast,naive-fixed-price,perfect-foresight", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=580, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "share of PF" in proc.stdout and "naive-fixed-price" in proc.stdout
    comp = json.loads((out / "economics.json").read_text(encoding="utf-8"))
    assert list(comp) == ["forecast", "naive-fixed-price", "perfect-foresight"]
    for policy in comp:
        run = load_result(out / policy)
        assert run.policy == policy and run.policies == comp
        assert run.community()["savings_micro"] == comp[policy]["savings_micro"]
        assert "Policies on this scenario" in render_html(run)
    assert comp["perfect-foresight"]["share_of_perfect_foresight"] in (None, 1.0)
    assert "policies run on" in compare(load_result(out / "forecast"),
                                        load_result(out / "perfect-foresight"))  # fmt: skip
    bad = subprocess.run(
        [sys.executable, "-m", "gridnode", "sim", str(SMALL), "--policies", "forecast,psychic"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "psychic" in bad.stderr
