"""Forecasters by name, for the CLI, the benchmark, the daemon's config and the engines.

Rules of this module: names are stable strings (used in config files and JSON reports);
:func:`build_model` builds a fresh, unfitted model. :data:`DEFAULT_MODEL` (``"profile-qr"``) is the
best measured model (``docs/forecasting.md``): it uses the site's latitude and longitude for
clear-sky PV when the history has PV and load metered (without them it falls back to the PV's own
14-day envelope), and a public-holiday calendar when given a country code (``holidays`` package).
Every model is vectorised over households (rows of a history) and its ``fit`` result forecasts from
any origin the model documents. ``components`` needs the coordinates; ``prophet`` is listed but
needs the optional package when fitted. ``day-ahead-blend`` is ``profile-qr`` from every origin
and, from local midnight, its combination with the midnight ``quantile-regression`` (``horizon``
intervals: a day of them for day-ahead plans).
"""

from __future__ import annotations

from forecasting.models import (
    AutoRegForecaster,
    ClearSkyPV,
    ComponentForecaster,
    Forecaster,
    MidnightBlend,
    QuantileRegression,
    SeasonalNaive,
    Target,
)
from forecasting.names import DEFAULT_MODEL, DEFAULT_MODELS, MODEL_NAMES
from forecasting.profile_qr import ProfileQR
from market.errors import UsageError

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODELS", "MODEL_NAMES", "build_model"]


def build_model(
    name: str = DEFAULT_MODEL,
    *,
    horizon: int = 24,
    latitude: float | None = None,
    longitude: float | None = None,
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
) -> Forecaster:
    """A fresh model called ``name`` forecasting up to ``horizon`` intervals of net surplus
    (``horizon`` matters only to the midnight-origin ``quantile-regression``)."""
    if name == "profile-qr":
        return ProfileQR(
            latitude=latitude,
            longitude=longitude,
            holiday_country=holiday_country,
            holiday_subdiv=holiday_subdiv,
        )
    if name == "day-ahead-blend":
        anytime = build_model(
            "profile-qr", latitude=latitude, longitude=longitude,
            holiday_country=holiday_country, holiday_subdiv=holiday_subdiv,
        )  # fmt: skip
        return MidnightBlend(anytime, QuantileRegression(horizon=horizon))
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
        from forecasting.prophet_model import ProphetForecaster  # noqa: PLC0415 - pandas, prophet

        return ProphetForecaster()
    raise UsageError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
