"""Forecasters by name, for the CLI, the benchmark and the daemon's config.

Rules of this module: names are stable strings (used in config files and JSON reports);
:func:`build_model` builds a fresh, unfitted model; the PV-aware ones need the site's latitude and
longitude. ``prophet`` is listed but needs the optional package when fitted.
"""

from __future__ import annotations

from typing import Final

from forecasting.models import (
    AutoRegForecaster,
    ClearSkyPV,
    ComponentForecaster,
    Forecaster,
    QuantileRegression,
    SeasonalNaive,
    Target,
)
from forecasting.prophet_model import ProphetForecaster
from market.errors import UsageError

__all__ = ["DEFAULT_MODELS", "MODEL_NAMES", "build_model"]

MODEL_NAMES: Final = (
    "seasonal-naive-day",
    "seasonal-naive-week",
    "quantile-regression",
    "components",
    "autoreg",
    "prophet",
)
#: What ``gridnode forecast backtest`` runs unless told otherwise (prophet is opt-in: slow).
DEFAULT_MODELS: Final = (
    "seasonal-naive-day",
    "seasonal-naive-week",
    "quantile-regression",
    "components",
    "autoreg",
)


def build_model(
    name: str, *, horizon: int, latitude: float | None = None, longitude: float | None = None
) -> Forecaster:
    """A fresh model called ``name`` forecasting up to ``horizon`` intervals of net surplus."""
    if name == "seasonal-naive-day":
        return SeasonalNaive(period_days=1)
    if name == "seasonal-naive-week":
        return SeasonalNaive(period_days=7)
    if name == "quantile-regression":
        return QuantileRegression(horizon=horizon)
    if name == "components":
        if latitude is None or longitude is None:
            raise UsageError("the components model needs the site's latitude and longitude")
        return ComponentForecaster(
            ClearSkyPV(latitude, longitude), QuantileRegression(horizon=horizon, target=Target.LOAD)
        )
    if name == "autoreg":
        return AutoRegForecaster()
    if name == "prophet":
        return ProphetForecaster()
    raise UsageError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
