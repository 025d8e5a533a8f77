"""`gridnode clear` as a user runs it: a real process, real files, JSON out, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from market.clearing import clear
from market.jsonbook import parse_book, result_to_json

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "book.json"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridnode", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clears_the_example_book() -> None:
    p = run("clear", str(EXAMPLE))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    slot, rule, orders = parse_book(json.loads(EXAMPLE.read_text()))
    assert out == result_to_json(clear(orders, slot=slot, rule=rule))
    assert set(out) >= {"clearing_price", "volume_wh", "trades"}
    assert out["volume_wh"] == sum(t["energy_wh"] for t in out["trades"]) > 0
    assert all(
        set(t) == {"buyer", "seller", "buy_order", "sell_order", "energy_wh", "price", "amount"}
        for t in out["trades"]
    )


def test_reads_stdin_and_pay_as_bid() -> None:
    book = json.loads(EXAMPLE.read_text()) | {"rule": "pay-as-bid"}
    p = run("clear", "-", stdin=json.dumps(book))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["clearing_price"] is None
    assert len({t["price"] for t in out["trades"]}) > 1


BAD = [
    ("{not json", "malformed_json"),
    ('{"slot": 1, "rule": "pay-as-clear"}', "missing_field"),
    ('{"slot": 1, "rule": "pay-as-clear", "orders": [], "extra": 1}', "'extra'"),
    ('{"slot": 1, "rule": "auction", "orders": []}', "field 'rule'"),
    ('{"slot": "1", "rule": "pay-as-clear", "orders": []}', "field 'slot'"),
    (
        '{"slot": 1, "rule": "pay-as-clear", "orders": [{"id": "o7", "household": "h", "side": "buy",'
        ' "steps": [{"price": 10, "energy_wh": -5}]}]}',
        "order 'o7' field 'steps[0].energy_wh': non_positive_energy",
    ),
    (
        '{"slot": 1, "rule": "pay-as-clear", "orders": [{"id": "o8", "household": "h", "side": "buy",'
        ' "colour": "red", "steps": [{"price": 10, "energy_wh": 5}]}]}',
        "order 'o8' field 'colour': unknown_field",
    ),
    (
        '{"slot": 1, "rule": "pay-as-clear", "orders": [{"id": "o9", "household": "h", "side": "hold",'
        ' "steps": [{"price": 10, "energy_wh": 5}]}]}',
        "order 'o9' field 'side'",
    ),
    (
        '{"slot": 1, "rule": "pay-as-clear", "orders": [{"id": "d", "household": "h", "side": "buy",'
        ' "steps": [{"price": 10, "energy_wh": 5}]}, {"id": "d", "household": "g", "side": "sell",'
        ' "steps": [{"price": 10, "energy_wh": 5}]}]}',
        "order 'd' field 'id': duplicate_id",
    ),
    (
        '{"slot": 1, "rule": "pay-as-clear", "orders": [{"id": "t", "household": "h", "side": "buy",'
        ' "steps": [{"price": true, "energy_wh": 5}]}]}',
        "order 't' field 'steps[0].price': bad_type",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_input_exits_non_zero_with_a_precise_message(text: str, message: str) -> None:
    p = run("clear", "-", stdin=text)
    assert p.returncode == 2
    assert p.stdout == ""
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_missing_file_and_help() -> None:
    p = run("clear", "/nonexistent/book.json")
    assert (p.returncode, p.stdout) == (2, "")
    assert "/nonexistent/book.json" in p.stderr
    h = run("clear", "--help")
    assert h.returncode == 0
    assert "docs/clear.md" in h.stdout
