"""A household's own meter history files, and folders of them (one file per household).

Rules of this module:

* One row per interval, CSV (optionally ``.gz``) or Parquet. Columns (names case-insensitive;
  other columns are ignored):

  - time, one of ``time_s`` (unix seconds UTC of the interval start) or ``timestamp`` / ``time`` /
    ``datetime`` / ``date_time`` (ISO 8601 text; an offset such as ``+02:00`` or ``Z`` is honoured,
    text without an offset is local time at the ``utc_offset_s`` the caller gives, else UTC);
  - values, ``{net,pv,load}_{w,kw,wh,kwh}``: ``w``/``kw`` are mean power over the interval, ``wh``/
    ``kwh`` the energy in the interval (converted with the interval's length). ``net`` is export
    ``+`` / import ``-``; ``pv`` and ``load`` are ``>= 0`` and come together (preferred: the net is
    derived from them). One unit per quantity.
* The household's **local standard-time offset** (what its calendar features use) is the caller's
  ``utc_offset_s`` if given, else the smallest UTC offset among the timestamps (DST adds an hour,
  so the smallest is standard time), else 0.
* CSV is comma-separated, or semicolon-separated with decimal commas (told apart by the header).
* Rows must be in time order, evenly spaced (the usual spacing divides a day); a gap of
  up to ``max_gap_steps`` intervals (missing rows or empty cells) is filled linearly, longer gaps
  are refused.
* Every refusal is an :class:`~market.errors.InvalidInput` whose one-line message names the file,
  the row and the column: rows are counted as a spreadsheet shows them (CSV: the header is row 1,
  the first data row is row 2; Parquet: the first data row is row 1).
* Reading is the only I/O; nothing is written, nothing downloaded, no clock read.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

if (
    TYPE_CHECKING
):  # pandas is imported where a file is read: a daemon that reads none never loads it
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory
from market.errors import InvalidInput

__all__ = [
    "METER_SUFFIXES",
    "MeterFile",
    "align_histories",
    "load_meter_folder",
    "load_meter_history",
    "read_meter_file",
]

METER_SUFFIXES: Final = (".csv", ".csv.gz", ".parquet")
TIME_TEXT_COLUMNS: Final = ("timestamp", "time", "datetime", "date_time")
QUANTITIES: Final = ("net", "pv", "load")
#: unit suffix → (factor to W or Wh, whether the column is energy per interval)
UNITS: Final = {"w": (1.0, False), "kw": (1000.0, False), "wh": (1.0, True), "kwh": (1000.0, True)}


@dataclass(frozen=True, slots=True)
class MeterFile:
    """A meter file as read: its history, and how its columns were understood."""

    path: Path
    history: MeterHistory
    columns: dict[str, str]  # quantity ("net"/"pv"/"load") → the file's column name
    filled_steps: int  # intervals filled by interpolation


def _read_table(path: Path) -> tuple[pd.DataFrame, int]:
    """The table and the row number of its first data row (see the module rules)."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only where read

    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path), 1
        if name.endswith((".csv", ".csv.gz")):
            sep = ";" if ";" in _header(path) and "," not in _header(path) else ","
            table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
            if sep == ";":  # a European export: decimal commas
                table = table.apply(lambda c: c.str.replace(",", ".", regex=False))
            return table, 2
    except OSError as exc:
        raise InvalidInput(reason="unreadable", subject=str(path), found=str(exc)) from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise InvalidInput(reason="unparseable", subject=str(path), found=detail) from exc
    raise InvalidInput(
        reason="unknown_format",
        subject=str(path),
        expected="a .csv, .csv.gz or .parquet file",
        found=path.suffix or "no suffix",
    )


