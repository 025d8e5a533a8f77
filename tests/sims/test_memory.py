"""What a long in-process run keeps grows with what it must, not with the run's length."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sims.inproc_kpis import LatencyCounts


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
