"""Scenarios of real homes: a folder of the user's own meter files runs end to end (in process, the
ledger's rules and KPIs), its bad files are one line naming the file, row and column, and the
CityLearn homes replay as themselves."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
import pytest

from forecasting.data import load_citylearn_homes, load_meter_folder
from market.errors import InvalidInput
from sims.homes import community_history, home_histories
from sims.inproc import run_inproc
from sims.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_493_622_000  # 2017-05-01 00:00 Pacific standard time (UTC-8), in the CityLearn data
DAYS = 40


def _write_folder(folder: Path) -> None:
    """Three real CityLearn homes, 40 days of May-June 2017, written as a user's exports would
    be: unix seconds and watts; ISO times with their offset and kWh per interval, gzipped;
    Parquet with kW."""
    homes = load_citylearn_homes([2, 6, 11], start_s=T0, end_s=T0 + DAYS * 86_400)
    assert homes.pv_w is not None and homes.load_w is not None
    t = homes.start_s + np.arange(homes.steps) * homes.step_s
    folder.mkdir()
    pd.DataFrame({"time_s": t, "pv_w": homes.pv_w[0], "load_w": homes.load_w[0]}).to_csv(
        folder / "alice.csv", index=False
    )
    stamps = pd.to_datetime(t - 8 * 3600, unit="s").strftime("%Y-%m-%dT%H:%M:%S-08:00")
    table = pd.DataFrame(
        {"timestamp": stamps, "PV_kWh": homes.pv_w[1] / 1000, "Load_kWh": homes.load_w[1] / 1000}
    )
    with gzip.open(folder / "bob.csv.gz", "wt", encoding="utf-8") as f:
        table.to_csv(f, index=False)
    pd.DataFrame(
        {"time_s": t, "pv_kw": homes.pv_w[2] / 1000, "load_kw": homes.load_w[2] / 1000}
    ).to_parquet(folder / "carol.parquet", index=False)


def _scenario(path: Path, **extra: str) -> Path:
    lines = [
        'name = "my-homes"',
        "seed = 3",
        "days = 1",
        'start_day = "2017-06-08"',
        "[market]",
        "slot_seconds = 3600",
        "[households]",
        'source = "meter-folder"',
        f'folder = "{extra.get("folder", "homes")}"',
        f"count = {extra.get('count', '3')}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_folder_of_meter_files_runs_end_to_end(tmp_path: Path) -> None:
    _write_folder(tmp_path / "homes")
    sc = load_scenario(_scenario(tmp_path / "mine.toml"))
    assert sc.home_source == "meter-folder" and sc.home_ids == ("alice", "bob", "carol")
    assert sc.slot_seconds == 3600 and sc.site.latitude is None  # nothing says where they are
    specs = sc.household_specs()
    assert [s.home for s in specs] == ["alice", "bob", "carol"]
    assert all(s.pv_kwp > 0 for s in specs)  # the peak of each home's own PV
    # each household replays its own file, whatever its shape (the same numbers as the data)
    files = load_meter_folder(tmp_path / "homes")
    homes = home_histories(sc)
    for name, h in files.items():
        np.testing.assert_allclose(homes[name].net_w, h.net_w, atol=1e-9)
    result = run_inproc(sc)
    assert result.slots_done == 24 and not result.interrupted
    assert result.ledger_agreement is True and result.conservation_ok is True, result.notes
    assert [h.home for h in result.households] == ["alice", "bob", "carol"]
    c = result.community()
    assert c["homes"] == 3 and c["household_weeks"] == 3
    assert c["pv_wh"] > 0 and c["load_wh"] > 0
    assert sum(s.orders_submitted for s in result.slots) > 0  # they bid (profile-qr: 35 days in)


def test_more_households_than_files_reuse_the_homes_a_week_earlier(tmp_path: Path) -> None:
    _write_folder(tmp_path / "homes")
    sc = load_scenario(_scenario(tmp_path / "mine.toml", count="5"))
    specs = sc.household_specs()
    assert [(s.home, s.day_offset) for s in specs] == [
        ("alice", 0), ("bob", 0), ("carol", 0), ("alice", -7), ("bob", -7),
    ]  # fmt: skip
    start = T0 + 38 * 86_400
    h = community_history(sc, specs, first_s=start - 20 * 86_400, end_s=start + 86_400,
                          node_anchor_s=start, start_s=start)  # fmt: skip
    np.testing.assert_allclose(h.net_w[3, 7 * 24 :], h.net_w[0, : -7 * 24])  # a week later
    assert not np.allclose(h.net_w[3], h.net_w[0])


def test_a_bad_meter_file_is_one_line_naming_the_file_row_and_column(tmp_path: Path) -> None:
    _write_folder(tmp_path / "homes")
    bad = tmp_path / "homes" / "alice.csv"
    rows = bad.read_text(encoding="utf-8").splitlines()
    fields = rows[5].split(",")
    fields[2] = "n/a"  # load_w of the 5th data row (row 6 as a spreadsheet counts)
    rows[5] = ",".join(fields)
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        load_scenario(_scenario(tmp_path / "mine.toml"))
    assert (info.value.reason, info.value.field) == ("not_a_number", "load_w")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gridnode", "sim", str(tmp_path / "mine.toml"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "alice.csv row 6" in lines[0] and "load_w" in lines[0], lines
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_folder_too_short_for_the_scenario_is_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "homes")
    path = _scenario(tmp_path / "mine.toml")
    path.write_text(path.read_text().replace("2017-06-08", "2017-06-30"), encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        run_inproc(load_scenario(path))
    assert info.value.reason == "outside_the_data" and info.value.field == "start_day"
    assert "\n" not in str(info.value)


def test_citylearn_homes_replay_as_themselves() -> None:
    sc = load_scenario(ROOT / "sims" / "scenarios" / "homes-spring.toml", days=1.0)
    specs = sc.household_specs()
    start = T0 - 28 * 86_400 + 2 * 86_400  # 2017-04-03, the scenario's start day
    h = community_history(sc, specs, first_s=start - 3 * 86_400, end_s=start + 86_400,
                          node_anchor_s=start, start_s=start)  # fmt: skip
    data = load_citylearn_homes(start_s=start - 3 * 86_400, end_s=start + 86_400)
    assert data.pv_w is not None and data.load_w is not None and h.load_w is not None
    for i, spec in enumerate(specs):
        home = int(spec.home.split("-")[1]) - 1
        np.testing.assert_array_equal(h.load_w[i], data.load_w[home])
        np.testing.assert_array_equal(
            h.net_w[i], data.pv_w[home] * spec.pv_scale - data.load_w[home]
        )
