"""Meter data: the shipped real data sets and a household's own meter history files.

This subpackage is the only place in :mod:`forecasting` that reads files (it is the data *source*;
everything else takes a :class:`~forecasting.series.MeterHistory`). It never writes, never downloads
and never reads the clock. Provenance, licences and rebuild commands: ``README.md`` next to it.

* **One real household** (``uci_pvdaq50_15min.parquet``): UCI household load (Sceaux) with real PV
  (NREL PVDAQ system 50, Golden CO), 15-minute mean power, 2007-04-15 → 2009-12-31 local standard
  time (UTC-7). :func:`load_shipped`.
* **17 real homes** (``citylearn_homes.parquet``, from the ``citylearn==2.0.0`` wheel): hourly load
  and rooftop PV of 17 single-family homes in Fontana, California, 2016-08-01 → 2017-07-31 (Pacific
  time; ``time_s`` is UTC). :func:`load_citylearn_homes`; :data:`CITYLEARN_CLEAN_HOMES` leaves out
  the four homes with long outages or broken PV.
* **A household's own files** (:mod:`forecasting.data.meter_files`): :func:`load_meter_history` for
  one file, :func:`load_meter_folder` for a folder of them (one household per file),
  :func:`align_histories` to put them on one grid. Schema in that module and in
  ``docs/forecasting.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

from forecasting.data.meter_files import (
    MeterFile,
    align_histories,
    load_meter_folder,
    load_meter_history,
    read_meter_file,
)
from forecasting.series import MeterHistory
from market.errors import UsageError

__all__ = [
    "CITYLEARN_CLEAN_HOMES",
    "CITYLEARN_FILE",
    "CITYLEARN_HOMES",
    "CITYLEARN_LATITUDE",
    "CITYLEARN_LONGITUDE",
    "CITYLEARN_UTC_OFFSET_S",
    "SHIPPED_ARRAYS",
    "SHIPPED_FILE",
    "SHIPPED_LATITUDE",
    "SHIPPED_LONGITUDE",
    "SHIPPED_UTC_OFFSET_S",
    "MeterFile",
    "align_histories",
    "load_citylearn_homes",
    "load_meter_folder",
    "load_meter_history",
    "load_shipped",
    "read_meter_file",
]

SHIPPED_FILE: Final = Path(__file__).with_name("uci_pvdaq50_15min.parquet")
#: The same series as numpy arrays (``time_s0``, ``pv_w``, ``load_w``), written by
#: :mod:`forecasting.data.build` beside the Parquet file (a test checks they agree): the daemons and
#: simulations read it with numpy alone, without pandas or pyarrow (``docs/benchmarks.md``).
SHIPPED_ARRAYS: Final = SHIPPED_FILE.with_suffix(".npz")
#: Site of the shipped PV system (NREL PVDAQ system 50, Golden, Colorado).
SHIPPED_LATITUDE: Final = 39.742
SHIPPED_LONGITUDE: Final = -105.179
SHIPPED_UTC_OFFSET_S: Final = -7 * 3600


def load_shipped(
    *, step_s: int = 900, start_s: int | None = None, end_s: int | None = None
) -> MeterHistory:
    """The shipped real household (PV and load metered), resampled to ``step_s`` (a multiple of
    900), optionally cut to ``[start_s, end_s)``."""
    with np.load(SHIPPED_ARRAYS) as arrays:
        history = MeterHistory.from_components(
            arrays["pv_w"].astype(np.float64),
            arrays["load_w"].astype(np.float64),
            start_s=int(arrays["time_s0"]),
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


CITYLEARN_FILE: Final = Path(__file__).with_name("citylearn_homes.parquet")
#: Fontana, California (the Sierra Crest community), Pacific Standard Time (UTC-8).
CITYLEARN_LATITUDE: Final = 34.0922
CITYLEARN_LONGITUDE: Final = -117.435
CITYLEARN_UTC_OFFSET_S: Final = -8 * 3600
CITYLEARN_HOMES: Final = tuple(range(1, 18))
#: Homes without long outages or broken PV (7: 1,150 h of near-zero load, 12: 4,558 h,
#: 14: 949 h and weak PV, 15: 4,391 h and almost no PV). See the README.
CITYLEARN_CLEAN_HOMES: Final = tuple(h for h in CITYLEARN_HOMES if h not in (7, 12, 14, 15))


def load_citylearn_homes(
    homes: tuple[int, ...] | list[int] = CITYLEARN_HOMES,
    *,
    step_s: int = 3600,
    start_s: int | None = None,
    end_s: int | None = None,
) -> MeterHistory:
    """The CityLearn homes ``homes`` (numbers 1..17, one row each in that order), PV and load
    metered, hourly; ``step_s`` 3600 or a multiple of it (coarser), or 900/1800 (each hour's mean
    power repeated: the data carry no finer detail). Optionally cut to ``[start_s, end_s)``."""
    unknown = sorted(set(homes) - set(CITYLEARN_HOMES))
    if unknown or not homes:
        raise UsageError(f"CityLearn homes are numbered 1..17, got {list(homes)}")
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only where read

    table = pd.read_parquet(CITYLEARN_FILE)
    hours = len(table) // len(CITYLEARN_HOMES)
    first = int(table["time_s"].iloc[0])
    by_home = {int(h): g.sort_values("time_s") for h, g in table.groupby("home", sort=True)}
    pv = np.stack([by_home[h]["pv_wh"].to_numpy(np.float64) for h in homes])
    load = np.stack([by_home[h]["load_wh"].to_numpy(np.float64) for h in homes])
    assert pv.shape[1] == hours
    if step_s in (900, 1800):
        k = 3600 // step_s
        pv, load = np.repeat(pv, k, axis=1), np.repeat(load, k, axis=1)
    elif step_s % 3600:
        raise UsageError(f"step_s must be 900, 1800 or a multiple of 3600, got {step_s}")
    history = MeterHistory.from_components(
        pv, load, start_s=first, step_s=min(step_s, 3600), utc_offset_s=CITYLEARN_UTC_OFFSET_S
    )
    if step_s > 3600:
        start = -(-history.start_s // step_s) * step_s
        history = history.window(start, history.end_s - (history.end_s - start) % step_s)
        history = history.resample(step_s)
    if start_s is not None or end_s is not None:
        history = history.window(
            history.start_s if start_s is None else start_s,
            history.end_s if end_s is None else end_s,
        )
    return history
