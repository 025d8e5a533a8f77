"""Privacy accounting over rounds (forecasting/dp.py): the Gaussian mechanism's exact (ε, δ) curve,
its composition over rounds, budgets and a member's running account."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.dp import DpBudget, DpSpend, gdp_delta, gdp_epsilon, gdp_mu, zcdp_epsilon
from forecasting.secagg import DpConfig, SecAggError, SecAggReason, gaussian_sigma
from market.errors import UsageError


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def test_one_round_is_the_analytic_gaussian_mechanism() -> None:
    # δ(0) of μ-GDP is the total variation between N(0,1) and N(μ,1): 2Φ(μ/2) − 1 (closed form)
    for mu in (0.1, 0.5, 1.0, 3.0):
        assert gdp_delta(0.0, mu) == pytest.approx(2 * _phi(mu / 2) - 1, rel=1e-12)
    # Balle & Wang's calibration: σ/Δ ≈ 3.73 at ε = 1, δ = 1e-5 (the classical
    # sqrt(2 ln(1.25/δ))/ε = 4.84 is looser), ≈ 1.99 at ε = 2
    assert 1 / gdp_mu(1.0, 1e-5) == pytest.approx(3.7306, abs=1e-3)
    assert 1 / gdp_mu(2.0, 1e-5) == pytest.approx(1.9938, abs=1e-3)
    assert 1 / gdp_mu(0.5, 1e-5) < math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    assert gaussian_sigma(1.0, 1e-5, 10.0) == pytest.approx(10 / gdp_mu(1.0, 1e-5), rel=1e-12)


@settings(deadline=None)  # bisections: slow under a loaded machine, never wrong
@given(st.floats(0.05, 20.0), st.sampled_from([1e-3, 1e-5, 1e-8]))
def test_epsilon_and_mu_invert_the_delta_curve(mu: float, delta: float) -> None:
    eps = gdp_epsilon(mu, delta)
    assert eps >= 0
    if eps > 0:
        assert gdp_delta(eps, mu) == pytest.approx(delta, rel=1e-6)
        if eps <= 100:
            assert gdp_mu(eps, delta) == pytest.approx(mu, rel=1e-6)
    # the zCDP conversion (ρ = μ²/2) is an upper bound, never below the exact curve
    assert eps <= zcdp_epsilon(mu * mu / 2, delta) + 1e-9


@settings(deadline=None)  # bisections: slow under a loaded machine, never wrong
@given(st.floats(0.3, 50.0), st.integers(1, 400), st.sampled_from([1e-5, 1e-7]))
def test_rounds_compose_exactly_and_the_spend_grows_with_every_round(
    z: float, rounds: int, delta: float
) -> None:
    spend = DpSpend()
    last = 0.0
    for _ in range(rounds):
        spend = spend.after(z)
        eps = spend.epsilon(delta)
        assert eps >= last  # monotone in rounds
        last = eps
    # R rounds at σ = zC are one Gaussian mechanism at σ = zC / sqrt(R)
    assert spend.rounds == rounds
    assert spend.epsilon(delta) == pytest.approx(
        gdp_epsilon(math.sqrt(rounds) / z, delta), rel=1e-9
    )
    assert DpSpend().after(z).after(z).epsilon(delta) > DpSpend().after(z).epsilon(delta)


@settings(deadline=None)  # bisections: slow under a loaded machine, never wrong
@given(st.floats(0.1, 20.0), st.integers(1, 1000))
def test_a_budget_is_spent_exactly_by_its_rounds_and_then_refuses(eps: float, rounds: int) -> None:
    budget = DpBudget(eps, 1e-5, rounds)
    z = budget.noise_multiplier
    spend = DpSpend(rounds - 1, (rounds - 1) / z**2)
    assert spend.allows(budget, z)
    spend = spend.after(z)
    assert spend.epsilon(1e-5) == pytest.approx(eps, rel=1e-6)
    assert not spend.allows(budget, z)  # the horizon is spent
    assert not DpSpend().allows(budget, z / 1.01 / math.sqrt(rounds) / 2)  # too little noise
    assert DpSpend().allows(budget, 10 * z)


def test_the_doc_per_round_budgets_over_14_rounds() -> None:
    """What the old table's per-round ε gave a household over the benchmark's 14 rounds."""
    per_round_2 = DpSpend(14, 14 / (1 / gdp_mu(2.0, 1e-5)) ** 2).epsilon(1e-5)
    assert 9.0 < per_round_2 < 9.5
    # a total budget over 14 rounds: σ/C per round = sqrt(14) / μ
    cfg = DpConfig(2.0, 1e-5, 1e9, rounds=14)
    assert cfg.noise_multiplier == pytest.approx(math.sqrt(14) / gdp_mu(2.0, 1e-5))
    assert DpConfig(2.0, 1e-5, 1e9).sigma == pytest.approx(gaussian_sigma(2.0, 1e-5, 1e9))


def test_bad_budgets_are_refused() -> None:
    for eps, delta, rounds in ((0.0, 1e-5, 1), (1.0, 0.0, 1), (1.0, 1.0, 1), (101.0, 1e-5, 1),
                               (1.0, 1e-5, 0)):  # fmt: skip
        with pytest.raises(UsageError, match="DP"):
            DpBudget(eps, delta, rounds)
    with pytest.raises(UsageError, match="noise multiplier"):
        DpSpend().after(0.0)
    with pytest.raises(SecAggError) as info:
        gaussian_sigma(1.0, 1e-5, 1.0, rounds=0)
    assert info.value.reason is SecAggReason.BAD_SPEC
