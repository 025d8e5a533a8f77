"""The day-ahead blend: profile-qr from every origin; from local midnight the documented
combination with the midnight quantile regression (checked against its own arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.data import SHIPPED_LATITUDE, SHIPPED_LONGITUDE
from forecasting.models import (
    MEDIAN_SHARE,
    MIDNIGHT_SHARE,
    MidnightBlend,
    QuantileRegression,
    min_history_days,
)
from forecasting.profile_qr import ProfileQR
from forecasting.registry import build_model
from forecasting.series import MeterHistory
from market.errors import InvalidInput
from tests.forecasting.conftest import local_midnight_utc

SITE = {"latitude": SHIPPED_LATITUDE, "longitude": SHIPPED_LONGITUDE}


def _blend() -> MidnightBlend:
    return MidnightBlend(ProfileQR(train_days=120, **SITE), QuantileRegression(train_days=120))


@pytest.fixture(scope="module")
def past(shipped_hourly: MeterHistory) -> MeterHistory:
    return shipped_hourly.until(local_midnight_utc(2009, 3, 1))


def test_from_midnight_it_is_the_documented_combination(past: MeterHistory) -> None:
    fitted = _blend().fit(past)
    got = fitted.predict(past, 24).values_w
    a = ProfileQR(train_days=120, **SITE).fit(past).predict(past, 24).values_w
    b = QuantileRegression(train_days=120).fit(past).predict(past, 24).values_w
    mixed = (1 - MIDNIGHT_SHARE) * a + MIDNIGHT_SHARE * b
    net = past.net_w[0]
    med7 = np.array([np.median([net[past.steps + h - 24 * d] for d in range(1, 8)])
                     for h in range(24)])  # fmt: skip
    want = np.sort(mixed + MEDIAN_SHARE * (med7 - mixed[0, :, 1])[None, :, None], axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
    assert not np.allclose(got, a)  # the midnight model does move it
    assert np.all(np.diff(got, axis=2) >= 0)


def test_from_any_other_origin_it_is_profile_qr(
    shipped_hourly: MeterHistory, past: MeterHistory
) -> None:
    fitted = _blend().fit(past)
    alone = ProfileQR(train_days=120, **SITE).fit(past)
    for k in (1, 7, 13):
        h = shipped_hourly.until(past.end_s + k * 3600)
        np.testing.assert_array_equal(fitted.predict(h, 24).values_w, alone.predict(h, 24).values_w)


def test_a_history_too_short_for_the_midnight_model_gets_profile_qr_alone(
    past: MeterHistory,
) -> None:
    model = _blend()
    days = min_history_days(model)
    assert days == min_history_days(model.anytime) < min_history_days(model.midnight)
    short = past.window(past.end_s - days * 86_400, past.end_s)
    with pytest.raises(InvalidInput) as info:
        model.midnight.fit(short)
    assert info.value.reason == "history_too_short"
    got = model.fit(short).predict(short, 24).values_w
    want = model.anytime.fit(short).predict(short, 24).values_w
    np.testing.assert_array_equal(got, want)


def test_the_registry_builds_it_around_the_default() -> None:
    model = build_model("day-ahead-blend", horizon=96, holiday_country="FR", **SITE)
    assert isinstance(model, MidnightBlend) and model.name == "day-ahead-blend"
    assert isinstance(model.anytime, ProfileQR) and model.anytime.holiday_country == "FR"
    assert model.anytime.latitude == SHIPPED_LATITUDE and model.midnight.horizon == 96
