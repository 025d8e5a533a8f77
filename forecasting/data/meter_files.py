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
    derived from them), or ``load`` comes alone: a home without PV (a consumption export; its PV
    is zero). ``pv`` alone is refused (it says nothing of the load). One unit per quantity.
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
* A file is read in two stages: its **rows** (:func:`read_meter_rows`; the cell rules are
  :mod:`forecasting.meter_rows`', pure Python: CSV is read with the ``csv`` module, without pandas;
  Parquet with pandas, or with whatever reader the caller gives: a daemon's is a child process) and
  the **intervals** they make (:func:`meter_file_of`: order, spacing, gaps, filling). Rows
  appended to a CSV file are read on their own (:func:`more_meter_rows`) and the intervals made
  again of all of them: what a daemon's file meter does when its adapter appends
  (``gridnode.meter.FileMeter``). Either way the refusals and the history are those of
  reading the whole file at once (``tests/forecasting/test_meter_rows.py``).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from forecasting.meter_rows import (
    QUANTITIES,
    TIME_TEXT_COLUMNS,
    UNITS,
    Layout,
    bad_cell,
    csv_cells,
    csv_layout,
    decode,
    layout_of,
    number,
    unix_time,
)
from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory
from market.errors import InvalidInput

__all__ = [
    "METER_SUFFIXES",
    "QUANTITIES",
    "TIME_TEXT_COLUMNS",
    "UNITS",
    "MeterFile",
    "MeterRows",
    "align_histories",
    "csv_meter_rows",
    "load_meter_folder",
    "load_meter_history",
    "meter_file_of",
    "more_meter_rows",
    "read_meter_file",
    "read_meter_rows",
]

METER_SUFFIXES: Final = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True, slots=True)
class MeterFile:
    """A meter file as read: its history, and how its columns were understood."""

    path: Path
    history: MeterHistory
    columns: dict[str, str]  # quantity ("net"/"pv"/"load") → the file's column name
    filled_steps: int  # intervals filled by interpolation


@dataclass(frozen=True, slots=True)
class MeterRows:
    """A meter file's rows as read, before the rules of the intervals (:func:`meter_file_of`).
    A cell that broke a rule of the value columns is kept (its row index and text) and refused
    there, in the order the rules are applied (module rules)."""

    path: Path
    layout: Layout
    first_row: int  # the row number of the first data row (CSV 2, Parquet 1)
    time_s: npt.NDArray[np.int64]  # each row's time (unix s)
    offsets: frozenset[int]  # the UTC offsets the timestamps carried
    values: dict[str, FloatArray]  # value column → its numbers (NaN: empty cell)
    not_numbers: dict[str, tuple[int, str]]  # value column → its first non-number (index, cell)
    negatives: dict[str, tuple[int, str]]  # value column → its first negative number

    def __len__(self) -> int:
        return len(self.time_s)

    def extended(self, more: MeterRows) -> MeterRows:
        """These rows and then ``more`` (rows read after them, of the same file and layout)."""
        n = len(self)

        def first(
            mine: dict[str, tuple[int, str]], theirs: dict[str, tuple[int, str]]
        ) -> dict[str, tuple[int, str]]:
            return {**{c: (n + i, t) for c, (i, t) in theirs.items()}, **mine}

        return replace(
            self,
            time_s=np.concatenate([self.time_s, more.time_s]),
            offsets=self.offsets | more.offsets,
            values={c: np.concatenate([v, more.values[c]]) for c, v in self.values.items()},
            not_numbers=first(self.not_numbers, more.not_numbers),
            negatives=first(self.negatives, more.negatives),
        )


def _text(path: Path) -> str:
    """A CSV file's text (gunzipped), UTF-8 with or without a byte-order mark."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except EOFError as exc:  # a cut-off .gz
        raise InvalidInput(reason="unparseable", subject=str(path), found=str(exc)) from exc
    except OSError as exc:
        raise InvalidInput(reason="unreadable", subject=str(path), found=str(exc)) from exc
    return decode(data, path, first=True)


def read_meter_rows(
    path: str | Path,
    *,
    utc_offset_s: int | None = None,
    parquet: Callable[[Path], tuple[list[str], dict[str, list[str]]]] | None = None,
) -> MeterRows:
    """The rows of one meter file (module rules). ``parquet`` reads a Parquet file's column names
    and cells in place of :func:`parquet_cells` (a daemon's file meter reads them in a child
    process, ``gridnode.parquet_child``, so that it never imports pandas and pyarrow); the rules
    applied to them, and so the rows and refusals, are the same."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return csv_meter_rows(path, _text(path), utc_offset_s=utc_offset_s)
    if name.endswith(".parquet"):
        columns, cells = (parquet or parquet_cells)(path)
        return _rows(path, layout_of(columns, path), cells, 1, utc_offset_s)
    raise InvalidInput(
        reason="unknown_format",
        subject=str(path),
        expected="a .csv, .csv.gz or .parquet file",
        found=path.suffix or "no suffix",
    )


