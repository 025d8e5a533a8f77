"""Shared fixtures: the shipped real data set, loaded once per session."""

from __future__ import annotations

import calendar

import pytest

from forecasting.data import SHIPPED_UTC_OFFSET_S, load_shipped
from forecasting.series import MeterHistory


def local_midnight_utc(year: int, month: int, day: int) -> int:
    """Unix second of local midnight at the shipped site."""
    return calendar.timegm((year, month, day, 0, 0, 0)) - SHIPPED_UTC_OFFSET_S


@pytest.fixture(scope="session")
def shipped_15min() -> MeterHistory:
    return load_shipped(step_s=900)


@pytest.fixture(scope="session")
def shipped_hourly(shipped_15min: MeterHistory) -> MeterHistory:
    return shipped_15min.resample(3600)
