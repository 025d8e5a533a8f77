"""The shipped CityLearn homes: calendar, quality flags, loader, and a byte-identical rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from forecasting.data import (
    CITYLEARN_CLEAN_HOMES,
    CITYLEARN_FILE,
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    CITYLEARN_UTC_OFFSET_S,
    load_citylearn_homes,
)
from forecasting.data.build_citylearn import FLAG_DST_REPEATED, FLAG_LOAD_NEAR_ZERO, build, write
from forecasting.solar import clear_sky_ghi_w_m2
from market.errors import UsageError


def test_seventeen_homes_on_a_gap_free_hourly_utc_year() -> None:
    table = pd.read_parquet(CITYLEARN_FILE)
    assert sorted(table["home"].unique().tolist()) == list(range(1, 18))
    for _, g in table.groupby("home"):
        t = g["time_s"].to_numpy()
        assert len(t) == 8760 and np.all(np.diff(t) == 3600)
    # 2016-08-01 00:00 PDT is 07:00 UTC
    assert int(table["time_s"].min()) == 1_470_034_800
    assert str(table["load_wh"].dtype) == "int16" and str(table["pv_wh"].dtype) == "int16"


def test_quality_flags_match_the_readme() -> None:
    table = pd.read_parquet(CITYLEARN_FILE)
    near_zero = table[(table["flags"] & FLAG_LOAD_NEAR_ZERO) > 0].groupby("home").size()
    assert near_zero[12] > 4500 and near_zero[15] > 4300
    assert 900 < near_zero[7] < 1200 and 900 < near_zero[14] < 1000
    assert all(near_zero.get(h, 0) < 400 for h in CITYLEARN_CLEAN_HOMES)
    assert ((table["flags"] & FLAG_DST_REPEATED) > 0).sum() == 17  # one repeated hour per home
    pv_per_home = table.groupby("home")["pv_wh"].sum()
    assert pv_per_home[15] < 0.05 * pv_per_home[1]


def test_calendar_puts_the_pv_under_the_sun_in_summer_and_winter() -> None:
    """The CSV hours are Pacific wall-clock hours with DST; mapped right, no PV falls in an hour
    when the sun is down, and the PV's daily centroid keeps its place against the sun's all year
    (mapped as standard time it would move by an hour between winter and summer)."""
    h = load_citylearn_homes((2, 9, 16))
    assert h.pv_w is not None
    mid = h.start_s + 3600 * np.arange(h.steps) + 1800
    ghi = clear_sky_ghi_w_m2(mid, latitude=CITYLEARN_LATITUDE, longitude=CITYLEARN_LONGITUDE)
    pv = h.pv_w.sum(axis=0)
    summer = np.r_[0 : 24 * 90, 24 * 230 : h.steps]
    assert pv[summer][ghi[summer] == 0].sum() < 1e-3 * pv[summer].sum()  # an hour early: 4e-3
    tod = (mid + CITYLEARN_UTC_OFFSET_S) % 86_400  # local standard time of day
    lag = []
    for first_day in (10, 150, 250, 340):  # Aug, Dec/Jan, Apr, Jul
        sl = slice(first_day * 24, (first_day + 14) * 24)
        pv_centre = float((tod[sl] * pv[sl]).sum() / pv[sl].sum())
        sun_centre = float((tod[sl] * ghi[sl]).sum() / ghi[sl].sum())
        lag.append(pv_centre - sun_centre)
    assert max(lag) - min(lag) < 2400  # a DST slip would move it by 3600


def test_loader_rows_steps_and_refusals() -> None:
    h = load_citylearn_homes(CITYLEARN_CLEAN_HOMES)
    assert h.households == 13 and h.steps == 8760 and h.has_components
    assert h.utc_offset_s == CITYLEARN_UTC_OFFSET_S
    q = load_citylearn_homes((3,), step_s=900)
    assert q.steps == 4 * 8760
    assert q.load_w is not None and h.load_w is not None
    np.testing.assert_array_equal(q.load_w[0, :8], np.repeat(h.load_w[2, :2], 4))  # home 3
    d = load_citylearn_homes((3,), step_s=86_400)
    assert d.step_s == 86_400 and d.steps == 364
    with pytest.raises(UsageError):
        load_citylearn_homes((0, 18))


def test_build_is_byte_identical(tmp_path: Path) -> None:
    """Rebuild from the wheel (pip download, never installed) twice: the same bytes each time, and
    the shipped file's bytes when pandas and pyarrow are the versions that wrote it (the file's
    metadata names them: a new release changes those bytes only); with other versions, the same
    table (columns, dtypes, values) as shipped."""
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "citylearn==2.0.0",
         "-d", str(tmp_path)],
        capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    wheels = sorted(tmp_path.glob("*.whl"))
    if got.returncode != 0 or len(wheels) != 1:
        pytest.skip("the citylearn 2.0.0 wheel could not be downloaded here")
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write(build(wheels[0]), first)
    write(build(wheels[0]), second)
    assert first.read_bytes() == second.read_bytes()
    if _writers(first) == _writers(CITYLEARN_FILE):
        assert first.read_bytes() == CITYLEARN_FILE.read_bytes()
    else:
        pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(CITYLEARN_FILE))


def _writers(path: Path) -> tuple[str, str]:
    """The pyarrow that wrote a Parquet file and the pandas version in its metadata."""
    meta = pq.ParquetFile(path).metadata
    pandas_meta = json.loads(meta.metadata[b"pandas"])
    return str(meta.created_by), str(pandas_meta["pandas_version"])