def parquet_cells(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """A Parquet meter file's column names and, as text, the cells of the columns its layout
    reads (pandas and pyarrow are imported here, and only here)."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - only where read

    try:
        table = pd.read_parquet(path)
    except OSError as exc:
        raise InvalidInput(reason="unreadable", subject=str(path), found=str(exc)) from exc
    except ValueError as exc:
        detail = " ".join(str(exc).split())[:120]
        raise InvalidInput(reason="unparseable", subject=str(path), found=detail) from exc
    columns = [str(c) for c in table.columns]
    layout = layout_of(columns, path)
    wanted = [layout.time, *(col for col, _, _ in layout.values.values())]
    return columns, {c: table[c].astype(str).tolist() for c in wanted}


def csv_meter_rows(path: Path, text: str, *, utc_offset_s: int | None = None) -> MeterRows:
    """The rows of the CSV file ``path`` whose text (header first) is ``text``."""
    header, _, body = text.partition("\n")
    layout = csv_layout(header, path)
    return _rows(path, layout, csv_cells(body, layout, path), 2, utc_offset_s)


def more_meter_rows(rows: MeterRows, text: str, *, utc_offset_s: int | None = None) -> MeterRows:
    """``rows`` (of a CSV file) and the rows in ``text``, the lines appended to the file after
    them (whole lines, no header)."""
    more = _rows(
        rows.path, rows.layout, csv_cells(text, rows.layout, rows.path),
        rows.first_row + len(rows), utc_offset_s,
    )  # fmt: skip
    return rows.extended(more)


def _rows(
    path: Path, layout: Layout, cells: dict[str, list[str]], first_row: int,
    offset_s: int | None,
) -> MeterRows:  # fmt: skip
    """The rows of ``cells``: the time column read (its refusals raised), the value columns'
    numbers and their first bad cells kept (refused by :func:`meter_file_of`)."""
    times = cells[layout.time]
    offsets: set[int] = set()
    if layout.time_is_text:
        seconds = np.empty(len(times), dtype=np.int64)
        for i, cell in enumerate(times):
            got = unix_time(cell, offset_s)
            if got is None:
                raise bad_cell(path, first_row + i, layout.time, "bad_time",
                               expected="ISO 8601 date-time", found=repr(cell.strip()))  # fmt: skip
            seconds[i] = got[0]
            if got[1] is not None:
                offsets.add(got[1])
    else:
        values, not_number, _ = _numbers(times)
        if not_number is not None:
            i = not_number[0]
            raise bad_cell(path, first_row + i, layout.time, "not_a_number",
                           expected="a number", found=repr(times[i]))  # fmt: skip
        missing = ~np.isfinite(values)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise bad_cell(path, first_row + i, layout.time, "missing_time",
                           expected="unix seconds", found="an empty cell")  # fmt: skip
        seconds = values.astype(np.int64)
    out: dict[str, FloatArray] = {}
    not_numbers: dict[str, tuple[int, str]] = {}
    negatives: dict[str, tuple[int, str]] = {}
    for col, _, _ in layout.values.values():
        out[col], bad, negative = _numbers(cells[col])
        if bad is not None:
            not_numbers[col] = bad
        if negative is not None:
            negatives[col] = negative
    return MeterRows(
        path, layout, first_row, seconds, frozenset(offsets), out, not_numbers, negatives
    )


def _numbers(
    cells: list[str],
) -> tuple[FloatArray, tuple[int, str] | None, tuple[int, str] | None]:
    """The cells as numbers (NaN: empty, and where not a number), the first cell that is not a
    number and the first negative one (index, cell)."""
    text = "".join(cells)
    if text.isascii() and "_" not in text:  # numpy reads what float reads: the usual case at once
        try:
            fast = np.array(cells, dtype=np.float64)
        except ValueError:  # an empty cell or a non-number: cell by cell
            pass
        else:
            if np.isfinite(fast).all():
                below = np.flatnonzero(fast < 0)
                return fast, None, (int(below[0]), cells[below[0]]) if len(below) else None
    values = np.empty(len(cells), dtype=np.float64)
    bad = negative = None
    for i, cell in enumerate(cells):
        v = number(cell)
        if v is None:
            if bad is None:
                bad = (i, cell)
            v = float("nan")
        elif v < 0 and negative is None:
            negative = (i, cell)
        values[i] = v
    return values, bad, negative


def meter_file_of(
    rows: MeterRows, *, utc_offset_s: int | None = None, max_gap_steps: int = 4
) -> MeterFile:
    """The intervals of ``rows`` (module rules): the file as :func:`read_meter_file` reads it."""
    path, first_row, layout, time_s = rows.path, rows.first_row, rows.layout, rows.time_s
    if len(time_s) < 2:
        raise InvalidInput(
            reason="too_few_rows", subject=str(path), expected=">= 2 rows", found=str(len(time_s))
        )
    steps = np.diff(time_s)
    time_col = layout.time
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise bad_cell(path, first_row + i, time_col, "unsorted_time", expected="times in increasing order", found="a time not after the row before")  # fmt: skip
    spacings, counts = np.unique(steps[steps > 0], return_counts=True)
    step_s = int(spacings[np.argmax(counts)]) if len(spacings) else 1  # the usual spacing
    if SECONDS_PER_DAY % step_s:
        raise bad_cell(path, first_row + int(np.argmin(steps)) + 1, time_col, "irregular_time", expected="a spacing that divides a day", found=f"{step_s} s")  # fmt: skip
    if np.any(steps % step_s):
        i = int(np.flatnonzero(steps % step_s)[0]) + 1
        raise bad_cell(path, first_row + i, time_col, "irregular_time", expected=f"evenly spaced times ({step_s} s)", found=f"{int(steps[i - 1])} s after the row before")  # fmt: skip
    if int(steps.max()) > step_s * (max_gap_steps + 1):
        i = int(np.argmax(steps)) + 1
        raise bad_cell(path, first_row + i, time_col, "gap_too_long", expected=f"gaps of at most {max_gap_steps} intervals", found=f"{int(steps[i - 1]) // step_s - 1} missing intervals before this row")  # fmt: skip
    grid = np.arange(time_s[0], time_s[-1] + 1, step_s, dtype=np.int64)
    filled = len(grid) - len(time_s)
    arrays: dict[str, FloatArray] = {}
    for q, (col, factor, energy) in layout.values.items():
        if col in rows.not_numbers:
            i, cell = rows.not_numbers[col]
            raise bad_cell(path, first_row + i, col, "not_a_number", expected="a number", found=repr(cell))  # fmt: skip
        v = rows.values[col] * factor
        if energy:
            v = v * 3600.0 / step_s  # energy per interval → mean power
        if q != "net" and col in rows.negatives:
            i, cell = rows.negatives[col]
            raise bad_cell(path, first_row + i, col, "negative_value", expected=">= 0", found=repr(cell))  # fmt: skip
        ok = np.isfinite(v)
        if ok.sum() < 2:
            raise bad_cell(
                path, first_row, col, "empty_column", expected="values", found="fewer than 2"
            )
        run = _longest_missing_run(ok)
        if run[1] > max_gap_steps:
            raise bad_cell(path, first_row + run[0], col, "gap_too_long", expected=f"at most {max_gap_steps} empty cells in a row", found=f"{run[1]} from this row")  # fmt: skip
        filled += int((~ok).sum())
        arrays[q] = np.interp(grid, time_s[ok], v[ok])
    seen_offset = min(rows.offsets) if rows.offsets else None
    offset = utc_offset_s if utc_offset_s is not None else (seen_offset or 0)
    if "load" in arrays:  # with its PV, or alone: a home without PV (module rules)
        pv = arrays["pv"] if "pv" in arrays else np.zeros_like(arrays["load"])
        history = MeterHistory.from_components(
            pv, arrays["load"], start_s=int(grid[0]), step_s=step_s, utc_offset_s=offset
        )
        used: dict[str, str] = {
            q: layout.values[q][0] for q in ("pv", "load") if q in layout.values
        }
    else:
        history = MeterHistory.from_net(
            arrays["net"], start_s=int(grid[0]), step_s=step_s, utc_offset_s=offset
        )
        used = {"net": layout.values["net"][0]}
    return MeterFile(path, history, used, filled)


def read_meter_file(
    path: str | Path, *, utc_offset_s: int | None = None, max_gap_steps: int = 4
) -> MeterFile:
    """Read one meter history file (rules in the module docstring)."""
    rows = read_meter_rows(path, utc_offset_s=utc_offset_s)
    return meter_file_of(rows, utc_offset_s=utc_offset_s, max_gap_steps=max_gap_steps)


def _longest_missing_run(ok: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """(start index, length) of the longest run of ``False`` in ``ok`` (the first if several)."""
    edges = np.diff(np.concatenate([[0], (~ok).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return (0, 0)
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])


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
