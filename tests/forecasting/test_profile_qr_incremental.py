"""profile-qr's incremental prediction: a fitted model reuses the profile features of the intervals
its last prediction used, and must give bit for bit the forecasts of the plain prediction (the
whole window's features from scratch, as the module computed them before) from any origin, at any
horizon, across gaps, changed data, refits, the calendar's turns and pickles."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forecasting.profile_qr as pq
from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    load_citylearn_homes,
)
from forecasting.models import QUANTILES, _make_forecast
from forecasting.profile_qr import (
    ENVELOPE_DAYS,
    MED7,
    PROFILE_DAYS,
    PV_ENV,
    FittedProfileQR,
    ProfileQR,
    _day_type,
    _design,
    _ghi,
    _holiday_days,
    _median7,
    _origin_features,
    _profiles,
    _Series,
    _year,
    lead_buckets,
)
from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory
from forecasting.solar import clear_sky_ghi_w_m2
from tests.forecasting.conftest import local_midnight_utc

SITE = {"latitude": SHIPPED_LATITUDE, "longitude": SHIPPED_LONGITUDE}
CITY = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}


def _plain(fitted: FittedProfileQR, history: MeterHistory, horizon: int) -> FloatArray:
    """The prediction as the module made it before the memo (the oracle): the padded series, the
    clear-sky GHI of the window in one call, every feature of the window from scratch."""
    m, s = fitted.model, history.steps_per_day
    tail = history.window(history.end_s - (PROFILE_DAYS + 1) * s * history.step_s, history.end_s)
    load, pv = (tail.load_w, tail.pv_w) if tail.has_components else (tail.net_w, None)
    total = tail.steps + horizon
    ghi = None
    if pv is not None and m.latitude is not None and m.longitude is not None:
        lo = max(0, tail.steps - (ENVELOPE_DAYS + 1) * s)
        mid = tail.start_s + np.arange(lo, total, dtype=np.int64) * tail.step_s + tail.step_s // 2
        ghi = np.zeros(total)
        ghi[lo:] = clear_sky_ghi_w_m2(mid, latitude=m.latitude, longitude=m.longitude)
    first = (tail.start_s + tail.utc_offset_s) // SECONDS_PER_DAY
    last = (tail.start_s + total * tail.step_s + tail.utc_offset_s) // SECONDS_PER_DAY
    hol = _holiday_days(m.holiday_country, m.holiday_subdiv, range(_year(first), _year(last) + 1))
    pad = np.zeros((load.shape[0], horizon))
    series = _Series(
        load=np.concatenate([load, pad], axis=1),
        pv=None if pv is None else np.concatenate([pv, pad], axis=1),
        ghi=ghi,
        day_type=_day_type(tail, np.arange(total, dtype=np.int64), hol),
        holidays=hol,
    )
    o = tail.steps
    t0 = o - s
    prof = _profiles(series, np.arange(t0, o + horizon, dtype=np.int64), s)
    env = None if series.pv is None else prof[..., PV_ENV]
    orig = _origin_features(series, prof[..., MED7], env, t0, np.array([o], dtype=np.int64), s)
    x = _design(prof[:, s:], np.repeat(orig, horizon, axis=1), series.pv is not None)
    buckets = lead_buckets(history.step_s)[:horizon]
    values = np.einsum("nhf,nhqf->nhq", x, fitted.coefs[:, buckets])
    mid = values[:, :, QUANTILES.index(0.5)][:, :, None]
    values = mid + fitted.band_scales[:, buckets, None] * (values - mid)
    return _make_forecast(history, values).values_w


def _bits(a: FloatArray) -> bytes:
    return np.ascontiguousarray(a).view(np.int64).tobytes()


def _fresh(fitted: FittedProfileQR) -> FittedProfileQR:
    return FittedProfileQR(fitted.model, fitted.coefs, fitted.step_s, fitted.band_scales)


def _walk(
    fitted: FittedProfileQR, history: MeterHistory, ends: list[int], horizons: list[int]
) -> int:
    """Predict with one (warm) model from each origin in ``ends``, horizons cycling; compare each
    forecast bit for bit with the plain path and with a model that never predicted."""
    checked = 0
    for k, end in enumerate(ends):
        h = history.until(end)
        horizon = horizons[k % len(horizons)]
        warm = fitted.predict(h, horizon).values_w
        assert _bits(warm) == _bits(_plain(fitted, h, horizon)), (k, end, horizon)
        assert _bits(warm) == _bits(_fresh(fitted).predict(h, horizon).values_w)
        checked += 1
    return checked


@pytest.fixture(scope="module")
def shipped_fit(shipped_15min: MeterHistory) -> tuple[MeterHistory, FittedProfileQR]:
    start = local_midnight_utc(2008, 4, 1)
    fitted = ProfileQR(train_days=30, **SITE).fit(shipped_15min.window(start, start + 60 * 86_400))
    assert isinstance(fitted, FittedProfileQR)
    return shipped_15min, fitted


def test_consecutive_origins_and_every_horizon_give_the_plain_forecasts(
    shipped_fit: tuple[MeterHistory, FittedProfileQR],
) -> None:
    history, fitted = shipped_fit
    fitted = _fresh(fitted)
    origin = local_midnight_utc(2008, 6, 1) - 5 * 900
    ends = [origin + k * 900 for k in range(110)]  # across local midnight, a day and more
    assert _walk(fitted, history, ends, [2, 1, 2, 8, 2, 96, 3]) == 110


def test_gaps_jumps_back_and_repeats_give_the_plain_forecasts(
    shipped_fit: tuple[MeterHistory, FittedProfileQR],
) -> None:
    history, fitted = shipped_fit
    fitted = _fresh(fitted)
    o = local_midnight_utc(2008, 7, 10) + 13 * 3600
    ends = [o, o, o + 900, o + 3 * 900, o + 3 * 900, o + 2 * 86_400, o + 2 * 86_400 - 900,
            o + 86_400, o + 86_400 + 45 * 900, o + 86_400 + 46 * 900, o - 30 * 86_400,
            o - 30 * 86_400 + 95 * 900, o - 30 * 86_400 + 97 * 900]  # fmt: skip
    assert _walk(fitted, history, ends, [2, 96, 5, 1, 24]) == len(ends)


def test_changed_past_values_are_not_reused(
    shipped_fit: tuple[MeterHistory, FittedProfileQR],
) -> None:
    """A history with other values (a corrected reading inside the features' look-back), or
    equal values in other memory (a daemon builds its history anew each slot), or writable
    memory changed in place between two predictions: the forecasts stay the plain ones."""
    history, fitted = shipped_fit
    fitted = _fresh(fitted)
    end = local_midnight_utc(2008, 8, 3) + 10 * 3600
    h = history.window(end - 40 * 86_400, end + 2 * 900)
    assert h.pv_w is not None and h.load_w is not None
    fitted.predict(h.until(end), 2)
    for days_back in (1, 7, 14, 21):  # the lags the features read
        load = h.load_w.copy()
        load[0, h.index_at(end) - days_back * 96 + 1] += 1234.5
        changed = MeterHistory.from_components(h.pv_w, load, start_s=h.start_s, step_s=900,
                                               utc_offset_s=h.utc_offset_s)  # fmt: skip
        for step in (0, 1):
            g = changed.until(end + step * 900)
            got = fitted.predict(g, 2).values_w
            assert _bits(got) == _bits(_plain(fitted, g, 2)), (days_back, step)
    copied = MeterHistory.from_components(h.pv_w.copy(), h.load_w.copy(), start_s=h.start_s,
                                          step_s=900, utc_offset_s=h.utc_offset_s)  # fmt: skip
    for step in (0, 1, 2):
        g = copied.until(end + step * 900)
        assert _bits(fitted.predict(g, 2).values_w) == _bits(_plain(fitted, g, 2))
    # writable arrays (MeterHistory's constructor takes them as given), changed in place
    pv, load = h.pv_w.copy(), h.load_w.copy()
    mutable = MeterHistory(h.start_s, 900, pv - load, pv, load, h.utc_offset_s)
    g = mutable.until(end)
    assert _bits(fitted.predict(g, 2).values_w) == _bits(_plain(fitted, g, 2))
    pv[0, h.index_at(end) - 96 - 40 :] *= 0.5  # PV of yesterday afternoon, in place
    assert _bits(fitted.predict(g, 2).values_w) == _bits(_plain(fitted, g, 2))


def test_a_refit_a_pickle_and_other_rows_start_afresh(
    shipped_fit: tuple[MeterHistory, FittedProfileQR],
) -> None:
    history, fitted = shipped_fit
    warm = _fresh(fitted)
    end = local_midnight_utc(2008, 9, 1) + 7 * 3600
    warm.predict(history.until(end), 2)
    clone = pickle.loads(pickle.dumps(warm))  # what a fit worker sends: the memo stays behind
    assert clone._memo.state is None and warm._memo.state is not None
    refit = ProfileQR(train_days=30, **SITE).fit(history.until(end).window(end - 60 * 86_400, end))
    assert isinstance(refit, FittedProfileQR)
    for f in (warm, clone, refit):
        assert _walk(f, history, [end + 900, end + 2 * 900], [2]) == 2
    # two rows of the same household: another row count, another key; selected rows are
    # read-only like every history's (the memo trusts them rather than copying them)
    two = history.select([0, 0])
    assert two.pv_w is not None and two.load_w is not None
    assert not any(a.flags.writeable for a in (two.net_w, two.pv_w, two.load_w))
    both = FittedProfileQR(fitted.model, np.concatenate([fitted.coefs] * 2), 900,
                           np.concatenate([fitted.band_scales] * 2))  # fmt: skip
    assert _walk(both, two, [end + 3 * 900, end + 4 * 900], [2]) == 2


@pytest.mark.parametrize("step_s", [900, 3600])
def test_many_homes_with_holidays_across_the_new_year(step_s: int) -> None:
    """Several rows, a holiday calendar (the window's years, hence the holidays, change at the
    new year) and an hourly grid."""
    homes = load_citylearn_homes((2, 9, 16), step_s=step_s)
    cut = local_midnight_utc(2016, 12, 20)
    model = ProfileQR(train_days=30, holiday_country="US", **CITY)
    fitted = model.fit(homes.window(homes.start_s, cut))
    assert isinstance(fitted, FittedProfileQR)
    per_hour = 3600 // step_s
    ends = [cut + k * step_s for k in range(0, 16 * 86_400 // step_s, 5 * per_hour)]
    ends += [local_midnight_utc(2017, 1, 1) + k * step_s for k in range(-3, 4)]
    assert _walk(fitted, homes, ends, [2, 1, 86_400 // step_s, 3]) == len(ends)
    net_only = MeterHistory.from_net(homes.net_w, start_s=homes.start_s, step_s=step_s)
    fitted_net = replace(model, latitude=None, longitude=None).fit(net_only.until(cut))
    assert isinstance(fitted_net, FittedProfileQR)
    assert _walk(fitted_net, net_only, ends[:6], [2, 7]) == 6


def test_profiles_of_any_subset_equal_the_whole_window_bit_for_bit() -> None:
    """Each interval's profile features are a function of its own inputs: for the same rows,
    computing a subset of the intervals gives the same bits as computing them all at once (what
    the memo relies on; the memo is keyed by the number of rows: numpy's reductions may sum in
    another order for another number of rows, in the last bit)."""
    rng = np.random.default_rng(7)
    s = 96
    total = (PROFILE_DAYS + 2) * s
    for n in (1, 2, 5, 33):
        load = rng.gamma(2.0, 300.0, size=(n, total))
        pv = np.clip(rng.normal(500.0, 800.0, size=(n, total)), 0.0, None)
        h = MeterHistory.from_components(pv, load, start_s=1_214_870_400, step_s=900)
        for site in ({}, SITE):
            series = ProfileQR(**site)._series(h, 0)  # type: ignore[arg-type]
            t_all = np.arange(PROFILE_DAYS * s, total, dtype=np.int64)
            whole = _profiles(series, t_all, s)
            for size in (1, 2, 7, 97):
                pick = np.sort(rng.choice(len(t_all), size=size, replace=False))
                assert _bits(_profiles(series, t_all[pick], s)) == _bits(whole[:, pick])


def test_clear_sky_by_day_equals_one_call_bit_for_bit() -> None:
    start = local_midnight_utc(2008, 1, 1) + 123 * 900
    for step in (900, 3600):
        total = 400 * 86_400 // step
        mid = start + np.arange(total, dtype=np.int64) * step + step // 2
        once = clear_sky_ghi_w_m2(mid, **SITE)
        by_day = _ghi(start, step, total, 0, **SITE)
        assert _bits(by_day) == _bits(once)
        lo = 17
        part = _ghi(start + 5 * step, step, 200, lo, **SITE)
        assert _bits(part[lo:]) == _bits(once[5 + lo : 205]) and not part[:lo].any()


def test_consecutive_origins_compute_only_the_new_interval(
    shipped_fit: tuple[MeterHistory, FittedProfileQR], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of the memo: from the next slot's origin, one new target's features (the rest
    of the window is reused); from an unrelated origin, the whole window."""
    history, fitted = shipped_fit
    fitted = _fresh(fitted)
    computed: list[int] = []
    plain = pq._profiles

    def counting(series: _Series, t: np.ndarray, s: int) -> FloatArray:
        computed.append(len(t))
        return plain(series, t, s)

    monkeypatch.setattr(pq, "_profiles", counting)
    o = local_midnight_utc(2008, 6, 20) + 9 * 3600
    for k in range(4):
        fitted.predict(history.until(o + k * 900), 2)
    fitted.predict(history.until(o + 10 * 86_400), 2)
    assert computed == [96 + 2, 1, 1, 1, 96 + 2]


def test_median_of_seven_by_network_equals_numpy_median_bit_for_bit() -> None:
    """The sorting network picks the same value as :func:`numpy.median` (ties, zeros, signs;
    of a zero and a negative zero, either may be picked: equal values, not equal bits)."""
    rng = np.random.default_rng(7)
    for values in (
        rng.normal(size=(3, 500, 7)) * 1000,
        np.round(rng.normal(size=(2, 400, 7)) * 3) + 0.0,  # many ties (+ 0.0: no negative zero)
        np.where(rng.random((2, 300, 7)) < 0.6, 0.0, rng.random((2, 300, 7))),  # mostly zero
    ):
        got = _median7([values[..., i] for i in range(7)])
        assert _bits(got) == _bits(np.median(values, axis=-1))
    signed = np.round(rng.normal(size=(2, 400, 7)) * 0.3)  # zeros of both signs
    assert np.array_equal(_median7([signed[..., i] for i in range(7)]), np.median(signed, axis=-1))


def test_pv_ratios_from_one_span_equal_each_lag_computed_apart_bit_for_bit() -> None:
    """:func:`~forecasting.profile_qr._pv_ratios` computes each interval's PV/GHI ratio once over
    the span the lags read (a fit's intervals) or at each lag apart (a prediction's few targets):
    both give, for every lag, the ratio of that interval's own values (the oracle: the
    elementwise rule on the gathered values)."""
    rng = np.random.default_rng(11)
    s, total = 24, 40 * 24
    ghi = np.where(rng.random(total) < 0.4, rng.random(total) * 15, rng.random(total) * 900)
    ghi[::7] = pq.MIN_GHI_W_M2  # at the threshold: not lit
    pv = rng.random((3, total)) * 5000
    series = _Series(load=pv, pv=pv, ghi=ghi, day_type=np.zeros(total, np.int64),
                     holidays=frozenset())  # fmt: skip
    days = range(1, ENVELOPE_DAYS + 1)
    span = np.arange(20 * s, total, dtype=np.int64)  # consecutive: one span
    sparse = np.unique(rng.integers(20 * s, total, size=60))  # sparse, sorted
    few = np.array([total - 3, total - 1], np.int64)  # a prediction's: the lags apart
    for t in (span, sparse, few, span[::3]):
        got = pq._pv_ratios(series, t, s, days)
        for d, g in zip(days, got, strict=True):
            g_d, pv_d = ghi[t - d * s], pv[:, t - d * s]
            lit = g_d > pq.MIN_GHI_W_M2
            want = np.where(lit[None], pv_d / np.where(lit, g_d, 1.0)[None], 0.0)
            assert _bits(g) == _bits(want)
    assert [g.shape for g in pq._pv_ratios(series, span[:0], s, days)] == [(3, 0)] * len(days)


def test_profiles_given_their_median_and_envelope_columns_are_the_same_bits() -> None:
    """A fit hands :func:`_profiles` the 7-day median and the PV envelope it computed at every
    interval, taken at the targets: the same features as computed at the targets."""
    rng = np.random.default_rng(13)
    s, total = 24, 40 * 24
    ghi = np.where(rng.random(total) < 0.4, 0.0, rng.random(total) * 900)
    load, pv = rng.random((2, total)) * 3000, rng.random((2, total)) * 5000
    series = _Series(load=load, pv=pv, ghi=ghi, day_type=rng.integers(0, 2, total),
                     holidays=frozenset())  # fmt: skip
    t0 = 22 * s
    every = np.arange(t0, total, dtype=np.int64)
    med7 = pq._med7(series, every, s)
    env = pq._pv_env(series, every, s)
    t = np.unique(rng.integers(t0, total, size=150))
    plain = _profiles(series, t, s)
    given = _profiles(series, t, s, med7=med7[:, t - t0], env=env[:, t - t0])
    assert _bits(given) == _bits(plain)
    assert _bits(given[..., MED7]) == _bits(med7[:, t - t0])
    assert _bits(given[..., PV_ENV]) == _bits(env[:, t - t0])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 7),
    s=st.sampled_from([24, 96]),
    days=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    with_pv=st.booleans(),
)
def test_origin_features_of_one_origin_equal_the_running_sums_bit_for_bit(
    n: int, s: int, days: int, seed: int, with_pv: bool
) -> None:
    """A prediction's one origin takes the sums of its last day and hour over the intervals as
    rows (:func:`~forecasting.profile_qr._sums_at`, vectorised across households): the same bits
    as the running sums along each household's row (the path of several origins), for any number
    of households (one: the running sums themselves), magnitudes that round, zeros of both signs."""
    rng = np.random.default_rng(seed)
    m = days * s
    total = m + s
    scale = 10.0 ** rng.integers(-3, 7, size=(n, total))

    def values() -> FloatArray:
        v = rng.normal(size=(n, total)) * scale
        v[rng.random((n, total)) < 0.2] = 0.0
        v[rng.random((n, total)) < 0.05] = -0.0
        return v

    load, pv = values(), np.abs(values())
    series = _Series(load=load, pv=pv if with_pv else None, ghi=None,
                     day_type=np.zeros(total, np.int64), holidays=frozenset())  # fmt: skip
    t0 = total - m
    med7 = values()[:, :m]
    env = np.abs(values()[:, :m]) if with_pv else None
    o = t0 + m
    one = _origin_features(series, med7, env, t0, np.array([o], np.int64), s)
    several = _origin_features(series, med7, env, t0, np.array([o - 1, o], np.int64), s)
    assert one.shape == (n, 1, several.shape[-1])
    assert _bits(one) == _bits(several[:, 1:])
    a_t = np.ascontiguousarray(rng.normal(size=(m, n)) * scale[:, :m].T)
    want = pq._cumsum0(a_t.T)
    if n >= pq._ROWS_SUMMED_ACROSS:
        at = (0, 1, m - 5, m - 1, m)
        for p, got in zip(at, pq._sums_at(a_t, at), strict=True):
            assert _bits(got) == _bits(want[:, p])


