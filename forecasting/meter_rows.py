"""The text rules of a household's meter file, pure and without numpy: what its header means, how
a row's cells are read, and the check of a file's newest rows that a daemon makes at start.

:mod:`forecasting.data.meter_files` reads whole files with these rules and adds the rules of the
intervals (spacing, gaps, filling; the schema is in its docstring); a daemon with a file meter
checks the file at start with :func:`check_rows` (``gridnode.meter.FileMeter.checked``) before
numpy is even loaded. This module does no I/O: it is given text. Rules:

* **Header.** Comma-separated, or semicolon-separated with decimal commas when the header has a
  ``;`` and no ``,``. Column names are matched case-insensitively, stripped; a repeated name gets
  ``.1``, ``.2``, … (as pandas names them). Which columns mean what: :func:`layout_of`.
* **Rows.** One row per line (quoted cells as the ``csv`` module reads them); an empty line is no
  row; a row with fewer cells than the header has empty cells, one with more is refused
  (``unparseable``, naming the line).
* **A number cell** is empty (``""``, ``nan``, ``NaN``, ``NA``, ``null``, ``None``, after
  stripping) or a finite number as Python's ``float`` reads it, in ASCII and without ``_``
  (``inf``, ``1_000``, ``0x10``, ``1,5`` in a comma file are not numbers).
* **A time cell** is unix seconds (``time_s``, a number) or ISO 8601 text as
  :meth:`datetime.datetime.fromisoformat` reads it, or ``YYYY-M-D[ H:MM[:SS[.f]]]`` with ``-`` or
  ``/`` and an optional offset (pandas' "ISO8601" reader accepted those too); a space before the
  offset is allowed. Fractions of a second are dropped (floor). Text with an offset (or ``Z``) is
  exact; text without is local time at the caller's ``utc_offset_s`` (else UTC).
* **The start-up check** (:func:`check_rows`) applies to the rows it is given (a file's newest)
  every rule of a single row and of their order: the time and value cells, ``pv``/``load`` not
  negative, times increasing, and at least two rows in the file. The rules of the intervals
  (spacing, gaps, empty runs) and the older rows are the whole read's: what this check refuses, the
  whole read refuses too (``tests/forecasting/test_meter_rows.py``: property).
* Every refusal is an :class:`~market.errors.InvalidInput` with one line naming the file, the row
  (as a spreadsheet shows it: the header is row 1) and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from market.errors import InvalidInput

__all__ = [
    "EMPTY_CELLS",
    "QUANTITIES",
    "TIME_TEXT_COLUMNS",
    "UNITS",
    "Layout",
    "bad_cell",
    "check_rows",
    "csv_cells",
    "csv_layout",
    "decode",
    "layout_of",
    "number",
    "unix_time",
]

TIME_TEXT_COLUMNS: Final = ("timestamp", "time", "datetime", "date_time")
QUANTITIES: Final = ("net", "pv", "load")
#: unit suffix → (factor to W or Wh, whether the column is energy per interval)
UNITS: Final = {"w": (1.0, False), "kw": (1000.0, False), "wh": (1.0, True), "kwh": (1000.0, True)}
#: cells that are empty (after stripping)
EMPTY_CELLS: Final = frozenset({"", "nan", "NaN", "NA", "null", "None"})

_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
#: UTC offset (s) of each fixed-offset zone met (``fromisoformat`` makes only such zones)
_OFFSETS: dict[dt.tzinfo, int] = {}
#: dates and times pandas' "ISO8601" reader took besides ``fromisoformat``'s: unpadded fields,
#: ``/`` between the date's parts
_LOOSE_TIME: Final = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?"
)
_SPACED_OFFSET: Final = re.compile(r"\s+(?=(?:Z|[+-]\d{2}(?::?\d{2})?)$)")


def decode(data: bytes, path: object, *, first: bool) -> str:
    """UTF-8 text of a meter file's bytes (``first``: from its start, a byte-order mark allowed);
    ``unparseable`` otherwise."""
    try:
        return data.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        detail = " ".join(str(exc).split())[:120]
        raise InvalidInput(reason="unparseable", subject=str(path), found=detail) from exc


def bad_cell(
    path: object, row: int, column: str, reason: str, *, expected: str, found: str
) -> InvalidInput:
    """The refusal of one cell: the file, its row and column."""
    return InvalidInput(
        reason=reason, subject=f"{path} row {row}", field=column, expected=expected, found=found
    )


@dataclass(frozen=True, slots=True)
class Layout:
    """How a meter file's columns are understood (from its header)."""

    sep: str  # "," or ";" (then with decimal commas)
    names: tuple[str, ...]  # the file's column names, in order
    columns: dict[str, str]  # lower-case stripped name → the file's name
    #: quantity → (column, factor, energy?), every one found (``net`` too beside ``pv`` and
    #: ``load``: its cells are checked, the history is made of ``pv`` and ``load``)
    values: dict[str, tuple[str, float, bool]]
    time: str  # the time column's name
    time_is_text: bool  # ISO text (else unix seconds)


