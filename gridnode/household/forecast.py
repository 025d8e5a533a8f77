"""A household's forecast of the slots it quotes: one forecaster for one household or a community.

Pure: no clock, no I/O; the same history and ``now_s`` give the same quantiles. Rules of this module:

* :class:`SlotForecaster` wraps one model (a :class:`forecasting.models.Forecaster`). Its
  :meth:`~SlotForecaster.forecast` takes a :class:`~forecasting.series.MeterHistory` of one or
  more households (rows) that ends at or before ``now_s`` (what was known then) and returns one
  :class:`SlotForecast` per row, in row order. The daemon passes its one household; the in-process
  engine passes its whole community's matrix, so the model is fitted and predicted **once** for all
  rows (vectorised), and each household's agent consumes its own row.
* **Fitting**: the model is (re)fitted on the history passed in when it was never fitted, when the
  number of rows changed, or when ``refit_every_s`` seconds passed since the last fit (``0``, the
  default: every call, as both drivers have always done). Predicting always uses the history
  passed in, so a stale fit still forecasts from the latest meter data.
* **Slot quantiles**: each requested slot takes the forecast mean power of the interval that
  contains its start, times the slot length (:func:`forecasting.policy.slot_quantiles`, all rows
  at once), as integer Wh at P10 ≤ P50 ≤ P90. A slot whose gate is closed at ``now_s`` or that starts more than
  a day (the models' longest horizon) after the history ends is left out.
* :func:`foresight` is the *perfect-foresight* policy's forecast: every quantile of a slot is the
  net the meter will measure in it (only a simulation or a replay meter knows it).
* Every :class:`SlotForecast` names the model version that produced it (``model``): today the
  model's name (``seasonal-naive-day``, ``perfect-foresight``). Orders placed from it are traced to
  it through the agent's :class:`~gridnode.household.agent.Quote`.

Known limit: fitting runs on the caller's thread at the slot boundary (cheap for the seasonal-naive
model: ≈ 70 ms for 1,000 households); a slow model wants ``refit_every_s`` and a fit scheduled off
the slot's hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from forecasting.models import FittedForecaster, Forecaster, SeasonalNaive
from forecasting.policy import SlotQuantiles, slot_quantiles
from forecasting.series import MeterHistory
from market.errors import UsageError
from market.slots import SlotClock

__all__ = ["FORESIGHT_MODEL", "SlotForecast", "SlotForecaster", "bidding_forecaster", "foresight"]

#: the model name of :func:`foresight`'s forecasts
FORESIGHT_MODEL = "perfect-foresight"


@dataclass(frozen=True, slots=True)
class SlotForecast:
    """One household's forecast net surplus of the slots it asked for, and which model made it."""

    model: str
    quantiles: tuple[SlotQuantiles, ...]  # ascending slots


def foresight(actual_wh: Iterable[tuple[int, int | None]]) -> SlotForecast:
    """Perfect foresight of ``(slot, net Wh the meter will read)`` pairs: every quantile is the
    actual net; a slot without a reading (``None``) is left out."""
    return SlotForecast(
        FORESIGHT_MODEL,
        tuple(SlotQuantiles(s, wh, wh, wh) for s, wh in actual_wh if wh is not None),
    )


def bidding_forecaster() -> SlotForecaster:
    """The forecaster households bid with: seasonal naive (same time yesterday, error quantiles
    from the last 28 days), refitted at every boundary."""
    return SlotForecaster(SeasonalNaive(period_days=1, train_days=28))


class SlotForecaster:
    """One model, fitted on a history of one or many households (see the module rules)."""

    def __init__(self, model: Forecaster, *, refit_every_s: int = 0) -> None:
        if refit_every_s < 0:
            raise UsageError(f"refit_every_s must be >= 0, got {refit_every_s}")
        self.model = model
        self.refit_every_s = refit_every_s
        self._fitted: FittedForecaster | None = None
        self._fitted_at_s = 0
        self._rows = 0

    @property
    def name(self) -> str:
        """The model version its forecasts name."""
        return self.model.name

    def fit(self, history: MeterHistory, *, now_s: int) -> None:
        """Fit the model on ``history`` now (the next forecasts use this fit)."""
        self._fitted = self.model.fit(history)
        self._fitted_at_s = now_s
        self._rows = history.households

    def forecast(
        self, history: MeterHistory, *, now_s: int, slots: Sequence[int], clock: SlotClock
    ) -> list[SlotForecast]:
        """Each row's quantiles for ``slots`` (see the module rules). Raises the model's
        :class:`~market.errors.InvalidInput` (``history_too_short``) when it cannot forecast."""
        if history.end_s > now_s:
            raise UsageError(f"history ends at {history.end_s}, after now={now_s}: the future")
        wanted = sorted(set(slots))
        rows = history.households
        if not wanted:
            return [SlotForecast(self.name, ()) for _ in range(rows)]
        step = history.step_s
        horizon = min(-(-(clock.end(wanted[-1]) - history.end_s) // step), history.steps_per_day)
        if (
            self._fitted is None
            or self._rows != rows
            or now_s - self._fitted_at_s >= self.refit_every_s
        ):
            self.fit(history, now_s=now_s)
        assert self._fitted is not None
        fc = self._fitted.predict(history, horizon)
        keep = set(wanted)
        return [
            SlotForecast(self.name, tuple(q for q in row if q.slot in keep))
            for row in slot_quantiles(fc, now=now_s, clock=clock)
        ]
