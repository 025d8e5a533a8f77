"""A household's own meter files: the common export shapes, offsets, folders, and one-line errors
that name the file, the row and the column."""

from __future__ import annotations

import calendar
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data import (
    align_histories,
    load_meter_folder,
    load_meter_history,
    read_meter_file,
)
from market.errors import InvalidInput

T0 = calendar.timegm((2010, 3, 27, 0, 0, 0))  # Paris switches to summer time on 2010-03-28


def _stamps(n: int, step_s: int, zone: str = "Europe/Paris") -> list[str]:
    t = pd.to_datetime(T0 + step_s * np.arange(n), unit="s", utc=True).tz_convert(zone)
    return [x.isoformat() for x in t]


@pytest.mark.parametrize(
    ("columns", "scale"),
    [
        ({"load_w": 1.0, "pv_w": 1.0}, 1.0),
        ({"Load_kW": 1e-3, "PV_kW": 1e-3}, 1.0),
        ({"load_kwh": 1e-3 / 4, "pv_kwh": 1e-3 / 4}, 1.0),  # energy per 15-minute interval
        ({"load_Wh": 1 / 4, "pv_Wh": 1 / 4}, 1.0),
    ],
)
def test_export_shapes_give_the_same_history(
    tmp_path: Path, columns: dict[str, float], scale: float
) -> None:
    n = 400
    load = 300.0 + 100.0 * np.sin(np.arange(n) / 10)
    pv = np.maximum(0.0, 900.0 * np.sin(np.arange(n) / 15))
    frame = {"time": _stamps(n, 900)}
    for name, factor in columns.items():
        frame[name] = (load if name.lower().startswith("load") else pv) * factor
    pd.DataFrame(frame).to_csv(tmp_path / "m.csv", index=False)
    h = load_meter_history(tmp_path / "m.csv")
    assert (h.start_s, h.step_s, h.steps) == (T0, 900, n)
    assert h.utc_offset_s == 3600  # CET; the CEST rows (+02:00) do not move standard time
    assert h.load_w is not None
    np.testing.assert_allclose(h.load_w[0], load * scale, rtol=1e-9)
    np.testing.assert_allclose(h.net_w[0], pv - load, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("column", ["load_w", "Load_kWh"])
def test_a_consumption_export_alone_is_a_home_without_pv(tmp_path: Path, column: str) -> None:
    """A load column alone (a utility's consumption export) reads as the same file with a PV
    column of zeros; a PV column alone is refused, naming the missing load column."""
    n = 200
    load = 300.0 + 100.0 * np.sin(np.arange(n) / 10)
    factor = 1e-3 / 4 if column.lower().endswith("kwh") else 1.0
    pd.DataFrame({"time": _stamps(n, 900), column: load * factor}).to_csv(
        tmp_path / "alone.csv", index=False
    )
    pd.DataFrame({"time": _stamps(n, 900), "load_w": load, "pv_w": 0.0}).to_csv(
        tmp_path / "zeros.csv", index=False
    )
    alone, zeros = read_meter_file(tmp_path / "alone.csv"), read_meter_file(tmp_path / "zeros.csv")
    assert alone.columns == {"load": column}
    for a, b in ((alone.history.load_w, zeros.history.load_w), (alone.history.pv_w, zeros.history.pv_w)):  # fmt: skip
        assert a is not None and b is not None
        np.testing.assert_allclose(a, b, rtol=1e-9)
    np.testing.assert_allclose(alone.history.net_w, zeros.history.net_w, rtol=1e-9)
    pd.DataFrame({"time": _stamps(n, 900), "pv_w": load}).to_csv(tmp_path / "pv.csv", index=False)
    with pytest.raises(InvalidInput) as info:
        read_meter_file(tmp_path / "pv.csv")
    assert info.value.reason == "missing_column" and "field 'load_w'" in str(info.value)


def test_naive_timestamps_are_local_at_the_given_offset(tmp_path: Path) -> None:
    stamps = [f"2010-01-01 {h:02d}:00" for h in range(5)]
    pd.DataFrame({"timestamp": stamps, "net_w": [1, 2, 3, 4, 5]}).to_csv(tmp_path / "a.csv")
    h = load_meter_history(tmp_path / "a.csv", utc_offset_s=-8 * 3600)
    assert h.start_s == calendar.timegm((2010, 1, 1, 8, 0, 0)) and h.utc_offset_s == -8 * 3600
    assert load_meter_history(tmp_path / "a.csv").start_s == calendar.timegm((2010, 1, 1, 0, 0, 0))


@pytest.mark.parametrize(
    ("edit", "reason", "row", "column"),
    [
        (lambda f: f.assign(load_w=f["load_w"].astype(object)).pipe(_set, 57, "load_w", "abc"),
         "not_a_number", 59, "load_w"),
        (lambda f: _set(f, 10, "time", "yesterday"), "bad_time", 12, "time"),
        (lambda f: _set(f, 30, "pv_w", -5.0), "negative_value", 32, "pv_w"),
        (lambda f: f.drop(index=range(40, 50)), "gap_too_long", 42, "time"),
        (lambda f: f.iloc[[*range(20), 25, *range(21, 25), *range(26, 60)]],
         "unsorted_time", 23, "time"),
        (lambda f: _set_many(f, range(70, 80), "load_w", ""), "gap_too_long", 72, "load_w"),
    ],
)  # fmt: skip
def test_bad_rows_are_named_by_file_row_and_column(
    tmp_path: Path, edit: object, reason: str, row: int, column: str
) -> None:
    n = 100
    frame = pd.DataFrame(
        {"time": _stamps(n, 900), "load_w": np.full(n, 300.0), "pv_w": np.full(n, 100.0)}
    )
    path = tmp_path / "home.csv"
    edit(frame).to_csv(path, index=False)  # type: ignore[operator]
    with pytest.raises(InvalidInput) as info:
        load_meter_history(path)
    err = info.value
    assert err.reason == reason and err.field == column
    assert err.subject == f"{path} row {row}"
    assert "\n" not in str(err) and str(path) in str(err)


def _set(frame: pd.DataFrame, i: int, column: str, value: object) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.loc[out.index[i], column] = value
    return out


def _set_many(frame: pd.DataFrame, rows: range, column: str, value: object) -> pd.DataFrame:
    for i in rows:
        frame = _set(frame, i, column, value)
    return frame


def test_short_gaps_are_filled_and_counted(tmp_path: Path) -> None:
    n = 50
    frame = pd.DataFrame({"time_s": T0 + 900 * np.arange(n), "net_w": np.arange(n, dtype=float)})
    frame = frame.drop(index=[10, 11]).astype(object)
    frame.loc[20, "net_w"] = ""
    frame.to_csv(tmp_path / "g.csv", index=False)
    got = read_meter_file(tmp_path / "g.csv")
    assert got.filled_steps == 3 and got.columns == {"net": "net_w"}
    np.testing.assert_allclose(got.history.net_w[0], np.arange(n, dtype=float))


def test_a_folder_is_one_household_per_file(tmp_path: Path) -> None:
    n = 96 * 3
    for name, shift, offset in (("anna", 0, 0), ("ben", 4, 96)):
        t = T0 + 900 * (np.arange(n) + offset)
        frame = pd.DataFrame({"time_s": t, "load_kw": 0.3 + 0.01 * ((np.arange(n) + shift) % 7),
                              "pv_kw": np.zeros(n)})  # fmt: skip
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "README.txt").write_text("not a meter file")
    (tmp_path / "sub").mkdir()
    homes = load_meter_folder(tmp_path)
    assert list(homes) == ["anna", "ben"]
    together = align_histories(homes, step_s=3600)
    assert together.households == 2 and together.has_components
    assert together.start_s == T0 + 96 * 900 and together.steps == 48  # the common 2 days
    (tmp_path / "carl.csv").write_text("time_s,net_w\n1,2\nx,3\n")
    with pytest.raises(InvalidInput) as info:
        load_meter_folder(tmp_path)
    assert info.value.subject == f"{tmp_path / 'carl.csv'} row 3"


def test_empty_folder_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_meter_folder(tmp_path)
    assert info.value.reason == "no_meter_files"
    (tmp_path / "bin.csv").write_bytes(b"\x00\xff\xfe garbage \x00\n\x01")
    with pytest.raises(InvalidInput) as info:
        load_meter_history(tmp_path / "bin.csv")
    assert info.value.reason in {"unparseable", "missing_column"}
    with pytest.raises(InvalidInput) as info:
        load_meter_history(tmp_path / "absent.parquet")
    assert info.value.reason == "unreadable"


def test_semicolon_exports_with_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text("Time;Net_kW\n2010-01-01T00:00+01:00;0,5\n2010-01-01T01:00+01:00;-0,25\n")
    h = load_meter_history(path)
    assert h.net_w.tolist() == [[500.0, -250.0]] and h.utc_offset_s == 3600
