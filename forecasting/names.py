"""The forecasting models' names (no imports: the daemon's config and the client commands read them
without loading numpy). :mod:`forecasting.registry` builds the models these name."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODELS", "MODEL_NAMES"]

#: The model the daemon and the engines should bid with (the best measured, see the docs).
DEFAULT_MODEL: Final = "profile-qr"

MODEL_NAMES: Final = (
    "profile-qr",
    "day-ahead-blend",
    "seasonal-naive-day",
    "seasonal-naive-week",
    "quantile-regression",
    "components",
    "autoreg",
    "prophet",
)
#: What ``gridnode forecast backtest`` runs unless told otherwise (prophet is opt-in: slow).
DEFAULT_MODELS: Final = (
    "profile-qr",
    "seasonal-naive-day",
    "seasonal-naive-week",
    "quantile-regression",
    "components",
    "autoreg",
)
