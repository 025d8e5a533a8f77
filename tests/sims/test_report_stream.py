"""The streamed trade table (``sims.report.TradeTable``): the same files as writing the whole table
at once (columns, dtypes, row order, values; CSV bytes), written one row group at a time."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from market.clearing import Trade
from sims.ledger_kpis import SlotMarket, compact_trades, trade_rows
from sims.report import TradeTable

_HOMES = [hashlib.sha256(bytes([i])).hexdigest() for i in range(7)]
_NAMES = {h: f"home-{i}" for i, h in enumerate(_HOMES[:-1])}  # the last one has no name: ""


def _slots(seed: int, slots: int) -> list[list[dict[str, Any]]]:
    """Each slot's rows of the trade table, as the engines make them (some slots trade nothing)."""
    rng = random.Random(seed)
    out = []
    for slot in range(slots):
        trades = []
        for k in range(rng.choice([0, 1, 3, 17])):
            buyer, seller = rng.sample(_HOMES, 2)
            energy, price = rng.randrange(1, 5_000), rng.randrange(50_000, 300_000)
            trades.append(
                Trade(
                    buyer,
                    seller,
                    hashlib.sha256(b"b%d-%d" % (slot, k)).hexdigest(),
                    hashlib.sha256(b"s%d-%d" % (slot, k)).hexdigest(),
                    energy,
                    price,
                    energy * price // 1000,
                )
            )
        m = SlotMarket(slot, slot + 3, 100_000, compact_trades(trades), len(trades), True)
        out.append(trade_rows(m, _NAMES))
    return out


def _whole(rows: list[dict[str, Any]], out: Path) -> None:
    """The table written at once (what ``sims.report`` did before it streamed)."""
    out.mkdir()
    frame = pd.DataFrame(rows)
    frame.to_parquet(out / "trades.parquet", index=False)
    frame.to_csv(out / "trades.csv", index=False)


def _assert_same(a: Path, b: Path) -> None:
    fa, fb = pd.read_parquet(a / "trades.parquet"), pd.read_parquet(b / "trades.parquet")
    assert list(fa.columns) == list(fb.columns)
    assert list(fa.dtypes) == list(fb.dtypes)
    assert fa.equals(fb)
    assert (a / "trades.csv").read_bytes() == (b / "trades.csv").read_bytes()


@pytest.mark.parametrize("group", [1, 7, 64, 10_000])
def test_streamed_table_equals_the_whole_table_one_row_group_at_a_time(
    tmp_path: Path, group: int
) -> None:
    slots = _slots(group, 40)
    rows = [r for s in slots for r in s]
    assert len(rows) > 64  # several groups for the small sizes
    _whole(rows, tmp_path / "whole")
    with TradeTable(tmp_path / "streamed", rows_per_group=group) as table:
        for s in slots:
            table.extend(s)
    _assert_same(tmp_path / "whole", tmp_path / "streamed")
    assert table.max_buffered <= group
    assert table.rows == len(rows)
    parquet = pq.ParquetFile(tmp_path / "streamed" / "trades.parquet")
    assert parquet.num_row_groups == -(-len(rows) // group)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert max(sizes) <= group
    assert sum(sizes) == len(rows)


def test_a_run_without_trades_writes_the_same_empty_table(tmp_path: Path) -> None:
    _whole([], tmp_path / "whole")
    with TradeTable(tmp_path / "streamed") as table:
        table.extend([])
    _assert_same(tmp_path / "whole", tmp_path / "streamed")


def test_a_failed_run_leaves_no_partial_table(tmp_path: Path) -> None:
    rows = [r for s in _slots(1, 20) for r in s]
    with (
        pytest.raises(RuntimeError, match="engine failed"),
        TradeTable(tmp_path, rows_per_group=4) as table,
    ):
        table.extend(rows)
        assert (tmp_path / "trades.parquet").is_file()  # groups already on disk
        raise RuntimeError("engine failed")
    assert not (tmp_path / "trades.parquet").exists()
    assert not (tmp_path / "trades.csv").exists()


def test_rows_must_keep_the_first_rows_columns(tmp_path: Path) -> None:
    rows = [r for s in _slots(2, 10) for r in s]
    with TradeTable(tmp_path) as table:
        table.extend(rows[:2])
        with pytest.raises(ValueError, match="expected"):
            table.extend([{k: v for k, v in rows[2].items() if k != "height"}])
