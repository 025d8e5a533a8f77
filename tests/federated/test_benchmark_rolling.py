"""The federated benchmark's evaluation runs the way the daemon does (``benchmarks/federated.py``,
docs/federated.md "Measured"): rounds continue daily through the evaluation, a household forecasts
with the last model committed by the day it forecasts, an established household's models are
refitted every day (once at the cutoff in ``--frozen`` mode) and a cold-start household always has
exactly 14 days of its own history before each origin."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from forecasting.data import CITYLEARN_CLEAN_HOMES, load_citylearn_homes
from forecasting.models import SeasonalNaive
from forecasting.series import SECONDS_PER_DAY, MeterHistory
from tests.benchscripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("federated")


def test_rolling_rounds_are_daily_through_the_evaluation(bench: ModuleType) -> None:
    frozen, rolling = bench.round_times(False), bench.round_times(True)
    assert frozen == bench.ROUNDS_S and frozen[-1] == bench.CUTOFF_S
    assert rolling[: len(frozen)] == frozen
    assert set(np.diff(rolling)) == {SECONDS_PER_DAY}
    assert rolling[-1] == bench.EVAL_DAYS_S[-1] < bench.EVAL_END_S
    # a household forecasts a day with the model of that day's round, never a later one
    models: dict[int, Any] = {t: f"model@{t}" for t in rolling}
    for day in bench.EVAL_DAYS_S[:3]:
        assert bench.in_force(models, day) == f"model@{day}"
        assert bench.in_force(models, day + 3600) == f"model@{day}"
    frozen_models = {t: f"model@{t}" for t in frozen}
    assert bench.in_force(frozen_models, bench.EVAL_DAYS_S[-1]) == f"model@{bench.CUTOFF_S}"


@pytest.mark.parametrize(("cold", "refit_daily"), [(False, True), (False, False), (True, True)])
def test_refit_cadence_and_cold_history(bench: ModuleType, cold: bool, refit_daily: bool) -> None:
    homes = load_citylearn_homes(CITYLEARN_CLEAN_HOMES).select([0])
    fits: list[tuple[int, MeterHistory]] = []

    def make(past: MeterHistory, day_s: int) -> tuple[Any, ...]:
        fits.append((day_s, past))
        fitted = SeasonalNaive(period_days=1, train_days=7).fit(past)
        return fitted, fitted, fitted

    out = bench.evaluate(homes, make, cold=cold, refit_daily=refit_daily, horizons=("da",))
    days = bench.EVAL_DAYS_S
    if refit_daily:
        assert [d for d, _ in fits] == list(days)
    else:
        assert [d for d, _ in fits] == [days[0]]
    for day, past in fits:
        assert past.end_s == day
        if cold:
            assert past.steps == bench.COLD_DAYS * past.steps_per_day
        else:
            assert past.start_s == homes.start_s
    assert out["samples_da"] == len(days) * homes.steps_per_day
    assert out["da_local"] == out["da_fed"] > 0
