"""Per-household forecasts of net surplus, backtests on real data, and the bidding policy (pure).

Modules: :mod:`forecasting.series` (meter histories), :mod:`forecasting.models` (the
``Forecaster`` protocol and models), :mod:`forecasting.profile_qr` (the default model),
:mod:`forecasting.prophet_model` (optional Prophet), :mod:`forecasting.backtest` (rolling-origin evaluation), :mod:`forecasting.policy` (forecast →
orders; ``plan_orders`` is what the daemon calls), :mod:`forecasting.evaluate` (policies settled by
the market's rules), :mod:`forecasting.registry` (models by name; ``DEFAULT_MODEL``),
:mod:`forecasting.data` (the shipped real data sets and meter files: the package's only file
reads). Guide: ``docs/forecasting.md``. :mod:`forecasting.names` (the models' names, no
imports) is what light callers such as the daemon's config read; the names below are loaded on
first use, so importing a light submodule does not import numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecasting.models import QUANTILES, Forecaster, QuantileForecast, QuantileRegression
    from forecasting.policy import BatteryState, PolicyConfig, plan_orders, quote_slot
    from forecasting.series import MeterHistory

_HOMES = {
    "QUANTILES": "models",
    "Forecaster": "models",
    "QuantileForecast": "models",
    "QuantileRegression": "models",
    "BatteryState": "policy",
    "PolicyConfig": "policy",
    "plan_orders": "policy",
    "quote_slot": "policy",
    "MeterHistory": "series",
}

__all__ = [
    "QUANTILES",
    "BatteryState",
    "Forecaster",
    "MeterHistory",
    "PolicyConfig",
    "QuantileForecast",
    "QuantileRegression",
    "plan_orders",
    "quote_slot",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'forecasting' has no attribute {name!r}")
    return getattr(importlib.import_module(f"forecasting.{home}"), name)
