"""The fault campaign also runs the daemon's adaptive cadence: no violation, and a planted bug in
the executor is still found under it."""

from __future__ import annotations

from sims.campaign import run_campaign


def test_the_adaptive_cadence_keeps_safety_and_liveness_under_faults() -> None:
    summary, found = run_campaign(seeds=3, start_seed=40, cadence="adaptive")
    assert found == [] and summary.violations == 0 and summary.heights > 0


def test_a_planted_executor_bug_is_found_under_the_adaptive_cadence() -> None:
    summary, _ = run_campaign(
        seeds=10, faults=["crash"], negative_control="apply-before-persist", cadence="adaptive"
    )
    assert summary.violations > 0
