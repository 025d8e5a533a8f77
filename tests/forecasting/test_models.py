"""Forecasters: shapes, ordering, determinism, no look-ahead, and their known behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.data import SHIPPED_LATITUDE, SHIPPED_LONGITUDE
from forecasting.models import (
    QUANTILES,
    AutoRegForecaster,
    ClearSkyPV,
    ComponentForecaster,
    Forecaster,
    QuantileRegression,
    SeasonalNaive,
    Target,
)
from forecasting.registry import MODEL_NAMES, build_model
from forecasting.series import MeterHistory
from market.errors import InvalidInput, UsageError
from tests.forecasting.conftest import local_midnight_utc

CHEAP: list[Forecaster] = [
    SeasonalNaive(1),
    SeasonalNaive(7),
    QuantileRegression(horizon=24, train_days=120),
    AutoRegForecaster(),
    ComponentForecaster(
        ClearSkyPV(SHIPPED_LATITUDE, SHIPPED_LONGITUDE),
        QuantileRegression(horizon=24, train_days=120, target=Target.LOAD),
    ),
]


@pytest.fixture(scope="module")
def past(shipped_hourly: MeterHistory) -> MeterHistory:
    return shipped_hourly.until(local_midnight_utc(2009, 6, 1))


@pytest.mark.parametrize("model", CHEAP, ids=lambda m: m.name)
def test_forecasts_are_sorted_quantiles_of_the_right_shape(
    model: Forecaster, past: MeterHistory
) -> None:
    fc = model.fit(past).predict(past, 24)
    assert fc.values_w.shape == (1, 24, len(QUANTILES))
    assert fc.origin_s == past.end_s and fc.step_s == 3600
    assert np.isfinite(fc.values_w).all()
    assert (np.diff(fc.values_w, axis=2) >= 0).all()
    assert fc.interval_start_s(3) == past.end_s + 3 * 3600


@pytest.mark.parametrize("model", CHEAP, ids=lambda m: m.name)
def test_forecasts_are_deterministic(
    model: Forecaster, shipped_hourly: MeterHistory, past: MeterHistory
) -> None:
    first = model.fit(past).predict(past, 24).values_w
    copy = shipped_hourly.until(local_midnight_utc(2009, 7, 1)).until(past.end_s)
    again = model.fit(copy).predict(copy, 24).values_w
    np.testing.assert_array_equal(first, again)


def test_seasonal_naive_median_is_yesterday(past: MeterHistory) -> None:
    fc = SeasonalNaive(1).fit(past).predict(past, 24)
    np.testing.assert_array_equal(fc.median_w[0], past.net_w[0, -24:])
    week = SeasonalNaive(7).fit(past).predict(past, 24)
    np.testing.assert_array_equal(week.median_w[0], past.net_w[0, -168:-144])
    assert (fc.at(0.1) < fc.median_w).mean() > 0.5 and (fc.at(0.9) > fc.median_w).mean() > 0.5
    assert np.allclose(fc.at(0.5), fc.median_w)
    with pytest.raises(UsageError):
        fc.at(0.3)


def test_seasonal_naive_spread_per_time_of_day_is_the_empirical_error_quantile(
    past: MeterHistory,
) -> None:
    """The error quantiles computed on demand per time of day are those of all the in-sample errors
    at that time of day (computed here directly, the textbook way)."""
    fitted = SeasonalNaive(1, train_days=28).fit(past)
    y = past.net_w
    s = past.steps_per_day
    errors = y[:, -28 * s :] - y[:, -29 * s : -s]  # same time yesterday, last 28 days
    tod = past.step_of_day(np.arange(y.shape[1] - 28 * s, y.shape[1]))
    for k in (0, 7, 12, s - 1):
        expected = np.quantile(errors[:, tod == k], QUANTILES, axis=1).T
        expected[:, QUANTILES.index(0.5)] = 0.0
        np.testing.assert_allclose(fitted.spread(k), expected)
    full = fitted.residual_q
    assert full.shape == (1, s, len(QUANTILES))
    fc = fitted.predict(past, 3)
    t = past.steps + np.arange(3)
    want = y[:, t - s][:, :, None] + full[:, past.step_of_day(t), :]
    np.testing.assert_allclose(fc.values_w, np.sort(want, axis=2))


def test_quantile_regression_recovers_a_regular_daily_pattern() -> None:
    days = 120
    hour = np.tile(np.arange(24.0), days)
    weekend = np.repeat((np.arange(days) + 3) % 7 >= 5, 24)  # day 0 = 1970-01-01, a Thursday
    y = 500 * np.sin(hour / 24 * 2 * np.pi) + 300 * weekend
    h = MeterHistory.from_net(y, start_s=0, step_s=3600)
    past = h.until(100 * 86400)
    fc = QuantileRegression(horizon=24).fit(past).predict(past, 24)
    np.testing.assert_allclose(fc.median_w[0], y[2400:2424], atol=5.0)


def test_clear_sky_pv_is_zero_at_night_and_positive_at_noon(past: MeterHistory) -> None:
    fc = ClearSkyPV(SHIPPED_LATITUDE, SHIPPED_LONGITUDE).fit(past).predict(past, 24)
    hours = past.step_of_day(past.steps + np.arange(24))
    night = (hours < 4) | (hours >= 21)
    assert (fc.values_w[0, night] == 0).all()
    assert fc.median_w[0, 12] > 500  # a June noon at Golden, CO
    assert (fc.values_w >= 0).all()


def test_component_model_needs_components_and_agrees_with_its_parts(past: MeterHistory) -> None:
    pv = ClearSkyPV(SHIPPED_LATITUDE, SHIPPED_LONGITUDE)
    load = QuantileRegression(horizon=24, train_days=120, target=Target.LOAD)
    model = ComponentForecaster(pv, load)
    fc = model.fit(past).predict(past, 24)
    expected = pv.fit(past).predict(past, 24).median_w - load.fit(past).predict(past, 24).median_w
    np.testing.assert_allclose(fc.median_w, expected)
    net_only = MeterHistory.from_net(past.net_w, start_s=past.start_s, step_s=past.step_s)
    with pytest.raises(UsageError):
        model.fit(net_only)
    with pytest.raises(UsageError):
        SeasonalNaive(1, target=Target.PV).fit(net_only)


def test_models_are_vectorised_over_households(past: MeterHistory) -> None:
    two = MeterHistory.from_net(
        np.stack([past.net_w[0], 2 * past.net_w[0]]),
        start_s=past.start_s,
        step_s=past.step_s,
        utc_offset_s=past.utc_offset_s,
    )
    for model in (SeasonalNaive(1), QuantileRegression(horizon=24, train_days=120)):
        one = model.fit(two.select([0])).predict(two.select([0]), 24).values_w
        both = model.fit(two).predict(two, 24).values_w
        assert both.shape == (2, 24, 3)
        np.testing.assert_allclose(both[0], one[0])
        assert not np.allclose(both[1], both[0])


def test_bad_horizons_and_short_histories_are_refused(past: MeterHistory) -> None:
    fitted = QuantileRegression(horizon=24, train_days=120).fit(past)
    with pytest.raises(UsageError):
        fitted.predict(past, 25)
    with pytest.raises(UsageError):
        fitted.predict(past, 0)
    with pytest.raises(UsageError, match="origin"):  # fitted for midnight origins only
        fitted.predict(past.until(past.end_s - 3600), 24)
    short = past.window(past.end_s - 10 * 86400, past.end_s)
    with pytest.raises(InvalidInput) as info:
        QuantileRegression(horizon=24).fit(short)
    assert info.value.reason == "history_too_short"


def test_registry_builds_every_named_model() -> None:
    for name in MODEL_NAMES:
        model = build_model(
            name, horizon=24, latitude=SHIPPED_LATITUDE, longitude=SHIPPED_LONGITUDE
        )
        assert model.name == name
    with pytest.raises(UsageError):
        build_model("crystal-ball", horizon=24)
    with pytest.raises(UsageError):
        build_model("components", horizon=24)
