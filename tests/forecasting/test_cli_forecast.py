"""``gridnode forecast``: subcommands, help, JSON output and error handling through the real CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

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