def layout_of(names: Sequence[str], path: object, *, sep: str = ",") -> Layout:
    """The layout of a file with these column names; ``missing_column`` or ``ambiguous_column``
    when its values or its time cannot be told (the rules in ``forecasting.data.meter_files``)."""
    columns = {str(c).strip().lower(): str(c) for c in names}
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
        if "net" in found:  # the net is the file's own: a lone pv or load column is not used
            del found["pv" if "pv" in found else "load"]
        elif "pv" in found:  # PV alone (a PV monitor's export) says nothing of the load
            raise InvalidInput(
                reason="missing_column", subject=str(path), field="load_w",
                expected=f"'load_w' together with '{found['pv'][0]}', or a 'net_w' column",
                found=", ".join(columns.values()),
            )  # fmt: skip
        # a load alone (a consumption export) is a home without PV: its net is -load
    if not found:
        raise InvalidInput(
            reason="missing_column", subject=str(path), field="net_w",
            expected="'net_w', 'load_w' or both 'pv_w' and 'load_w' (or _kw, _wh, _kwh)",
            found=", ".join(columns.values()) or "no columns",
        )  # fmt: skip
    if "time_s" in columns:
        return Layout(sep, tuple(map(str, names)), columns, found, columns["time_s"], False)
    text_col = next((columns[c] for c in TIME_TEXT_COLUMNS if c in columns), None)
    if text_col is None:
        raise InvalidInput(
            reason="missing_column", subject=str(path), field="time_s",
            expected=f"a time column ('time_s' or one of {', '.join(TIME_TEXT_COLUMNS)})",
            found=", ".join(map(str, names)) or "no columns",
        )  # fmt: skip
    return Layout(sep, tuple(map(str, names)), columns, found, text_col, True)


def csv_layout(header: str, path: object) -> Layout:
    """The layout of a CSV file whose first line is ``header``."""
    sep = ";" if ";" in header and "," not in header else ","
    cells = next(csv.reader([header.rstrip("\r\n")], delimiter=sep), [])
    if not cells:
        raise InvalidInput(
            reason="unparseable", subject=str(path), found="No columns to parse from file"
        )
    names: list[str] = []
    for c in cells:  # a repeated name gets .1, .2, … (as pandas names them)
        name, k = c, 0
        while name in names:
            k += 1
            name = f"{c}.{k}"
        names.append(name)
    return layout_of(names, path, sep=sep)


def csv_cells(text: str, layout: Layout, path: object, *, line: int = 2) -> dict[str, list[str]]:
    """The time and value columns' cells of the CSV rows in ``text`` (no header; its first line
    is the file's line ``line``), decimal commas made points in a semicolon file."""
    width = len(layout.names)
    wanted = [layout.time, *(col for col, _, _ in layout.values.values())]
    index = [layout.names.index(c) for c in wanted]
    reader = csv.reader(io.StringIO(text), delimiter=layout.sep)
    try:
        rows = [cells for cells in reader if cells]  # an empty line is no row
    except csv.Error as exc:
        detail = " ".join(str(exc).split())[:120]
        raise InvalidInput(reason="unparseable", subject=str(path), found=detail) from exc
    if rows and max(map(len, rows)) > width:
        reader = csv.reader(io.StringIO(text), delimiter=layout.sep)  # which line, for the error
        cells = next(cells for cells in reader if len(cells) > width)
        raise InvalidInput(
            reason="unparseable", subject=str(path),
            found=f"Expected {width} fields in line {line - 1 + reader.line_num}, saw {len(cells)}",
        )  # fmt: skip
    if rows and min(map(len, rows)) < width:  # the missing cells are empty
        rows = [cells + [""] * (width - len(cells)) for cells in rows]
    columns = list(zip(*rows, strict=True)) if rows else [()] * width
    out = [list(columns[i]) for i in index]
    if layout.sep == ";":  # a European export: decimal commas
        out = [[c.replace(",", ".") for c in column] for column in out]
    return dict(zip(wanted, out, strict=True))


