"""What a long in-process run keeps grows with what it must, not with the run's length."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sims.inproc
from sims.inproc import results_digest, run_inproc
from sims.inproc_kpis import LatencyCounts
from sims.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def _pct(values: list[int], p: int) -> float | None:
    """The definition: item ``min(n - 1, n * p // 100)`` of the sorted values."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, len(ordered) * p // 100)]) if ordered else None


@given(st.lists(st.integers(min_value=0, max_value=120_000), max_size=300))
def test_latency_counts_give_the_percentiles_of_the_sorted_list(values: list[int]) -> None:
    counts = LatencyCounts()
    for v in values:
        counts.append(v)
    assert len(counts) == len(values)
    for p in (0, 1, 50, 90, 99, 100):
        assert counts.percentile(p) == _pct(values, p)


def test_latency_counts_hold_distinct_values_not_one_entry_per_transaction() -> None:
    """A year commits ~7 M transactions; their latencies (ms, at most minutes) take ≤ 1 entry per
    distinct value."""
    rng = random.Random(7)
    counts = LatencyCounts()
    for _ in range(200_000):
        counts.append(rng.randrange(0, 5_000))
    assert len(counts) == 200_000
    assert counts.distinct() <= 5_000


def test_emptying_the_shared_caches_often_changes_no_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine empties its shared verified-signature set and admission answers beyond a bound
    (a year's run would otherwise hold ≈ 100 MB of them): caches only, the results are the same
    when they are emptied at almost every commit."""
    base = load_scenario(SCENARIOS / "small.toml")
    sc = dataclasses.replace(base, days=0.125, start_hour=10.0, block_interval_s=120)
    keeping = run_inproc(sc, full_node="inline")
    monkeypatch.setattr(sims.inproc, "VERIFIED_KEPT", 10)
    monkeypatch.setattr(sims.inproc, "ADMISSION_KEPT", 10)
    monkeypatch.setattr(sims.inproc, "VERIFIED_VOTES_KEPT", 10)
    forgetful = run_inproc(sc, full_node="inline")
    assert keeping.ledger_agreement and keeping.blocks_committed > 0
    assert results_digest(forgetful) == results_digest(keeping)
