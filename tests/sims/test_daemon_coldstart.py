"""Cold-start households in the real-daemon engine (issue 13): a real-home household whose group
declares ``history_days = N`` gets a meter file that begins ``N`` days before the first measured
slot — the same cut as the in-process engine's cohorts (``sims.training.cohorts``) — so the daemon
knows nothing earlier; an established household's file holds its whole history. The shipped
household (a replay meter that serves the whole shipped history) is refused with cold-start groups,
before anything starts. (A run of real daemons with cold-start households: ``-m slow`` in
``tests/sims/test_daemon_rounds.py``.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from forecasting.data.meter_files import read_meter_file
from market.errors import UsageError
from sims.daemon_engine import METER_FILE, _data_start_s, _home_row, run_daemons
from sims.homes import home_histories, write_meter_file
from sims.scenario import load_scenario
from sims.training import DAY_S, cohorts

ROOT = Path(__file__).resolve().parents[2]
FED = ROOT / "sims" / "scenarios" / "homes-fed-federated.toml"


def test_a_cold_start_households_file_begins_history_days_before_the_first_slot() -> None:
    sc = load_scenario(FED)
    specs = sc.household_specs()
    first = _data_start_s(sc)
    cold = [s for s in specs if s.history_days]
    warm = [s for s in specs if not s.history_days]
    assert cold and warm
    # the in-process engine cuts its cohorts at the same second
    starts = {c.start_s for c in cohorts(specs, first)}
    for spec in cold:
        row = _home_row(sc, spec)
        assert row.start_s == first - spec.history_days * DAY_S
        assert row.start_s in starts
        # the same data as the whole history from there on
        home = home_histories(sc)[spec.home]
        i = (row.start_s - (home.start_s - spec.day_offset * DAY_S)) // home.step_s
        assert home.load_w is not None and row.load_w is not None
        np.testing.assert_array_equal(row.load_w[0], home.load_w[0, i:] * spec.load_scale)
    for spec in warm:
        home = home_histories(sc)[spec.home]
        row = _home_row(sc, spec)
        assert row.start_s == home.start_s - spec.day_offset * DAY_S
        assert row.start_s < first - 200 * DAY_S  # months of history


def test_the_meter_file_written_holds_only_the_cold_start_window(tmp_path: Path) -> None:
    sc = load_scenario(FED)
    spec = next(s for s in sc.household_specs() if s.history_days)
    row = _home_row(sc, spec)
    write_meter_file(row, tmp_path / METER_FILE, shift_s=0)
    back = read_meter_file(tmp_path / METER_FILE).history  # the daemon's reader
    assert back.start_s == _data_start_s(sc) - spec.history_days * DAY_S
    assert back.steps == row.steps


def test_the_shipped_household_with_cold_start_groups_is_refused(tmp_path: Path) -> None:
    shipped = load_scenario(ROOT / "sims" / "scenarios" / "small.toml", households=3, seed=7)
    groups = tuple(dataclasses.replace(g, history_days=14) for g in shipped.groups)
    with pytest.raises(UsageError, match="shipped household run only in the in-process engine"):
        run_daemons(dataclasses.replace(shipped, groups=groups), tmp_path / "x")
    assert not (tmp_path / "x").exists()
