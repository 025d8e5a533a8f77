"""Meter data: the shipped real data set and a household's own meter history files.

This subpackage is the only place in :mod:`forecasting` that reads files (it is the data *source*;
everything else takes a :class:`~forecasting.series.MeterHistory`). It never writes, never downloads
and never reads the clock.

**Shipped data set** (``uci_pvdaq50_15min.parquet``, provenance and licences in ``README.md`` next to
it): one real household's load (UCI, Sceaux) with real PV (NREL PVDAQ system 50, Golden CO),
15-minute mean power, 2007-04-15 → 2009-12-31 local standard time (UTC-7). :func:`load_shipped`.

**Meter history files** (:func:`load_meter_history`), CSV (optionally ``.gz``) or Parquet, one row per
interval on a regular grid, columns:

=============  ===========================================================================
``time_s``     unix seconds UTC of the interval start (int) — or ``timestamp``: ISO 8601 with
               an offset (``2009-06-01T12:00:00+02:00``)
``net_w``      mean net power in W, export ``+`` / import ``-`` (when only the net is metered)
``pv_w``       mean PV generation in W (``>= 0``), together with ``load_w``
``load_w``     mean consumption in W (``>= 0``)
=============  ===========================================================================

Either ``net_w`` or both ``pv_w`` and ``load_w`` must be present. Rows must be sorted, evenly
spaced (the spacing must divide a day) and complete; short gaps (up to ``max_gap_steps``) are filled
linearly, longer gaps are an error. Other columns (flags, …) are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

from forecasting.series import FloatArray, MeterHistory
from market.errors import InvalidInput

__all__ = [
    "SHIPPED_FILE",
    "SHIPPED_LATITUDE",
    "SHIPPED_LONGITUDE",
    "SHIPPED_UTC_OFFSET_S",
    "load_meter_history",
    "load_shipped",
]

SHIPPED_FILE: Final = Path(__file__).with_name("uci_pvdaq50_15min.parquet")
#: Site of the shipped PV system (NREL PVDAQ system 50, Golden, Colorado).
SHIPPED_LATITUDE: Final = 39.742
SHIPPED_LONGITUDE: Final = -105.179
SHIPPED_UTC_OFFSET_S: Final = -7 * 3600


def load_shipped(
    *, step_s: int = 900, start_s: int | None = None, end_s: int | None = None
) -> MeterHistory:
    """The shipped real household (PV and load metered), resampled to ``step_s`` (a multiple of
    900), optionally cut to ``[start_s, end_s)``."""
    table = pd.read_parquet(SHIPPED_FILE)
    history = MeterHistory.from_components(
        table["pv_w"].to_numpy(dtype=np.float64),
        table["load_w"].to_numpy(dtype=np.float64),
        start_s=int(table["time_s"].iloc[0]),
        step_s=900,
        utc_offset_s=SHIPPED_UTC_OFFSET_S,
    )
    if step_s != 900:
        history = history.resample(step_s)
    if start_s is not None or end_s is not None:
        history = history.window(
            history.start_s if start_s is None else start_s,
            history.end_s if end_s is None else end_s,
        )
    return history


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path)
    raise InvalidInput(
        reason="unknown_format",
        subject=str(path),
        expected="a .csv, .csv.gz or .parquet file",
        found=path.suffix or "no suffix",
    )


def load_meter_history(
    path: str | Path, *, utc_offset_s: int = 0, max_gap_steps: int = 4
) -> MeterHistory:
    """Read a household's meter history file (schema in the module docstring)."""
    path = Path(path)
    table = _read_table(path)
    subject = str(path)
    if "time_s" in table.columns:
        time_s = table["time_s"].to_numpy(dtype=np.int64)
    elif "timestamp" in table.columns:
        stamps = pd.to_datetime(table["timestamp"], utc=True)
        time_s = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.int64
        )
    else:
        raise InvalidInput(
            reason="missing_column", subject=subject, field="time_s",
            expected="a 'time_s' or 'timestamp' column", found=", ".join(map(str, table.columns)),
        )  # fmt: skip
    if len(time_s) < 2:
        raise InvalidInput(
            reason="too_few_rows", subject=subject, expected=">= 2 rows", found=str(len(time_s))
        )
    steps = np.diff(time_s)
    step_s = int(steps.min())
    if step_s <= 0 or np.any(steps % step_s) or 86_400 % step_s:
        raise InvalidInput(
            reason="irregular_time", subject=subject, field="time_s",
            expected="sorted, evenly spaced times whose spacing divides a day",
            found=f"spacings {sorted(set(steps.tolist()))[:5]}",
        )  # fmt: skip
    if int(steps.max()) > step_s * (max_gap_steps + 1):
        raise InvalidInput(
            reason="gap_too_long", subject=subject, field="time_s",
            expected=f"gaps of at most {max_gap_steps} intervals", found=f"{int(steps.max())} s",
        )  # fmt: skip
    grid = np.arange(time_s[0], time_s[-1] + 1, step_s)

    def column(name: str) -> FloatArray:
        values = table[name].to_numpy(dtype=np.float64)
        ok = np.isfinite(values)
        if ok.sum() < 2:
            raise InvalidInput(
                reason="empty_column", subject=subject, field=name, expected="values"
            )
        out: FloatArray = np.interp(grid, time_s[ok], values[ok])
        return out

    if "pv_w" in table.columns and "load_w" in table.columns:
        return MeterHistory.from_components(
            column("pv_w"), column("load_w"), start_s=int(grid[0]), step_s=step_s,
            utc_offset_s=utc_offset_s,
        )  # fmt: skip
    if "net_w" in table.columns:
        return MeterHistory.from_net(
            column("net_w"), start_s=int(grid[0]), step_s=step_s, utc_offset_s=utc_offset_s
        )
    raise InvalidInput(
        reason="missing_column", subject=subject, field="net_w",
        expected="'net_w' or both 'pv_w' and 'load_w'", found=", ".join(map(str, table.columns)),
    )  # fmt: skip
