"""Per-household forecasts of net surplus, backtests on real data, and the bidding policy (pure).

Modules: :mod:`forecasting.series` (meter histories), :mod:`forecasting.models` (the
``Forecaster`` protocol and models), :mod:`forecasting.profile_qr` (the default model),
:mod:`forecasting.prophet_model` (optional Prophet), :mod:`forecasting.backtest` (rolling-origin evaluation), :mod:`forecasting.policy` (forecast →
orders; ``plan_orders`` is what the daemon calls), :mod:`forecasting.evaluate` (policies settled by
the market's rules), :mod:`forecasting.registry` (models by name; ``DEFAULT_MODEL``),
:mod:`forecasting.data` (the shipped real data sets and meter files: the package's only file
reads). Guide: ``docs/forecasting.md``.
"""

from forecasting.models import QUANTILES, Forecaster, QuantileForecast, QuantileRegression
from forecasting.policy import BatteryState, PolicyConfig, plan_orders, quote_slot
from forecasting.series import MeterHistory

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