@settings(max_examples=40, deadline=None)
@given(
    start_day=st.integers(-400, 30_000),
    step_s=st.sampled_from([900, 3600]),
    offset_s=st.sampled_from([-18_000, 0, 3600, 19_800]),
    steps=st.integers(0, 2000),
    seed=st.integers(0, 2**32 - 1),
)
def test_day_types_per_day_equal_the_rule_per_interval(
    start_day: int, step_s: int, offset_s: int, steps: int, seed: int
) -> None:
    """:func:`_day_type` decides each local day once and spreads it to its intervals: the same
    integers as the rule applied to every interval (weekend or holiday: 1)."""
    rng = np.random.default_rng(seed)
    start = start_day * SECONDS_PER_DAY + int(rng.integers(0, 96)) * 900
    h = MeterHistory.from_net(np.zeros((1, max(steps, 1))), start_s=start, step_s=step_s,
                              utc_offset_s=offset_s)  # fmt: skip
    idx = rng.permutation(steps).astype(np.int64)[: int(rng.integers(0, steps + 1))]
    day = (start + idx * step_s + offset_s) // SECONDS_PER_DAY
    holidays = frozenset(int(d) for d in rng.choice(day, size=min(len(day), 5))) if len(day) else (
        frozenset())  # fmt: skip
    for hol in (frozenset(), holidays):
        want = np.array([int((d + 3) % 7 >= 5 or int(d) in hol) for d in day], np.int64)
        got = _day_type(h, idx, hol)
        assert got.dtype == np.int64 and got.tolist() == want.tolist()
