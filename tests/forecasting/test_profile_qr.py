"""The default forecaster (profile-qr): any origin, batches, no look-ahead, and its skill on real
homes it was not tuned on (short runs; the full figures: benchmarks/forecasting.py)."""

from __future__ import annotations

import calendar

import numpy as np
import pytest

from forecasting.backtest import backtest
from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    CITYLEARN_UTC_OFFSET_S,
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    load_citylearn_homes,
)
from forecasting.profile_qr import ProfileQR, lead_buckets
from forecasting.registry import DEFAULT_MODEL, build_model
from forecasting.series import MeterHistory
from market.errors import InvalidInput, UsageError
from tests.forecasting.conftest import local_midnight_utc

SITE = {"latitude": SHIPPED_LATITUDE, "longitude": SHIPPED_LONGITUDE}


def _fontana_midnight(year: int, month: int, day: int) -> int:
    return calendar.timegm((year, month, day, 0, 0, 0)) - CITYLEARN_UTC_OFFSET_S


def test_the_registry_default_is_profile_qr() -> None:
    model = build_model(latitude=1.0, longitude=2.0, holiday_country="US")
    assert DEFAULT_MODEL == "profile-qr" == model.name
    assert isinstance(model, ProfileQR) and model.holiday_country == "US"


def test_lead_buckets_cover_a_day_in_order() -> None:
    for step in (900, 1800, 3600):
        b = lead_buckets(step)
        assert len(b) == 86_400 // step and b[0] == 0
        assert np.all(np.diff(b) >= 0) and np.all(np.diff(b) <= 1)
    assert lead_buckets(900)[:5].tolist() == [0, 1, 2, 3, 4]  # one per slot in the first hour


@pytest.fixture(scope="module")
def fitted_15min(shipped_15min: MeterHistory) -> tuple[MeterHistory, object]:
    past = shipped_15min.until(local_midnight_utc(2008, 6, 1))
    model = ProfileQR(train_days=120, **SITE)
    return past, model.fit(past.window(past.end_s - 200 * 86_400, past.end_s))


def test_forecasts_from_any_origin_are_sorted_and_finite(
    shipped_15min: MeterHistory, fitted_15min: tuple[MeterHistory, object]
) -> None:
    past, fitted = fitted_15min
    for k in range(0, 96, 7):  # origins at many times of day
        h = shipped_15min.until(past.end_s + k * 900)
        for horizon in (1, 2, 8, 96):
            fc = fitted.predict(h, horizon)  # type: ignore[attr-defined]
            assert fc.origin_s == h.end_s and fc.values_w.shape == (1, horizon, 3)
            assert np.isfinite(fc.values_w).all()
            assert np.all(np.diff(fc.values_w, axis=2) >= 0)


def test_no_look_ahead(shipped_15min: MeterHistory) -> None:
    """The fit and the forecast only read the history they are given."""
    end = local_midnight_utc(2008, 3, 1)
    h = shipped_15min.until(end + 3 * 86_400)
    assert h.pv_w is not None and h.load_w is not None
    pv, load = h.pv_w.copy(), h.load_w.copy()
    cut = h.index_at(end)
    pv[:, cut:], load[:, cut:] = 5_000.0, 0.0
    tampered = MeterHistory.from_components(pv, load, start_s=h.start_s, step_s=900,
                                            utc_offset_s=h.utc_offset_s)  # fmt: skip
    model = ProfileQR(train_days=60, **SITE)
    a = model.fit(h.until(end)).predict(h.until(end), 8).values_w
    b = model.fit(tampered.until(end)).predict(tampered.until(end), 8).values_w
    np.testing.assert_array_equal(a, b)


def test_a_batch_forecasts_each_household_as_if_alone() -> None:
    """The in-process engine fits and forecasts many households in one call; the daemon one at a
    time. Households share no parameters, so the numbers are the same."""
    homes = load_citylearn_homes((2, 9, 16), end_s=local_midnight_utc(2017, 1, 1))
    model = ProfileQR(train_days=60, latitude=CITYLEARN_LATITUDE, longitude=CITYLEARN_LONGITUDE)
    both = model.fit(homes).predict(homes, 24).values_w
    for i in range(3):
        alone = model.fit(homes.select([i])).predict(homes.select([i]), 24).values_w
        np.testing.assert_allclose(both[i], alone[0], rtol=1e-9, atol=1e-6)


