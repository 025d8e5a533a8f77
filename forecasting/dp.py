"""Privacy accounting of the Gaussian mechanism over federated rounds (user-level, full participation).

Rules of this module (pure: no I/O, no clock, no randomness):

* **One round** adds Gaussian noise of standard deviation ``σ = z·C`` to a sum whose sensitivity to
  one household is ``C`` (each member clips its update to L2 norm ``C``); ``z`` is the round's
  *noise multiplier*. Such a round is exactly ``μ``-Gaussian DP with ``μ = 1/z`` (Dong, Roth & Su
  2019, "Gaussian differential privacy", Thm 2.7).
* **Rounds compose exactly**: ``R`` adaptively chosen rounds with multipliers ``z_1 … z_R`` are
  together ``μ``-GDP with ``μ = sqrt(Σ 1/z_i²)`` (ibid., Cor. 3.3), and this is tight for the
  Gaussian mechanism: the household's privacy loss over the rounds is the same as one Gaussian
  mechanism's. Zero-concentrated DP (``ρ = Σ 1/(2 z_i²)``, Bun & Steinke 2016) gives the same
  composition (``ρ = μ²/2``) but a looser conversion to ``(ε, δ)``; :func:`zcdp_epsilon` is kept
  as the cross-check.
* **(ε, δ) of μ-GDP** (:func:`gdp_delta`): ``δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)``, the exact
  privacy profile of the Gaussian mechanism (Balle & Wang 2018's analytic Gaussian condition with
  ``μ = Δ/σ``). :func:`gdp_epsilon` inverts it in ``ε``, :func:`gdp_mu` in ``μ`` (bisection on a
  monotone function: ``δ`` falls with ``ε`` and rises with ``μ``).
* **A budget** (:class:`DpBudget`) is what a household states: a *total* ``(ε, δ)`` over a horizon
  of ``rounds`` rounds. Its per-round multiplier is ``z = sqrt(rounds) / μ_total``
  (:attr:`DpBudget.noise_multiplier`), so ``rounds`` rounds at ``z`` spend exactly the budget.
* **The spend** (:class:`DpSpend`) is a member's running account: the rounds it contributed to and
  ``Σ 1/z_i²``. A member may contribute to a round at multiplier ``z`` only if the account *after*
  it stays within its budget (:meth:`DpSpend.allows`); the ε it has spent is
  :meth:`DpSpend.epsilon`.

What the guarantee covers: every member's update in each round it contributed to, as one
household's record (user level), provided at least the round's threshold of contributors add their
noise share honestly (the sum then carries at least ``N(0, σ²)``). Rounded noise is close to, not
exactly, the continuous Gaussian the accounting assumes (the discrete Gaussian would be exact).
Rounds a member does not contribute to cost it nothing. A budget is finite: after its horizon the
member stops contributing (the model it already has stays usable: post-processing is free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from market.errors import UsageError

__all__ = [
    "MAX_EPSILON",
    "DpBudget",
    "DpSpend",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu",
    "zcdp_epsilon",
]

#: budgets above this are refused (the accounting's exponentials stay finite; no privacy is left)
MAX_EPSILON: Final = 100.0
_STEPS: Final = 200  # bisection steps (float64 resolution long before)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _check(epsilon: float, delta: float) -> None:
    if not (0.0 < epsilon <= MAX_EPSILON and 0.0 < delta < 1.0):
        raise UsageError(f"DP needs 0 < epsilon <= {MAX_EPSILON} and 0 < delta < 1")


def gdp_delta(epsilon: float, mu: float) -> float:
    """The smallest ``δ`` for which ``μ``-GDP (a Gaussian mechanism with ``Δ/σ = μ``) is
    ``(ε, δ)``-DP (module rules)."""
    if mu <= 0.0:
        return 0.0
    a = epsilon / mu
    tail = _phi(-a - mu / 2.0)
    scaled = math.exp(epsilon + math.log(tail)) if tail > 0.0 else 0.0  # e^ε·Φ, no overflow
    return max(0.0, _phi(-a + mu / 2.0) - scaled)


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest ``ε`` for which ``μ``-GDP is ``(ε, δ)``-DP (0 when ``μ = 0``)."""
    if not 0.0 < delta < 1.0:
        raise UsageError("DP needs 0 < delta < 1")
    if mu <= 0.0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2.0
        if hi > 1e4:
            return math.inf
    for _ in range(_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if gdp_delta(mid, mu) <= delta else (mid, hi)
    return hi


def gdp_mu(epsilon: float, delta: float) -> float:
    """The largest ``μ`` whose ``μ``-GDP is ``(ε, δ)``-DP: the budget a Gaussian mechanism (or a
    composition of them) may spend."""
    _check(epsilon, delta)
    lo, hi = 0.0, 1.0
    while gdp_delta(epsilon, hi) <= delta:
        lo, hi = hi, 2.0 * hi
    for _ in range(_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gdp_delta(epsilon, mid) <= delta else (lo, mid)
    return lo


def zcdp_epsilon(rho: float, delta: float) -> float:
    """``ε`` of ``ρ``-zCDP at ``δ`` by Bun & Steinke's conversion ``ρ + 2 sqrt(ρ ln(1/δ))`` (an
    upper bound; looser than :func:`gdp_epsilon` for the Gaussian mechanism, kept to check it)."""
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


@dataclass(frozen=True, slots=True)
class DpBudget:
    """A household's total privacy budget: ``(epsilon, delta)`` over ``rounds`` rounds."""

    epsilon: float
    delta: float
    rounds: int

    def __post_init__(self) -> None:
        _check(self.epsilon, self.delta)
        if self.rounds < 1:
            raise UsageError(f"a DP budget covers at least 1 round, got {self.rounds}")

    @property
    def mu(self) -> float:
        """The total GDP ``μ`` the budget allows."""
        return gdp_mu(self.epsilon, self.delta)

    @property
    def noise_multiplier(self) -> float:
        """``z = σ / C`` per round so that :attr:`rounds` rounds spend exactly the budget."""
        return math.sqrt(self.rounds) / self.mu


@dataclass(frozen=True, slots=True)
class DpSpend:
    """A member's running privacy account (module rules): rounds contributed to and ``Σ 1/z²``."""

    rounds: int = 0
    mu_squared: float = 0.0

    def after(self, noise_multiplier: float) -> DpSpend:
        """The account after one more round at ``noise_multiplier``."""
        if not noise_multiplier > 0.0 or not math.isfinite(noise_multiplier):
            raise UsageError(f"a noise multiplier is > 0, got {noise_multiplier}")
        return DpSpend(self.rounds + 1, self.mu_squared + 1.0 / noise_multiplier**2)

    @property
    def mu(self) -> float:
        return math.sqrt(self.mu_squared)

    def epsilon(self, delta: float) -> float:
        """The ε this account has spent at ``delta``."""
        return gdp_epsilon(self.mu, delta)

    def allows(self, budget: DpBudget, noise_multiplier: float) -> bool:
        """Whether one more round at ``noise_multiplier`` stays within ``budget``."""
        if not noise_multiplier > 0.0:
            return False
        return self.after(noise_multiplier).mu_squared <= budget.mu**2 * (1.0 + 1e-9)
