"""Meter histories and data loading: the shipped real data set and household meter files."""

from __future__ import annotations

import calendar
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data import SHIPPED_FILE, load_meter_history
from forecasting.series import MeterHistory, energy_wh
from market.errors import InvalidInput, UsageError
from tests.forecasting.conftest import local_midnight_utc


def test_shipped_file_is_small_and_real(shipped_15min: MeterHistory) -> None:
    assert SHIPPED_FILE.stat().st_size < 3_000_000
    h = shipped_15min
    assert h.step_s == 900 and h.households == 1 and h.has_components
    assert h.start_s == local_midnight_utc(2007, 4, 15)
    assert h.end_s == local_midnight_utc(2010, 1, 1)
    assert h.pv_w is not None and h.load_w is not None
    assert (h.pv_w >= 0).all() and (h.load_w > 0).all()
    # real UCI load averages about 1.1 kW; PVDAQ 50 peaks at about 3.4 kW
    assert 900 < h.load_w.mean() < 1300
    assert 3000 < h.pv_w.max() < 3500


def test_shipped_pv_is_zero_at_night_and_peaks_near_noon(shipped_15min: MeterHistory) -> None:
    h = shipped_15min
    assert h.pv_w is not None
    tod = h.step_of_day(np.arange(h.steps))
    by_tod = np.array([h.pv_w[0, tod == k].mean() for k in range(96)])
    assert by_tod[:16].max() < 5 and by_tod[-12:].max() < 5  # 00:00-04:00 and 21:00-24:00
    assert 40 <= int(np.argmax(by_tod)) <= 52  # peak between 10:00 and 13:00 standard time


def test_net_is_pv_minus_load_and_resampling_keeps_means(shipped_15min: MeterHistory) -> None:
    h = shipped_15min.window(local_midnight_utc(2009, 1, 1), local_midnight_utc(2009, 2, 1))
    assert h.pv_w is not None and h.load_w is not None
    np.testing.assert_array_equal(h.net_w, h.pv_w - h.load_w)
    hourly = h.resample(3600)
    assert hourly.steps == h.steps // 4
    assert hourly.net_w.mean() == pytest.approx(h.net_w.mean())
    assert hourly.net_w[0, 0] == pytest.approx(h.net_w[0, :4].mean())


@given(st.integers(min_value=0, max_value=4_000_000_000), st.integers(-12, 14))
@settings(max_examples=200)
def test_weekend_and_time_of_day_match_the_calendar(unix_s: int, offset_h: int) -> None:
    start = unix_s - unix_s % 900
    h = MeterHistory.from_net(np.zeros(1), start_s=start, step_s=900, utc_offset_s=offset_h * 3600)
    local = pd.Timestamp(start + offset_h * 3600, unit="s")
    assert bool(h.is_weekend(0)) == (local.weekday() >= 5)
    assert int(h.step_of_day(0)) == (local.hour * 60 + local.minute) // 15


def test_histories_reject_gaps_and_bad_steps() -> None:
    with pytest.raises(InvalidInput) as info:
        MeterHistory.from_net([1.0, float("nan")], start_s=0, step_s=900)
    assert info.value.reason == "not_finite"
    with pytest.raises(UsageError):
        MeterHistory.from_net([1.0], start_s=0, step_s=7000)
    h = MeterHistory.from_net(np.arange(8.0), start_s=0, step_s=900)
    with pytest.raises(UsageError):
        h.resample(1000)
    with pytest.raises(UsageError):
        h.window(0, 900 * 9)


def test_energy_wh_converts_mean_power_to_integer_wh() -> None:
    assert energy_wh([1000.0, -400.0, 2.0], 900).tolist() == [250, -100, 0]
    assert energy_wh(1000.0, 3600).item() == 1000


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.name.endswith(".parquet"):
        df.to_parquet(path)
    elif path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            df.to_csv(f, index=False)
    else:
        df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["meter.csv", "meter.csv.gz", "meter.parquet"])
def test_meter_history_files_round_trip(tmp_path: Path, name: str) -> None:
    t0 = calendar.timegm((2024, 5, 1, 0, 0, 0))
    times = t0 + 900 * np.arange(10)
    pv = np.linspace(0, 900, 10)
    load = np.full(10, 300.0)
    path = _write(
        pd.DataFrame({"time_s": times, "pv_w": pv, "load_w": load, "flag": 0}), tmp_path / name
    )
    h = load_meter_history(path, utc_offset_s=3600)
    assert (h.start_s, h.step_s, h.steps, h.utc_offset_s) == (t0, 900, 10, 3600)
    np.testing.assert_allclose(h.net_w[0], pv - load)


def test_meter_history_accepts_iso_timestamps_and_fills_short_gaps(tmp_path: Path) -> None:
    stamps = ["2024-05-01T00:00:00+02:00", "2024-05-01T01:00:00+02:00", "2024-05-01T03:00:00+02:00"]
    path = _write(
        pd.DataFrame({"timestamp": stamps, "net_w": [100.0, 200.0, 400.0]}), tmp_path / "m.csv"
    )
    h = load_meter_history(path)
    assert h.start_s == calendar.timegm((2024, 4, 30, 22, 0, 0))
    assert h.step_s == 3600 and h.net_w.tolist() == [[100.0, 200.0, 300.0, 400.0]]
    assert not h.has_components


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pd.DataFrame({"time_s": [0, 900], "power": [1.0, 2.0]}), "missing_column"),
        (pd.DataFrame({"when": [0, 900], "net_w": [1.0, 2.0]}), "missing_column"),
        (pd.DataFrame({"time_s": [0, 900, 1500], "net_w": [1.0, 2.0, 3.0]}), "irregular_time"),
        (pd.DataFrame({"time_s": [0, 900, 90_000], "net_w": [1.0, 2.0, 3.0]}), "gap_too_long"),
    ],
)
def test_bad_meter_files_are_rejected_with_a_reason(
    tmp_path: Path, frame: pd.DataFrame, reason: str
) -> None:
    path = _write(frame, tmp_path / "bad.csv")
    with pytest.raises(InvalidInput) as info:
        load_meter_history(path)
    assert info.value.reason == reason


def test_unknown_file_format_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "meter.xlsx"
    path.write_bytes(b"")
    with pytest.raises(InvalidInput) as info:
        load_meter_history(path)
    assert info.value.reason == "unknown_format"
