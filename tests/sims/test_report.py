"""The report writer and ``compare``: files, round trips, offline HTML, deterministic bytes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sims.compare import compare, load_result
from sims.report import kpi_rows, render_html, write_outputs
from sims.results import FaultEvent, HouseholdKPI, SimResult, SlotRecord


def make_result(seed: int = 1, *, slots: int = 12, households: int = 5) -> SimResult:
    rng = random.Random(seed)
    start = 1_800_000_000 - 1_800_000_000 % 900
    recs = []
    for i in range(slots):
        pv = rng.randrange(0, 4000)
        load = rng.randrange(500, 3000)
        vol = rng.randrange(0, min(pv, load) + 1)
        price = None if vol == 0 else rng.randrange(80_000, 300_000)
        recs.append(
            SlotRecord(
                slot=start // 900 + i,
                start_s=start + 900 * i,
                clearing_price_micro_per_kwh=price,
                volume_wh=vol,
                trades=1 if vol else 0,
                orders=households,
                orders_submitted=households + (1 if i == 3 else 0),
                pv_wh=pv,
                load_wh=load,
                net_wh=pv - load,
                grid_import_wh=max(0, load - pv),
                grid_export_wh=max(0, pv - load),
                imbalance_wh=rng.randrange(0, 800),
                imbalance_cost_micro=rng.randrange(-20_000, 100_000),
                forecast_abs_error_wh=rng.randrange(0, 500),
                commit_height=10 + 5 * i,
            )
        )
    hh = []
    for j in range(households):
        grid_only = rng.randrange(100_000, 2_000_000)
        hh.append(
            HouseholdKPI(
                household=f"{j:064x}",
                name=f"h{j:03d}",
                pv_kwp=rng.choice([0.0, 3.0, 6.5]),
                battery_kwh=0.0,
                bought_p2p_wh=rng.randrange(0, 5000),
                sold_p2p_wh=rng.randrange(0, 5000),
                grid_import_wh=rng.randrange(0, 9000),
                grid_export_wh=rng.randrange(0, 9000),
                pv_wh=rng.randrange(0, 20000),
                load_wh=rng.randrange(1000, 20000),
                bill_micro=grid_only - rng.randrange(0, 100_000),
                grid_only_bill_micro=grid_only,
                imbalance_wh=rng.randrange(0, 4000),
                imbalance_cost_micro=rng.randrange(-50_000, 500_000),
            )
        )
    return SimResult(
        scenario="unit <test> & co",
        engine="daemons",
        seed=seed,
        rule="pay_as_clear",
        policy="forecast",
        slot_seconds=900,
        slots_planned=slots,
        slots_done=slots,
        interrupted=False,
        wall_seconds=12.5,
        households=hh,
        slots=recs,
        faults=[FaultEvent(start + 1800, "crash", "v1"), FaultEvent(start + 3600, "restart", "v1")],
        blocks_committed=70,
        commit_latency_ms_p50=900.0,
        commit_latency_ms_p99=2500.0,
        ledger_agreement=True,
        head_hash="ab" * 32,
        state_digest="cd" * 32,
        conservation_ok=True,
        notes=["a note"],
    )


def test_write_outputs_writes_every_file_and_the_tables_round_trip(tmp_path: Path) -> None:
    result = make_result()
    trades = [{"slot": 1, "buyer": "a", "seller": "b", "energy_wh": 5, "price_micro_per_kwh": 9}]
    report = write_outputs(result, tmp_path / "run", trades=trades)
    out = tmp_path / "run"
    assert report == out / "report.html"
    for name in ("slots", "households", "trades"):
        assert (out / f"{name}.parquet").is_file()
        assert (out / f"{name}.csv").is_file()
    slots = pd.read_parquet(out / "slots.parquet")
    assert list(slots["slot"]) == [s.slot for s in result.slots]
    assert list(slots["volume_wh"]) == [s.volume_wh for s in result.slots]
    prices = [None if pd.isna(p) else int(p) for p in slots["clearing_price_micro_per_kwh"]]
    assert prices == [s.clearing_price_micro_per_kwh for s in result.slots]
    hh = pd.read_csv(out / "households.csv")
    assert list(hh["savings_micro"]) == [h.savings_micro for h in result.households]
    assert pd.read_parquet(out / "trades.parquet")["energy_wh"].tolist() == [5]
    back = SimResult.read_json(out / "results.json")
    assert back == result
    assert load_result(out) == result
    assert load_result(out / "results.json") == result


def test_report_is_self_contained_and_names_every_figure(tmp_path: Path) -> None:
    text = write_outputs(make_result(), tmp_path).read_text(encoding="utf-8")
    assert len(text) > 1_000_000  # plotly.js is inside the file
    assert text.count("Plotly.newPlot") == 5
    for fig in ("price-volume", "energy-stack", "savings", "forecast", "faults"):
        assert f'id="fig-{fig}"' in text
    # nothing fetched from the network: no external script or stylesheet
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=[\"']https?:", text)
    assert "cdn.plot.ly" not in text.replace(
        "https://cdn.plot.ly", ""
    )  # only in plotly.js comments
    assert "unit &lt;test&gt; &amp; co" in text  # escaped
    assert "savings vs grid-only" in text


def test_report_bytes_are_deterministic(tmp_path: Path) -> None:
    a = write_outputs(make_result(3), tmp_path / "a").read_bytes()
    b = write_outputs(make_result(3), tmp_path / "b").read_bytes()
    assert a == b
    assert a != write_outputs(make_result(4), tmp_path / "c").read_bytes()


def test_report_flags_disagreement_and_interruption() -> None:
    r = make_result()
    r.ledger_agreement = False
    r.interrupted = True
    text = render_html(r)
    assert "class='v bad'>NO<" in text
    assert "INTERRUPTED" in text


def test_empty_run_still_renders(tmp_path: Path) -> None:
    r = make_result(slots=0, households=0)
    r.faults = []
    path = write_outputs(r, tmp_path)
    assert "Key figures" in path.read_text(encoding="utf-8")
    assert pd.read_csv(tmp_path / "slots.csv").empty


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_kpi_rows_show_the_community_savings(seed: int) -> None:
    r = make_result(seed, slots=3, households=3)
    rows = dict(kpi_rows(r))
    saved = r.community()["savings_micro"]
    assert rows["savings vs grid-only"].startswith(f"{saved / 1_000_000:,.2f} ¤")
    assert rows["orders committed in their slot"].endswith("%")


def test_compare_shows_both_runs_and_the_difference() -> None:
    a = make_result(1)
    b = make_result(2)
    b.policy = "perfect"
    text = compare(a, b)
    ca, cb = a.community(), b.community()
    diff = (cb["savings_micro"] - ca["savings_micro"]) / 1_000_000
    assert f"{diff:+,.2f}" in text
    assert "perfect" in text and "forecast" in text
    lines = text.splitlines()
    assert any(line.startswith("savings vs grid-only") for line in lines)
    assert len({len(line) for line in lines if "│" in line}) == 1  # aligned columns


def test_compare_cli_reads_run_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sims.compare import register

    write_outputs(make_result(1), tmp_path / "a")
    make_result(2).write_json(tmp_path / "b.json")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["compare", str(tmp_path / "a"), str(tmp_path / "b.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "self-sufficiency" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", str(tmp_path / "a")])
    json.loads((tmp_path / "a" / "results.json").read_text(encoding="utf-8"))


def test_imbalance_columns_key_figure_and_compare_row(tmp_path: Path) -> None:
    a, b = make_result(1), make_result(2)
    write_outputs(b, tmp_path / "b")
    slots = pd.read_parquet(tmp_path / "b" / "slots.parquet")
    assert slots["imbalance_wh"].tolist() == [s.imbalance_wh for s in b.slots]
    assert slots["imbalance_cost_micro"].tolist() == [s.imbalance_cost_micro for s in b.slots]
    hh = pd.read_csv(tmp_path / "b" / "households.csv")
    assert hh["imbalance_wh"].tolist() == [h.imbalance_wh for h in b.households]
    assert hh["imbalance_cost_micro"].tolist() == [h.imbalance_cost_micro for h in b.households]
    back = SimResult.read_json(tmp_path / "b" / "results.json")
    assert [h.imbalance_cost_micro for h in back.households] == [
        h.imbalance_cost_micro for h in b.households
    ]
    c = b.community()
    assert c["imbalance_wh"] == sum(h.imbalance_wh for h in b.households)
    assert c["imbalance_cost_micro"] == sum(h.imbalance_cost_micro for h in b.households)
    row = dict(kpi_rows(b))["imbalance of traders: energy / cost vs market price"]
    assert row == f"{c['imbalance_wh'] / 1000:,.1f} kWh / {c['imbalance_cost_micro'] / 1e6:,.2f} ¤"
    assert "imbalance of traders" in render_html(b)
    line = next(x for x in compare(a, b).splitlines() if x.startswith("imbalance cost"))
    diff = (c["imbalance_cost_micro"] - a.community()["imbalance_cost_micro"]) / 1_000_000
    assert line.rstrip().endswith(f"{diff:+,.2f} ¤")


@pytest.mark.parametrize("old", [1, 2])
def test_results_without_the_newer_figures_are_refused(tmp_path: Path, old: int) -> None:
    make_result(1).write_json(tmp_path / "results.json")
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    doc["version"] = old  # 1: before the imbalance KPIs; 2: before over-contracts and weeks
    (tmp_path / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=f"results version {old} is not one of \\(3, 4\\)"):
        SimResult.read_json(tmp_path / "results.json")
