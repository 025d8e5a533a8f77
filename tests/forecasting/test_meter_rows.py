"""The cell rules of a meter file without pandas read what pandas read: numbers as
``pd.to_numeric``, ISO 8601 times as ``pd.to_datetime(format="ISO8601")`` (the reader before
stop 27), on the text shapes meter exports write."""

from __future__ import annotations

import calendar
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.meter_rows import csv_cells, csv_layout, number, unix_time
from market.errors import InvalidInput

EMPTY_TEXT = ["", " ", "nan", "NaN", "NA", "null", "None"]


def _pandas_number(cell: str) -> float | None:
    """What the pandas reader made of a cell: NaN when empty, None when not a number."""
    value = float(pd.to_numeric(pd.Series([cell], dtype=str), errors="coerce").iloc[0])
    if cell.strip() in EMPTY_TEXT:
        return math.nan
    return value if math.isfinite(value) else None


ODD_NUMBERS = [
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "1_000",
    "0x10",
    "1,5",
    "abc",
    "+5",
    ".5",
    "1.",
    "-",
    "5",
    "NAN",
    "-nan",
    "True",
]
ODD_NUMBERS += [" 12 ", "- 5", "\u0661\u0662"]  # spaces inside, Arabic-Indic digits

number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from([*EMPTY_TEXT, *ODD_NUMBERS]),
    st.text(alphabet="0123456789.eE+- _naif", max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(cell=number_text)
def test_a_number_cell_reads_as_pandas_read_it(cell: str) -> None:
    got, want = number(cell), _pandas_number(cell)
    if want is None or got is None:
        assert got is want is None, (cell, got, want)
    elif math.isnan(want):
        assert got is not None and math.isnan(got), (cell, got)
    else:
        assert got == want, (cell, got, want)


@st.composite
def iso_text(draw: st.DrawFn) -> tuple[str, str]:
    """A timestamp as exports write them: ISO 8601, 'T' or space, seconds or not, fractions,
    'Z' or an offset with or without a colon, or none."""
    t = draw(st.integers(calendar.timegm((1990, 1, 1, 0, 0, 0)), 4_000_000_000))
    parts = list(pd.Timestamp(t, unit="s").timetuple())[:6]
    sep = draw(st.sampled_from(["T", " "]))
    text = f"{parts[0]:04d}-{parts[1]:02d}-{parts[2]:02d}{sep}{parts[3]:02d}:{parts[4]:02d}"
    if draw(st.booleans()):
        text += f":{parts[5]:02d}"
        if draw(st.booleans()):
            text += "." + draw(st.text(alphabet="0123456789", min_size=1, max_size=6))
    zone = draw(st.sampled_from(["", "Z", "+00:00", "+01:00", "-07:00", "+0530", "+02", "-0330"]))
    return text + zone, zone


@settings(max_examples=400, deadline=None)
@given(drawn=iso_text(), offset_s=st.sampled_from([None, 3600, -8 * 3600]))
def test_an_iso_time_reads_as_pandas_read_it(drawn: tuple[str, str], offset_s: int | None) -> None:
    text, zone = drawn
    got = unix_time(text, offset_s)
    stamp = pd.to_datetime(pd.Series([text]), format="ISO8601", utc=True).iloc[0]
    want = (stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    if zone:  # exact: the text carries its offset (pandas took "+02" as naive afterwards: a bug)
        assert got is not None and got[0] == want
    else:  # naive: local time at the given offset, else UTC
        assert got == (want - (offset_s or 0), None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2010/01/01 00:00", calendar.timegm((2010, 1, 1, 0, 0, 0))),
        ("2010-1-1 0:00", calendar.timegm((2010, 1, 1, 0, 0, 0))),
        ("2010-01-01 01:00:00 +01:00", calendar.timegm((2010, 1, 1, 0, 0, 0))),
        ("2010-01-01T00:00:59.999", calendar.timegm((2010, 1, 1, 0, 0, 59))),  # floor
    ],
)
def test_loose_iso_shapes_pandas_took_are_still_read(text: str, seconds: int) -> None:
    assert unix_time(text, None) is not None and unix_time(text, None)[0] == seconds  # type: ignore[index]


@pytest.mark.parametrize("text", ["yesterday", "2010-13-01T00:00", "2010-01-01T25:00", "", "17"])
def test_a_cell_that_is_no_time_is_none(text: str) -> None:
    assert unix_time(text, None) is None


def test_csv_cells_pad_short_rows_skip_empty_lines_and_refuse_long_ones() -> None:
    layout = csv_layout("time_s,net_w,flag\n", "m.csv")
    cells = csv_cells("0,1\n\n900,2,x\n", layout, "m.csv")
    assert cells == {"time_s": ["0", "900"], "net_w": ["1", "2"]}
    with pytest.raises(InvalidInput) as info:
        csv_cells("0,1\n900,2,x,y\n", layout, "m.csv", line=2)
    assert info.value.reason == "unparseable" and "line 3, saw 4" in info.value.found
    eu = csv_layout("Time;Net_kW\n", "eu.csv")
    assert csv_cells("2010-01-01T00:00;0,5\n", eu, "eu.csv")["Net_kW"] == ["0.5"]
