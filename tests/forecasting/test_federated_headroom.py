"""``benchmarks/federated_headroom.py``: the hindsight bound is the best fixed per-lead convex blend
of the three ingredients (never worse than any one of them; exact when the answer is a blend on its
grid), the clusters' k-means start is deterministic, and a bad ``--clusters`` is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.benchscripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "federated_headroom.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("federated_headroom")


def _parts(rng: np.random.Generator, days: int, leads: int) -> dict[str, np.ndarray]:
    return {
        name: rng.normal(0.0, 500.0, (days, leads))
        for name in ("corrected", "profile", "fallback", "actual")
    }


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.integers(1, 6), leads=st.integers(1, 4))
def test_bound_is_never_worse_than_any_one_ingredient(
    bench: ModuleType, seed: int, days: int, leads: int
) -> None:
    parts = _parts(np.random.default_rng(seed), days, leads)
    bound, weights = bench.hindsight_bound(parts)
    per_lead_best = np.min(
        [
            np.abs(parts[n] - parts["actual"]).mean(axis=0)
            for n in ("corrected", "profile", "fallback")
        ],
        axis=0,
    )
    assert 0.0 <= bound <= float(per_lead_best.mean()) + 1e-9
    assert len(weights) == leads
    assert all(abs(sum(w) - 1.0) < 1e-9 and min(w) >= 0.0 for w in weights)


@settings(max_examples=25, deadline=None)
@given(
    a=st.integers(0, 50),
    b=st.integers(0, 50),
    base=arrays(np.float64, (5, 3), elements=st.floats(-2000.0, 2000.0)),
)
def test_bound_finds_a_blend_on_its_grid(
    bench: ModuleType, a: int, b: int, base: np.ndarray
) -> None:
    if a + b > 50:
        a = 50 - b
    w = np.array([a, b, 50 - a - b]) / 50.0
    rng = np.random.default_rng(1)
    parts = _parts(rng, 5, 3)
    parts["corrected"] = base
    parts["actual"] = w[0] * base + w[1] * parts["profile"] + w[2] * parts["fallback"]
    bound, _ = bench.hindsight_bound(parts)
    assert bound < 1e-6


def test_kmeans_splits_separated_groups_the_same_way_every_time(bench: ModuleType) -> None:
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0.0, 0.1, (5, 4)), rng.normal(5.0, 0.1, (7, 4))])
    first = bench._kmeans(z, 2)
    assert np.array_equal(first, bench._kmeans(z, 2))
    assert len(set(first[:5])) == 1 and len(set(first[5:])) == 1 and first[0] != first[5]


def test_clusters_below_two_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--clusters", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].endswith("--clusters: every K must be at least 2")
