"""``benchmarks/weather_headroom.py``: the prediction-gap check finds an exact shift (0) and a real
forecast (> 0), the day-ahead reference is the 14-day same-hour median, the load bound's in-sample
fit finds a weather effect that is there, and a missing ``--wheel`` is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.benchscripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "weather_headroom.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("weather_headroom")


def _weather(rng: np.random.Generator, hours: int, noise: float) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in (
        "Outdoor Drybulb Temperature [C]",
        "Relative Humidity [%]",
        "Diffuse Solar Radiation [W/m2]",
        "Direct Solar Radiation [W/m2]",
    ):
        measured = rng.uniform(0.0, 30.0, hours)
        out[name] = measured
        for h in (6, 12, 24):
            pred = np.zeros(hours)
            pred[:-h] = measured[h:] + rng.normal(0.0, noise, hours - h) if noise else measured[h:]
            out[f"{h}h Prediction {name}"] = pred
    return out


def test_prediction_gaps_tell_a_shift_from_a_forecast(bench: ModuleType) -> None:
    rng = np.random.default_rng(1)
    assert all(g == 0.0 for _, _, g in bench.prediction_gaps(_weather(rng, 500, 0.0)))
    assert all(g > 0.1 for _, _, g in bench.prediction_gaps(_weather(rng, 500, 1.0)))


def test_profile_forecast_is_the_14_day_same_hour_median(bench: ModuleType) -> None:
    rng = np.random.default_rng(2)
    series = rng.uniform(0.0, 1000.0, 24 * 30)
    ref = bench.profile_forecast(series)
    assert np.isnan(ref[: 24 * 14]).all()
    days = series.reshape(-1, 24)
    assert ref[24 * 20 + 7] == np.median(days[6:20, 7])


def test_load_bound_finds_a_weather_effect_that_is_there(bench: ModuleType) -> None:
    rng = np.random.default_rng(3)
    hours = 24 * 120
    weather = _weather(rng, hours, 0.0)
    temp = weather["Outdoor Drybulb Temperature [C]"]
    load = 300.0 + 40.0 * temp + rng.normal(0.0, 20.0, hours)
    ref, fitted, in_sample = bench.load_bound(load, bench._weather_features(weather))
    assert fitted < 0.3 * ref and in_sample <= fitted * 1.05
    # and none when the load ignores the weather
    flat = 300.0 + rng.normal(0.0, 50.0, hours)
    ref, _, in_sample = bench.load_bound(flat, bench._weather_features(weather))
    assert in_sample > 0.9 * ref


def test_a_missing_wheel_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(BENCH), "--wheel", str(tmp_path / "nope.whl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "no such file" in r.stderr and "Traceback" not in r.stderr