def number(cell: str) -> float | None:
    """The number in ``cell``: NaN when it is empty, ``None`` when it is not a number."""
    try:
        value = float(cell)  # strips whitespace itself
    except ValueError:
        value = math.nan
    if value - value == 0 and cell.isascii() and "_" not in cell:  # the usual case: finite
        return value
    if cell.strip() in EMPTY_CELLS:
        return math.nan
    return None


def unix_time(cell: str, offset_s: int | None) -> tuple[int, int | None] | None:
    """Unix seconds of the ISO 8601 text ``cell`` and the UTC offset it carried (``None``: none,
    then it is local time at ``offset_s``, else UTC); ``None`` when it is not such a time."""
    try:
        when = dt.datetime.fromisoformat(cell)
    except ValueError:
        text = _SPACED_OFFSET.sub("", cell.strip())
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            loose = _loose_time(text)
            if loose is None:
                return None
            when = loose
    # unix seconds by hand: ≈ 3x faster than ``(when - epoch) // second`` (a year's rows)
    seconds = (
        (when.toordinal() - _EPOCH_ORDINAL) * 86_400
        + when.hour * 3600 + when.minute * 60 + when.second
    )  # fmt: skip
    zone = when.tzinfo
    if zone is None:
        return seconds - (offset_s or 0), None
    shift = _OFFSETS.get(zone)
    if shift is None:
        delta = when.utcoffset()
        if delta is None:  # a tzinfo without an offset: as naive
            return seconds - (offset_s or 0), None
        shift = _OFFSETS.setdefault(zone, int(delta.total_seconds()))
    return seconds - shift, shift


def _loose_time(text: str) -> dt.datetime | None:
    m = _LOOSE_TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    iso = (
        f"{year}-{month:0>2}-{day:0>2}T{hour or 0:0>2}:{minute or '00'}:{second or '00'}"
        f".{(fraction or '0')[:6]:0<6}{zone or ''}"
    )
    try:
        return dt.datetime.fromisoformat(iso)
    except ValueError:
        return None


def check_rows(
    layout: Layout,
    cells: dict[str, list[str]],
    path: object,
    *,
    first_row: int,
    file_rows: int,
    utc_offset_s: int | None = None,
) -> None:
    """Check the rows ``cells`` (:func:`csv_cells`; their first is the file's row ``first_row``)
    of a file of ``file_rows`` data rows: each cell, pv/load not negative, times increasing
    (module rules); refusals as the whole read's."""
    times = cells[layout.time]
    if layout.time_is_text:
        stamps = [unix_time(cell, utc_offset_s) for cell in times]
        i = next((i for i, got in enumerate(stamps) if got is None), None)
        if i is not None:
            raise bad_cell(path, first_row + i, layout.time, "bad_time",
                           expected="ISO 8601 date-time", found=repr(times[i].strip()))  # fmt: skip
        seconds = [got[0] for got in stamps if got is not None]
    else:
        values = _column(times, layout.time, path, first_row)
        i = next((i for i, v in enumerate(values) if math.isnan(v)), None)
        if i is not None:
            raise bad_cell(path, first_row + i, layout.time, "missing_time",
                           expected="unix seconds", found="an empty cell")  # fmt: skip
        seconds = [int(v) for v in values]
    if file_rows < 2:
        raise InvalidInput(
            reason="too_few_rows", subject=str(path), expected=">= 2 rows", found=str(file_rows)
        )
    i = next((i for i in range(1, len(seconds)) if seconds[i] <= seconds[i - 1]), None)
    if i is not None:
        raise bad_cell(path, first_row + i, layout.time, "unsorted_time",
                       expected="times in increasing order",
                       found="a time not after the row before")  # fmt: skip
    for q, (col, _, _) in layout.values.items():
        values = _column(cells[col], col, path, first_row)
        i = next((i for i, v in enumerate(values) if q != "net" and v < 0), None)
        if i is not None:
            raise bad_cell(path, first_row + i, col, "negative_value",
                           expected=">= 0", found=repr(cells[col][i]))  # fmt: skip


def _column(cells: list[str], column: str, path: object, first_row: int) -> list[float]:
    """The numbers of a column's cells (NaN: empty); ``not_a_number`` names the first other."""
    values = [number(c) for c in cells]
    i = next((i for i, v in enumerate(values) if v is None), None)
    if i is not None:
        raise bad_cell(path, first_row + i, column, "not_a_number",
                       expected="a number", found=repr(cells[i]))  # fmt: skip
    return [v for v in values if v is not None]