def test_refusals_carry_reasons(shipped_15min: MeterHistory) -> None:
    model = ProfileQR(**SITE)
    short = shipped_15min.window(shipped_15min.start_s, shipped_15min.start_s + 20 * 86_400)
    with pytest.raises(InvalidInput) as info:
        model.fit(short)
    assert info.value.reason == "history_too_short"
    h = shipped_15min.until(local_midnight_utc(2008, 3, 1))
    fitted = model.fit(h.window(h.end_s - 60 * 86_400, h.end_s))
    with pytest.raises(InvalidInput) as info:
        fitted.predict(h.window(h.end_s - 10 * 86_400, h.end_s), 4)
    assert info.value.reason == "history_too_short"
    with pytest.raises(UsageError):
        fitted.predict(h, 97)
    with pytest.raises(UsageError):
        fitted.predict(h.resample(3600), 4)


def test_holidays_count_as_non_working_days() -> None:
    homes = load_citylearn_homes((2,), end_s=local_midnight_utc(2017, 1, 20))
    plain = ProfileQR(train_days=60).fit(homes).predict(homes, 24).values_w
    with_us = ProfileQR(train_days=60, holiday_country="US").fit(homes).predict(homes, 24)
    assert not np.array_equal(plain, with_us.values_w)  # 2017-01-16 (MLK day) is in the window
    with pytest.raises(UsageError):
        ProfileQR(holiday_country="XX").fit(homes)


def test_skill_on_held_out_homes_at_both_horizons() -> None:
    """CityLearn homes 2 and 11 (not in the tuning set), two winter months: the next hour beats
    seasonal naive by well over 25 %, day-ahead by over 10 %; P10-P90 coverage stays 70-90 %.
    (Full year, all test homes: benchmarks/forecasting.py.)"""
    homes = load_citylearn_homes((2, 11))
    off = CITYLEARN_UTC_OFFSET_S
    start, end = 1_480_550_400 - off, 1_485_907_200 - off  # 2016-12-01 .. 2017-02-01 local
    model = ProfileQR(latitude=CITYLEARN_LATITUDE, longitude=CITYLEARN_LONGITUDE)
    short = backtest(homes, [model], start_s=start, end_s=end, horizon=1, origin_every_steps=1)
    day = backtest(homes, [model], start_s=start, end_s=end, horizon=24)
    assert short.scores[1].skill_mae > 0.25
    assert day.scores[1].skill_mae > 0.10
    for report in (short, day):
        assert 0.70 <= report.scores[1].coverage_p10_p90 <= 0.90


def test_bands_are_calibrated_on_the_most_recent_origins() -> None:
    """Split conformal: a household whose errors grew lately gets wider bands than its twin with
    steady errors; with too little history, or a fixed ``band_scale``, one factor for all."""
    home = load_citylearn_homes((2,), end_s=local_midnight_utc(2017, 3, 1))
    assert home.load_w is not None and home.pv_w is not None
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 150.0, home.load_w.shape[1])
    recent = np.arange(home.steps) >= home.steps - 40 * 24  # the last 40 days: twice the noise
    load = np.vstack([home.load_w[0] + noise, home.load_w[0] + noise * np.where(recent, 3, 1)])
    twins = MeterHistory.from_components(
        np.vstack([home.pv_w[0]] * 2), np.maximum(load, 0.0), start_s=home.start_s,
        step_s=home.step_s, utc_offset_s=home.utc_offset_s,
    )  # fmt: skip
    fitted = ProfileQR(train_days=150).fit(twins)
    steady, grown = fitted.band_scales
    assert np.all((fitted.band_scales >= 1.0) & (fitted.band_scales <= 3.0))
    assert grown.mean() > steady.mean() + 0.2
    fixed = ProfileQR(train_days=150, band_scale=1.3).fit(twins)
    assert np.all(fixed.band_scales == 1.3)
    short = ProfileQR().fit(twins.window(twins.end_s - 45 * 86_400, twins.end_s))
    assert np.all(short.band_scales == 1.04)  # 23 days of origins: too few to hold 20 % out


def test_a_feature_that_was_always_zero_does_not_explode_when_it_moves() -> None:
    """CityLearn home 15: its PV meter read a few W at most until July 2017, then real PV. Fitted
    on the months before, the medians in July stay within the household's own range (they
    reached ±50 kW when the near-zero PV features got huge coefficients)."""
    home = load_citylearn_homes((15,))
    fitted = ProfileQR(latitude=CITYLEARN_LATITUDE, longitude=CITYLEARN_LONGITUDE).fit(
        home.until(_fontana_midnight(2017, 7, 1))
    )
    span = float(np.abs(home.net_w).max())
    for day in (10, 20, 25):
        h = home.until(_fontana_midnight(2017, 7, day))
        p50 = fitted.predict(h, 24).values_w[..., 1]
        assert np.abs(p50).max() <= 1.5 * span