def _header(path: Path) -> str:
    """The first line of a (possibly gzipped) text file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.readline()


def _bad(
    path: Path, row: int, column: str, reason: str, *, expected: str, found: str
) -> InvalidInput:
    return InvalidInput(
        reason=reason, subject=f"{path} row {row}", field=column, expected=expected, found=found
    )


def _numbers(table: pd.DataFrame, column: str, path: Path, first_row: int) -> FloatArray:
    """The column as floats, NaN where the cell is empty; a non-number names its row."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only where read

    raw = table[column]
    values = np.array(pd.to_numeric(raw, errors="coerce"), dtype=np.float64)
    text = raw.astype(str).str.strip()
    empty = raw.isna().to_numpy() | text.isin(["", "nan", "NaN", "NA", "null", "None"]).to_numpy()
    bad = ~np.isfinite(values) & ~empty
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(
            path,
            first_row + i,
            column,
            "not_a_number",
            expected="a number",
            found=repr(raw.iloc[i]),
        )
    values[empty] = np.nan
    return values


def _times(
    table: pd.DataFrame, columns: dict[str, str], path: Path, first_row: int, offset_s: int | None
) -> tuple[npt.NDArray[np.int64], int | None]:
    """Unix seconds of each row, and the smallest UTC offset the timestamps carried (if any)."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only where read

    if "time_s" in columns:
        col = columns["time_s"]
        values = _numbers(table, col, path, first_row)
        missing = ~np.isfinite(values)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise _bad(
                path,
                first_row + i,
                col,
                "missing_time",
                expected="unix seconds",
                found="an empty cell",
            )
        return values.astype(np.int64), None
    text_col = next((columns[c] for c in TIME_TEXT_COLUMNS if c in columns), None)
    if text_col is None:
        raise InvalidInput(
            reason="missing_column", subject=str(path), field="time_s",
            expected=f"a time column ('time_s' or one of {', '.join(TIME_TEXT_COLUMNS)})",
            found=", ".join(map(str, table.columns)) or "no columns",
        )  # fmt: skip
    col = text_col
    text = table[col].astype(str).str.strip()
    stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(
            path,
            first_row + i,
            col,
            "bad_time",
            expected="ISO 8601 date-time",
            found=repr(text.iloc[i]),
        )
    out = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    parts = text.str.extract(r"([+-])(\d{2}):?(\d{2})$")
    has_offset = parts[0].notna().to_numpy()
    zulu = text.str.upper().str.endswith("Z").to_numpy()
    naive = ~has_offset & ~zulu
    out = out - np.where(naive, offset_s or 0, 0)
    offsets = set()
    if has_offset.any():
        sign = np.where(parts[0][has_offset] == "-", -1, 1)
        secs = parts[1][has_offset].astype(int) * 3600 + parts[2][has_offset].astype(int) * 60
        offsets = {int(v) for v in np.unique(sign * secs.to_numpy())}
    if zulu.any():
        offsets.add(0)
    return out, (min(offsets) if offsets else None)


def _value_columns(columns: dict[str, str], path: Path) -> dict[str, tuple[str, float, bool]]:
    """quantity → (file column, factor, energy-per-interval?) for the value columns present."""
    found: dict[str, tuple[str, float, bool]] = {}
    for q in QUANTITIES:
        for unit, (factor, energy) in UNITS.items():
            name = f"{q}_{unit}"
            if name in columns:
                if q in found:
                    raise InvalidInput(
                        reason="ambiguous_column", subject=str(path), field=columns[name],
                        expected=f"one {q} column", found=f"{found[q][0]} and {columns[name]}",
                    )  # fmt: skip
                found[q] = (columns[name], factor, energy)
    if ("pv" in found) != ("load" in found):
        have, missing = ("pv", "load") if "pv" in found else ("load", "pv")
        if "net" not in found:
            raise InvalidInput(
                reason="missing_column", subject=str(path), field=f"{missing}_w",
                expected=f"'{missing}_w' together with '{found[have][0]}', or a 'net_w' column",
                found=", ".join(columns.values()),
            )  # fmt: skip
        del found[have]
    if not found:
        raise InvalidInput(
            reason="missing_column", subject=str(path), field="net_w",
            expected="'net_w' or both 'pv_w' and 'load_w' (or _kw, _wh, _kwh)",
            found=", ".join(columns.values()) or "no columns",
        )  # fmt: skip
    return found


def read_meter_file(
    path: str | Path, *, utc_offset_s: int | None = None, max_gap_steps: int = 4
) -> MeterFile:
    """Read one meter history file (rules in the module docstring)."""
    path = Path(path)
    table, first_row = _read_table(path)
    columns = {str(c).strip().lower(): str(c) for c in table.columns}
    values_spec = _value_columns(columns, path)
    time_s, seen_offset = _times(table, columns, path, first_row, utc_offset_s)
    if len(time_s) < 2:
        raise InvalidInput(
            reason="too_few_rows", subject=str(path), expected=">= 2 rows", found=str(len(time_s))
        )
    steps = np.diff(time_s)
    time_col = columns.get("time_s") or next(columns[c] for c in TIME_TEXT_COLUMNS if c in columns)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise _bad(path, first_row + i, time_col, "unsorted_time", expected="times in increasing order", found="a time not after the row before")  # fmt: skip
    spacings, counts = np.unique(steps[steps > 0], return_counts=True)
    step_s = int(spacings[np.argmax(counts)]) if len(spacings) else 1  # the usual spacing
    if SECONDS_PER_DAY % step_s:
        raise _bad(path, first_row + int(np.argmin(steps)) + 1, time_col, "irregular_time", expected="a spacing that divides a day", found=f"{step_s} s")  # fmt: skip
    if np.any(steps % step_s):
        i = int(np.flatnonzero(steps % step_s)[0]) + 1
        raise _bad(path, first_row + i, time_col, "irregular_time", expected=f"evenly spaced times ({step_s} s)", found=f"{int(steps[i - 1])} s after the row before")  # fmt: skip
    if int(steps.max()) > step_s * (max_gap_steps + 1):
        i = int(np.argmax(steps)) + 1
        raise _bad(path, first_row + i, time_col, "gap_too_long", expected=f"gaps of at most {max_gap_steps} intervals", found=f"{int(steps[i - 1]) // step_s - 1} missing intervals before this row")  # fmt: skip
    grid = np.arange(time_s[0], time_s[-1] + 1, step_s, dtype=np.int64)
    filled = len(grid) - len(time_s)
    arrays: dict[str, FloatArray] = {}
    for q, (col, factor, energy) in values_spec.items():
        v = _numbers(table, col, path, first_row) * factor
        if energy:
            v = v * 3600.0 / step_s  # energy per interval → mean power
        if q != "net":
            negative = v < 0
            if negative.any():
                i = int(np.flatnonzero(negative)[0])
                raise _bad(path, first_row + i, col, "negative_value", expected=">= 0", found=repr(table[col].iloc[i]))  # fmt: skip
        ok = np.isfinite(v)
        if ok.sum() < 2:
            raise _bad(
                path, first_row, col, "empty_column", expected="values", found="fewer than 2"
            )
        run = _longest_missing_run(ok)
        if run[1] > max_gap_steps:
            raise _bad(path, first_row + run[0], col, "gap_too_long", expected=f"at most {max_gap_steps} empty cells in a row", found=f"{run[1]} from this row")  # fmt: skip
        filled += int((~ok).sum())
        arrays[q] = np.interp(grid, time_s[ok], v[ok])
    offset = utc_offset_s if utc_offset_s is not None else (seen_offset or 0)
    if "pv" in arrays:
        history = MeterHistory.from_components(
            arrays["pv"], arrays["load"], start_s=int(grid[0]), step_s=step_s, utc_offset_s=offset
        )
        used = {q: values_spec[q][0] for q in ("pv", "load")}
    else:
        history = MeterHistory.from_net(
            arrays["net"], start_s=int(grid[0]), step_s=step_s, utc_offset_s=offset
        )
        used = {"net": values_spec["net"][0]}
    return MeterFile(path, history, used, filled)


def _longest_missing_run(ok: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """(start index, length) of the longest run of ``False`` in ``ok``."""
    best = (0, 0)
    start = -1
    for i, flag in enumerate(np.append(ok, True)):
        if not flag and start < 0:
            start = i
        elif flag and start >= 0:
            if i - start > best[1]:
                best = (start, i - start)
            start = -1
    return best


def load_meter_history(
    path: str | Path, *, utc_offset_s: int | None = None, max_gap_steps: int = 4
) -> MeterHistory:
    """Read a household's meter history file (rules in the module docstring)."""
    return read_meter_file(path, utc_offset_s=utc_offset_s, max_gap_steps=max_gap_steps).history


