"""Prophet as an optional forecaster (``pip install prophet``; imported only when fitted).

Rules of this module:

* :class:`ProphetForecaster` fits one Prophet model per household on the last ``window_days`` of the
  target series (daily and weekly seasonality on the household's local clock, no yearly term, no
  holidays) and forecasts by evaluating that model at the target times: P50 is ``yhat``, P10/P90
  are ``yhat_lower``/``yhat_upper`` at ``interval_width=0.8``. Predict does not look at data newer
  than the fit, so refit it daily (that is the cost: about 0.1–1 s per household fit here).
* Deterministic: Prophet's uncertainty sampling is seeded by ``seed`` (numpy's legacy global state is
  saved and restored around the call), and the MAP fit is deterministic.
* Prophet runs CmdStan in a subprocess with temporary files: the one forecaster that is not free of
  I/O. It never reads our clock and never downloads anything (the wheel carries its model).
* Deprecation warnings raised inside prophet's own code are silenced (pandas 3 deprecates APIs
  prophet 1.5 uses); ours are not.
* Without prophet installed, constructing works and :meth:`ProphetForecaster.fit` raises
  :class:`~market.errors.UsageError` naming the package to install.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

from forecasting.models import QUANTILES, QuantileForecast, Target, _make_forecast, target_values
from forecasting.series import MeterHistory
from market.errors import UsageError

__all__ = ["ProphetForecaster", "prophet_available"]


def prophet_available() -> bool:
    """Whether the optional ``prophet`` package can be imported."""
    try:
        importlib.import_module("prophet")
    except ImportError:
        return False
    return True


@contextmanager
def _quiet_prophet() -> Iterator[None]:
    """Silence deprecation warnings raised *inside* prophet's code (prophet 1.5 calls pandas APIs
    that pandas 3 deprecates); warnings from our own code still surface."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"prophet(\.|$)")
        yield


def _local_times(history: MeterHistory, idx: np.ndarray[Any, Any]) -> pd.Series:
    t = history.start_s + np.asarray(idx, dtype=np.int64) * history.step_s + history.utc_offset_s
    return pd.Series(pd.to_datetime(t, unit="s"))


@dataclass(frozen=True, slots=True)
class ProphetForecaster:
    """Prophet on the last ``window_days`` days (see the module rules)."""

    window_days: int = 30
    target: Target = Target.NET
    seed: int = 0

    @property
    def name(self) -> str:
        return "prophet"

    @property
    def min_history_days(self) -> int:
        return 2

    def fit(self, history: MeterHistory) -> FittedProphet:
        try:
            prophet = importlib.import_module("prophet")
        except ImportError as exc:
            raise UsageError("the prophet model needs `pip install prophet`") from exc
        for name in ("cmdstanpy", "prophet"):
            logging.getLogger(name).setLevel(logging.WARNING)
        s = history.steps_per_day
        n = min(self.window_days * s, history.steps)
        y = target_values(history, self.target)[:, -n:]
        ds = _local_times(history, np.arange(history.steps - n, history.steps))
        models = []
        for i in range(y.shape[0]):
            m = prophet.Prophet(
                daily_seasonality=True,
                weekly_seasonality=True,
                yearly_seasonality=False,
                interval_width=0.8,
            )
            with _quiet_prophet():
                m.fit(pd.DataFrame({"ds": ds, "y": y[i]}))
            models.append(m)
        return FittedProphet(self, tuple(models))


@dataclass(frozen=True, slots=True, eq=False)
class FittedProphet:
    model: ProphetForecaster
    fitted: tuple[Any, ...]

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        if history.households != len(self.fitted):
            raise UsageError(f"fitted for {len(self.fitted)} households, got {history.households}")
        future = pd.DataFrame({"ds": _local_times(history, history.steps + np.arange(horizon))})
        out = np.zeros((history.households, horizon, len(QUANTILES)))
        state = np.random.get_state()
        try:
            np.random.seed(self.model.seed)
            for i, m in enumerate(self.fitted):
                with _quiet_prophet():
                    fc = m.predict(future)
                out[i, :, 0] = fc["yhat_lower"].to_numpy()
                out[i, :, 1] = fc["yhat"].to_numpy()
                out[i, :, 2] = fc["yhat_upper"].to_numpy()
        finally:
            np.random.set_state(state)
        return _make_forecast(history, out)
