"""Rebuild the shipped data set ``citylearn_homes.parquet`` from the ``citylearn==2.0.0`` wheel.

A maintenance script, not part of the runtime. It *downloads* the wheel (never installs it: that
release pins pandas 1.3.5 and torch) and reads the CSVs straight out of the zip::

    python -m forecasting.data.build_citylearn                 # downloads with pip, rewrites the file
    python -m forecasting.data.build_citylearn --wheel FILE    # from a wheel you already have

What it does (provenance, licence and quality flags: ``forecasting/data/README.md``):

* Reads ``citylearn/data/citylearn_challenge_2022_phase_all/Building_1..17.csv`` (hourly, 8,760
  rows) and the PV sizes from ``schema.json`` in that folder.
* **Load** = ``Equipment Electric Power [kWh]`` per hour → integer Wh (round half to even).
  **PV** = ``Solar Generation [W/kW]`` × the home's ``nominal_power`` (kW) → integer Wh per hour.
* **Calendar.** The CSVs carry no timestamps, only Month, Hour (1–24) and Day Type (1–7 =
  Monday–Sunday per CityLearn's ``EnergySimulation`` docs). 1 August is a Monday and February has
  28 days, which fixes the year pair to 2016/17 (or 2022/23, the same calendar; the data predate
  the 2022 challenge, so 2016-08-01 → 2017-07-31). The hours are **Pacific wall-clock time with
  DST**: the PV's daily centroid jumps by one hour exactly on 2016-11-06 and 2017-03-12, the US DST
  dates. Row ``i`` is the wall-clock hour *starting* at ``2016-08-01 00:00 + i h`` (so "Month 7,
  Hour 24" in row 0 is 00:00–01:00 on 1 August): read that way, no PV falls in an hour when the sun
  is down in summer (0.00 % of the PV energy, against 0.42 % if Hour ``h`` were the hour *ending*
  at ``h``:00) and the PV's correlation with clear-sky irradiance is highest (0.949 summer, 0.873
  winter; an hour earlier 0.941 / 0.842, an hour later 0.865 / 0.788), the same shift in winter
  and summer. Rows are mapped to UTC with America/Los_Angeles rules written out below (no tz
  database read): the wall hour 02:00 of 2017-03-12 does not exist and is dropped; the wall hour
  01:00 of 2016-11-06 happened twice and its row is used for both (flag ``FLAG_DST_REPEATED``).
  The result is a gap-free hourly UTC grid of 8,760 hours, ``time_s`` = start of each hour.
* Flags (bit mask, uint8): ``FLAG_LOAD_NEAR_ZERO`` (1) load < 1 Wh in that hour — a meter outage or an
  empty house, kept as measured; ``FLAG_DST_REPEATED`` (2) the repeated fall-back hour.

Deterministic: the same wheel gives a byte-identical file (tested in
``tests/forecasting/test_citylearn_data.py``).
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

WHEEL: Final = "citylearn==2.0.0"
WHEEL_SHA256: Final = "aef65c07922c7a609ca457fcb7d2abdcb156947e740bd55a408b37277023f47a"
FOLDER: Final = "citylearn/data/citylearn_challenge_2022_phase_all"
HOMES: Final = tuple(range(1, 18))
HOURS: Final = 8760
OUT: Final = Path(__file__).with_name("citylearn_homes.parquet")

FLAG_LOAD_NEAR_ZERO: Final = 1
FLAG_DST_REPEATED: Final = 2

PST_S: Final = -8 * 3600
PDT_S: Final = -7 * 3600
#: Row 0's wall-clock start: 2016-08-01 00:00 (Pacific, DST in force), as if it were UTC.
FIRST_WALL_S: Final = calendar.timegm((2016, 8, 1, 0, 0, 0))
#: US DST of 2016/17 in wall-clock terms: ends 2016-11-06 02:00 PDT, starts 2017-03-12 02:00 PST.
DST_END_WALL_S: Final = calendar.timegm((2016, 11, 6, 1, 0, 0))  # the repeated wall hour
DST_START_WALL_S: Final = calendar.timegm((2017, 3, 12, 2, 0, 0))  # the missing wall hour


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps citylearn==2.0.0`` into ``dest``; the wheel's path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def wall_to_utc_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each hour of the UTC grid: its unix start, the CSV row it takes, and its flag."""
    wall = FIRST_WALL_S + 3600 * np.arange(HOURS, dtype=np.int64)
    summer = (wall < DST_END_WALL_S + 3600) | (wall >= DST_START_WALL_S)
    keep = wall != DST_START_WALL_S  # 02:00 on 2017-03-12 never happened
    rows = np.flatnonzero(keep)
    utc = wall[rows] - np.where(summer[rows], PDT_S, PST_S)
    flags = np.zeros(rows.shape, dtype=np.uint8)
    # the fall-back hour 01:00 happened twice: once in PDT (kept above), once more in PST
    repeated = int(np.flatnonzero(wall[rows] == DST_END_WALL_S)[0])
    rows = np.insert(rows, repeated + 1, rows[repeated])
    utc = np.insert(utc, repeated + 1, DST_END_WALL_S - PST_S)
    flags = np.insert(flags, repeated + 1, FLAG_DST_REPEATED)
    if len(utc) != HOURS or np.any(np.diff(utc) != 3600):
        raise SystemExit("calendar mapping is not a gap-free hourly grid")
    return utc, rows, flags


def build(wheel: Path) -> pd.DataFrame:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL})")
    with zipfile.ZipFile(wheel) as zf:
        schema = json.loads(zf.read(f"{FOLDER}/schema.json"))
        tables = {h: pd.read_csv(io.BytesIO(zf.read(f"{FOLDER}/Building_{h}.csv"))) for h in HOMES}
    utc, rows, dst_flags = wall_to_utc_rows()
    parts = []
    for h, raw in tables.items():
        if len(raw) != HOURS:
            raise SystemExit(f"Building_{h}.csv has {len(raw)} rows, expected {HOURS}")
        kwp = float(schema["buildings"][f"Building_{h}"]["pv"]["attributes"]["nominal_power"])
        load_wh = np.rint(raw["Equipment Electric Power [kWh]"].to_numpy(float) * 1000.0)[rows]
        pv_wh = np.rint(np.clip(raw["Solar Generation [W/kW]"].to_numpy(float), 0, None) * kwp)
        pv_wh = pv_wh[rows]
        flags = dst_flags | np.where(load_wh < 1, FLAG_LOAD_NEAR_ZERO, 0).astype(np.uint8)
        parts.append(
            pd.DataFrame(
                {
                    "home": np.full(HOURS, h, dtype=np.uint8),
                    "time_s": utc,
                    "load_wh": load_wh.astype(np.int16),
                    "pv_wh": pv_wh.astype(np.int16),
                    "flags": flags.astype(np.uint8),
                }
            )
        )
        print(
            f"home {h:2d}: {kwp:.0f} kWp, load {load_wh.sum() / 1e6:6.2f} MWh/a, "
            f"PV {pv_wh.sum() / 1e3 / kwp:6.0f} kWh/kWp, "
            f"{int((load_wh < 1).sum()):5d} h load < 1 Wh",
            file=sys.stderr,
        )
    return pd.concat(parts, ignore_index=True)


def write(table: pd.DataFrame, out: Path) -> None:
    table.to_parquet(out, index=False, compression="zstd", compression_level=19)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--wheel", type=Path, help="a CityLearn-2.0.0 wheel already downloaded")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        table = build(wheel)
    write(table, args.out)
    print(f"wrote {args.out} ({len(table)} rows, {args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