def load_meter_folder(
    folder: str | Path, *, utc_offset_s: int | None = None, max_gap_steps: int = 4
) -> dict[str, MeterHistory]:
    """Every meter file in ``folder`` (``.csv``, ``.csv.gz``, ``.parquet``; other files and
    sub-folders are ignored), keyed by file name without its suffix, in name order. One household
    per file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(reason="not_a_folder", subject=str(folder), expected="a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(METER_SUFFIXES)
    )
    if not files:
        raise InvalidInput(
            reason="no_meter_files", subject=str(folder),
            expected=f"files ending in {', '.join(METER_SUFFIXES)}", found="none",
        )  # fmt: skip
    out: dict[str, MeterHistory] = {}
    for p in files:
        stem = p.name[: -len(next(s for s in METER_SUFFIXES if p.name.lower().endswith(s)))]
        if stem in out:
            raise InvalidInput(reason="duplicate_household", subject=str(p),
                               expected="one file per name", found=f"another {stem}.*")  # fmt: skip
        out[stem] = load_meter_history(p, utc_offset_s=utc_offset_s, max_gap_steps=max_gap_steps)
    return out


def align_histories(histories: dict[str, MeterHistory], *, step_s: int) -> MeterHistory:
    """One history with a row per household (in the dict's order), resampled to ``step_s`` and cut
    to the span all of them cover. PV and load stay separate only if every file has them; the
    calendar uses the first household's offset (a community shares a clock)."""
    if not histories:
        raise InvalidInput(reason="no_households", subject="meter folder", expected=">= 1 file")
    resampled = {}
    for name, h in histories.items():
        if step_s % h.step_s:
            raise InvalidInput(
                reason="step_too_coarse", subject=name, field="step",
                expected=f"a spacing dividing {step_s} s", found=f"{h.step_s} s",
            )  # fmt: skip
        start = -(-h.start_s // step_s) * step_s
        end = h.end_s - (h.end_s - start) % step_s
        if end - start < step_s:
            raise InvalidInput(reason="too_short", subject=name, expected=f">= {step_s} s")
        resampled[name] = h.window(start, end).resample(step_s)
    start = max(h.start_s for h in resampled.values())
    end = min(h.end_s for h in resampled.values())
    if end <= start:
        raise InvalidInput(
            reason="no_common_span", subject="meter folder",
            expected="files that overlap in time", found="no interval every file covers",
        )  # fmt: skip
    cut = [h.window(start, end) for h in resampled.values()]
    offset = cut[0].utc_offset_s
    if all(h.has_components for h in cut):
        pv = np.concatenate([h.pv_w for h in cut if h.pv_w is not None])
        load = np.concatenate([h.load_w for h in cut if h.load_w is not None])
        return MeterHistory.from_components(
            pv, load, start_s=start, step_s=step_s, utc_offset_s=offset
        )
    net = np.concatenate([h.net_w for h in cut])
    return MeterHistory.from_net(net, start_s=start, step_s=step_s, utc_offset_s=offset)
