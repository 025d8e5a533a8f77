"""Rolling-origin backtests of forecasters on a meter history.

Rules of this module:

* Origins run from ``start_s`` every ``origin_every_steps`` intervals while the whole horizon fits
  before ``end_s``. At each origin a model sees only ``history.until(origin)``: no look-ahead. Models
  are refitted on that past every ``refit_every_days`` days (the first fit at the first origin).
* Scores compare the P50 with the actual ``target`` series: MAE and RMSE (W), the mean pinball loss
  over the quantile levels (W), the share of actuals inside [P10, P90] (coverage), and MAE skill
  ``1 - MAE / MAE_baseline`` against ``baseline`` (seasonal naive, one day) on the same origins.
  Per-horizon MAE and coverage are kept too, and broken down per household and per calendar month
  of the origin (local time), each per horizon step, so a report can say which homes and seasons a
  model serves well; the headline figures pool all households.
* Pure: the only optional impurity is ``clock``, a function the *caller* passes to time fits and
  predictions (``time.perf_counter`` in the CLI and benchmark, nothing in tests); without it costs
  are reported as ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from forecasting.models import (
    QUANTILES,
    FittedForecaster,
    Forecaster,
    SeasonalNaive,
    Target,
    target_values,
)
from forecasting.series import FloatArray, MeterHistory
from market.errors import UsageError

__all__ = ["BacktestReport", "ModelScore", "backtest", "format_table", "pinball_loss"]


@dataclass(frozen=True, slots=True)
class ModelScore:
    """One model's scores over all origins, horizons and households."""

    name: str
    mae_w: float
    rmse_w: float
    pinball_w: float
    coverage_p10_p90: float
    skill_mae: float
    mae_by_horizon_w: tuple[float, ...]
    coverage_by_horizon: tuple[float, ...]
    #: ``[household][horizon step]``, households in the history's row order
    mae_by_household_w: tuple[tuple[float, ...], ...]
    coverage_by_household: tuple[tuple[float, ...], ...]
    #: ``[month − 1][horizon step]`` by the origin's local calendar month; ``()`` for a month
    #: without origins (:attr:`BacktestReport.origins_by_month` counts them)
    mae_by_month_w: tuple[tuple[float, ...], ...]
    coverage_by_month: tuple[tuple[float, ...], ...]
    fits: int
    fit_seconds: float | None
    predict_ms_per_household: float | None


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """What was evaluated and how each model scored (``scores[0]`` is the baseline)."""

    target: str
    step_s: int
    horizon: int
    households: int
    origins: int
    first_origin_s: int
    last_origin_s: int
    baseline: str
    scores: tuple[ModelScore, ...]
    origins_by_month: tuple[int, ...] = (0,) * 12

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded to 4 significant decimals)."""

        def rnd(v: float | None) -> float | None:
            return None if v is None else round(float(v), 4)

        def rows(table: tuple[tuple[float, ...], ...]) -> list[list[float | None]]:
            return [[rnd(v) for v in row] for row in table]

        return {
            "target": self.target,
            "step_s": self.step_s,
            "horizon": self.horizon,
            "households": self.households,
            "origins": self.origins,
            "first_origin_s": self.first_origin_s,
            "last_origin_s": self.last_origin_s,
            "baseline": self.baseline,
            "origins_by_month": list(self.origins_by_month),
            "models": [
                {
                    "name": s.name,
                    "mae_w": rnd(s.mae_w),
                    "rmse_w": rnd(s.rmse_w),
                    "pinball_w": rnd(s.pinball_w),
                    "coverage_p10_p90": rnd(s.coverage_p10_p90),
                    "skill_mae": rnd(s.skill_mae),
                    "mae_by_horizon_w": [rnd(v) for v in s.mae_by_horizon_w],
                    "coverage_by_horizon": [rnd(v) for v in s.coverage_by_horizon],
                    "mae_by_household_w": rows(s.mae_by_household_w),
                    "coverage_by_household": rows(s.coverage_by_household),
                    "mae_by_month_w": rows(s.mae_by_month_w),
                    "coverage_by_month": rows(s.coverage_by_month),
                    "fits": s.fits,
                    "fit_seconds": rnd(s.fit_seconds),
                    "predict_ms_per_household": rnd(s.predict_ms_per_household),
                }
                for s in self.scores
            ],
        }


def pinball_loss(actual: FloatArray, forecast: FloatArray, levels: Sequence[float]) -> float:
    """Mean pinball loss of ``forecast[..., k]`` at ``levels[k]`` against ``actual``."""
    total = 0.0
    for k, q in enumerate(levels):
        diff = actual - forecast[..., k]
        total += float(np.mean(np.maximum(q * diff, (q - 1.0) * diff)))
    return total / len(levels)


@dataclass(slots=True)
class _Run:
    fitted: FittedForecaster | None = None
    fits: int = 0
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    next_refit: int = 0


def backtest(
    history: MeterHistory,
    models: Sequence[Forecaster],
    *,
    start_s: int,
    end_s: int,
    horizon: int,
    origin_every_steps: int | None = None,
    refit_every_days: int = 28,
    target: Target = Target.NET,
    baseline: Forecaster | None = None,
    clock: Callable[[], float] | None = None,
) -> BacktestReport:
    """Rolling-origin evaluation of ``models`` (see the module rules)."""
    every = origin_every_steps or history.steps_per_day
    base = baseline or SeasonalNaive(period_days=1, target=target)
    if any(m.name == base.name for m in models):
        models = [m for m in models if m.name != base.name]
    everyone = [base, *models]
    first = history.index_at(start_s)
    last = history.index_at(end_s) - horizon
    origins = list(range(first, last + 1, every))
    if not origins:
        raise UsageError(f"no origin in [{start_s}, {end_s}) leaves room for horizon {horizon}")
    actual_all = target_values(history, target)
    t = np.asarray(origins)[:, None] + np.arange(horizon)[None, :]
    actual = actual_all[:, t]  # (n, origins, H)
    refit_steps = refit_every_days * history.steps_per_day
    local_s = history.start_s + np.asarray(origins) * history.step_s + history.utc_offset_s
    month = local_s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
    origins_by_month = tuple(int(c) for c in np.bincount(month, minlength=12))
    scores = []
    base_mae = None
    for model in everyone:
        run = _Run(next_refit=origins[0])
        preds = np.zeros((*actual.shape, len(QUANTILES)))
        for k, origin in enumerate(origins):
            past = history.until(history.start_s + origin * history.step_s)
            if run.fitted is None or origin >= run.next_refit:
                t0 = clock() if clock else 0.0
                run.fitted = model.fit(past)
                run.fit_seconds += (clock() - t0) if clock else 0.0
                run.fits += 1
                run.next_refit = origin + refit_steps
            t0 = clock() if clock else 0.0
            preds[:, k] = run.fitted.predict(past, horizon).values_w
            run.predict_seconds += (clock() - t0) if clock else 0.0
        p50 = preds[..., QUANTILES.index(0.5)]
        err = p50 - actual
        mae = float(np.mean(np.abs(err)))
        if base_mae is None:
            base_mae = mae
        inside = (actual >= preds[..., 0]) & (actual <= preds[..., -1])
        scores.append(
            ModelScore(
                name=model.name,
                mae_w=mae,
                rmse_w=float(np.sqrt(np.mean(err**2))),
                pinball_w=pinball_loss(actual, preds, QUANTILES),
                coverage_p10_p90=float(np.mean(inside)),
                skill_mae=1.0 - mae / base_mae if base_mae > 0 else 0.0,
                mae_by_horizon_w=tuple(float(v) for v in np.abs(err).mean(axis=(0, 1))),
                coverage_by_horizon=tuple(float(v) for v in inside.mean(axis=(0, 1))),
                mae_by_household_w=_table(np.abs(err).mean(axis=1)),
                coverage_by_household=_table(inside.mean(axis=1)),
                mae_by_month_w=_by_month(np.abs(err).mean(axis=0), month),
                coverage_by_month=_by_month(inside.mean(axis=0), month),
                fits=run.fits,
                fit_seconds=run.fit_seconds if clock else None,
                predict_ms_per_household=(
                    1000.0 * run.predict_seconds / len(origins) / history.households
                    if clock
                    else None
                ),
            )
        )
    return BacktestReport(
        target=target.value,
        step_s=history.step_s,
        horizon=horizon,
        households=history.households,
        origins=len(origins),
        first_origin_s=history.start_s + origins[0] * history.step_s,
        last_origin_s=history.start_s + origins[-1] * history.step_s,
        baseline=base.name,
        scores=tuple(scores),
        origins_by_month=origins_by_month,
    )


def _table(values: FloatArray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in values)


def _by_month(
    per_origin: FloatArray, month: npt.NDArray[np.int64]
) -> tuple[tuple[float, ...], ...]:
    """``(origins, H)`` values averaged per origin month: 12 rows, ``()`` for empty months."""
    return tuple(
        tuple(float(v) for v in per_origin[month == m].mean(axis=0)) if np.any(month == m) else ()
        for m in range(12)
    )


def format_table(report: BacktestReport) -> str:
    """A plain-text table of the report (kW for errors, % for skill and coverage)."""
    head = (
        f"target={report.target} step={report.step_s}s horizon={report.horizon} "
        f"households={report.households} origins={report.origins} baseline={report.baseline}"
    )
    cols = f"{'model':<24}{'MAE kW':>9}{'RMSE kW':>9}{'pinball':>9}{'P10-P90':>9}{'skill':>8}"
    cols += f"{'fit s':>9}{'ms/hh':>9}"
    lines = [head, cols]
    for s in report.scores:
        fit = "-" if s.fit_seconds is None else f"{s.fit_seconds:.2f}"
        ms = "-" if s.predict_ms_per_household is None else f"{s.predict_ms_per_household:.3f}"
        lines.append(
            f"{s.name:<24}{s.mae_w / 1000:>9.3f}{s.rmse_w / 1000:>9.3f}{s.pinball_w / 1000:>9.3f}"
            f"{100 * s.coverage_p10_p90:>8.1f}%{100 * s.skill_mae:>+7.1f}%{fit:>9}{ms:>9}"
        )
    return "\n".join(lines)
