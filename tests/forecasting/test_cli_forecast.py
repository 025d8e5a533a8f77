"""``gridnode forecast``: subcommands, help, JSON output and error handling through the real CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data import load_shipped
from gridnode import cli
from gridnode.cli import forecast
from market.errors import GridnodeError


def run(argv: list[str]) -> int:
    """Run through ``gridnode.cli.main`` once "forecast" is registered there, else an equivalent
    parser built with this module's ``register`` (same error handling)."""
    if "forecast" in cli._COMMANDS:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="gridnode")
    sub = parser.add_subparsers(dest="command", required=True)
    forecast.register(sub)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except GridnodeError as exc:
        print(f"gridnode {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


@pytest.mark.parametrize("sub", [[], ["backtest"], ["evaluate"], ["plan"]])
def test_every_subcommand_has_help(sub: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(["forecast", *sub, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_backtest_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code = run([
        "forecast", "backtest", "--start", "2009-04-01", "--end", "2009-04-08",
        "--models", "seasonal-naive-week,quantile-regression", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "quantile-regression" in table and "origins=7" in table
    doc = json.loads(out.read_text())
    assert [m["name"] for m in doc["models"]] == [
        "seasonal-naive-day", "seasonal-naive-week", "quantile-regression",
    ]  # fmt: skip
    assert doc["models"][2]["fit_seconds"] > 0


def test_json_to_stdout_is_pure_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = run([
        "forecast", "evaluate", "--start", "2009-06-01", "--days", "2",
        "--pv-scales", "1,0", "--policies", "grid-only,perfect-foresight", "--json", "-",
    ])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in doc] == ["grid-only", "perfect-foresight"]
    assert doc[1]["savings_micro"] >= 0


def test_plan_prints_orders_for_open_slots(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["forecast", "plan", "--now", "2009-06-01T10:07", "--horizon", "4"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["orders"] and {o["side"] for o in doc["orders"]} <= {"buy", "sell"}
    assert all(o["steps"] for o in doc["orders"])


def test_user_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["forecast", "backtest", "--models", "crystal-ball"]) == 2
    assert run(["forecast", "backtest", "--start", "yesterday"]) == 2
    assert run(["forecast", "plan", "--now", "2009-06-01", "--history", "/nonexistent.csv"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 3


def _user_file(tmp_path: Path, days: int, name: str = "meter.csv") -> Path:
    """A real-data export as users have them: local ISO times with their offset, kW columns."""
    h = load_shipped(step_s=900)
    n = 96 * days
    assert h.load_w is not None and h.pv_w is not None
    t = pd.to_datetime(h.start_s + 900 * np.arange(n), unit="s", utc=True).tz_convert(
        "America/Denver"
    )
    frame = pd.DataFrame({"time": [x.isoformat() for x in t],
                          "load_kW": h.load_w[0, :n] / 1000, "pv_kW": h.pv_w[0, :n] / 1000})  # fmt: skip
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_backtest_a_users_file_with_defaults_from_its_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _user_file(tmp_path, 45)
    code = run(["forecast", "backtest", "--history", str(path),
                "--models", "seasonal-naive-day,profile-qr", "--json", "-"])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    # 30 days of history first (profile-qr), then one origin per local midnight to the end
    assert doc["step_s"] == 3600 and doc["horizon"] == 24 and 13 <= doc["origins"] <= 15
    # local midnight at the offset the timestamps carry (all -06:00: April-May is summer time)
    assert (doc["first_origin_s"] - 6 * 3600) % 86_400 == 0


def test_too_little_history_names_the_minimum_and_a_usable_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = _user_file(tmp_path, 20, "short.csv")
    assert run(["forecast", "backtest", "--history", str(short)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "history_too_short" in err
    assert "at least 31 days" in err and "for profile-qr" in err and "20.0 days" in err
    assert str(short) in err
    longer = _user_file(tmp_path, 70, "longer.csv")
    code = run(["forecast", "backtest", "--history", str(longer), "--start", "2007-04-20",
                "--models", "seasonal-naive-day,profile-qr"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--start 2007-05-16 or later" in err


def test_a_file_too_short_for_some_default_models_backtests_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 days: enough for profile-qr (30 before its first origin) and the naive baselines, not
    for quantile-regression (44) nor autoreg (56): those are left out with a note on stderr."""
    path = _user_file(tmp_path, 40)
    assert run(["forecast", "backtest", "--history", str(path), "--json", "-"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert {m["name"] for m in doc["models"]} == {
        "profile-qr", "seasonal-naive-day", "seasonal-naive-week",
    }  # fmt: skip
    note = captured.err.strip()
    assert len(note.splitlines()) == 1 and note.startswith("gridnode forecast: note:")
    assert "quantile-regression 44" in note and "autoreg 56" in note and "40.0 days" in note


def test_bad_files_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _user_file(tmp_path, 40)
    lines = path.read_text().splitlines()
    lines[57] = lines[57].split(",")[0] + ",abc," + lines[57].split(",")[2]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\x01\x02\xff\n\xfe\x00")
    hourly = tmp_path / "hourly.csv"
    hourly.write_text("time_s,net_w\n0,1\n3600,2\n7200,3\n")
    assert run(["forecast", "backtest", "--history", str(bad)]) == 2
    assert run(["forecast", "backtest", "--history", str(garbage)]) == 2
    assert run(["forecast", "backtest", "--history", str(hourly), "--step", "900"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in captured.err
    assert f"{bad} row 58" in errors[0] and "'load_kW'" in errors[0]
