"""The default forecaster: quantile regression on daily profiles, the recent anomaly and clear-sky PV.

Rules of this module:

* **Any origin, any lead up to a day.** A forecast from origin ``o`` (the first unknown interval)
  for target ``t = o + L`` (lead ``L`` = 0 .. one day − 1) is linear in features of two kinds:

  - *profile* features of the target time, built only from data at least one day before it (so
    they exist for every lead): the value one day and one week before, the median of the same time
    over the last 7 days, the mean over the last 21 days, and the mean of the last 4 days of the
    same *day type* (working day, or weekend/holiday) at that time;
  - *origin* features, known at the origin: the last hour's and the last day's departure from the
    7-day median profile (the household is out, has guests, the heating is on ...), the last
    interval's departure and the last interval's value itself (persistence: an air conditioner
    that is running now is likely running in the next slot).

  When PV and load are metered separately (``Target.NET``), the load features come from the load
  and the PV features from the PV: a **clear-sky envelope** (clear-sky GHI from pvlib times the
  highest ratio PV/GHI at that time of day over the last 14 days; without the site's coordinates,
  the highest PV at that time of day over 14 days), the envelope times the **recent clear-sky
  index** (last hour, last day; clipped to [0, 1.5]), GHI times the 7-day median index, and
  yesterday's PV.
* **Coefficients per lead bucket** (0–15 min, 15–30, 30–45, 45–60 min, 1–1.5 h, 1.5–2, 2–3, 3–4,
  4–6, 6–8, 8–12, 12–16, 16–24 h), one set per quantile level, fitted per household by batched
  IRLS quantile regression on at most ``max_origins`` origins spread evenly over the last
  ``train_days`` days and over every time of day (each origin contributes one lead of each bucket,
  cycling through the bucket's leads). So the same fitted model serves the daemon's next-slot
  quotes and a day-ahead plan from any time of day, and a fit costs the same for any window.
  The IRLS is **over-relaxed** (``relaxation`` ω = 1.8: from the third iteration each step goes
  ω times as far as the plain IRLS step), which reaches the in-sample pinball loss of 25 plain
  iterations in ``iterations`` = 14 (tested); the levels and both fits share the work
  (:class:`_QuantileFits`). A fit computes the profile features only at the intervals it reads.
* **Bands** are the fitted P10/P90, widened about the P50 by a factor per household and lead
  bucket calibrated by *split conformal prediction*: the coefficients are fitted once on the older
  80 % of the training origins, and the factor is the smallest that puts 80 % of the most recent
  20 % inside (the split-conformal rank), clipped to [1, 3] (in-sample quantiles are rarely too
  wide out of sample); then the coefficients are refitted on all origins. With fewer than 14 days
  of held-out origins, or a fixed ``band_scale``, one factor serves all (1.04 by default, chosen
  on the tuning homes). The bands are sorted (no crossing).
* **Dead features are left out**: a feature whose RMS over the training origins is below 1 % of
  the mean |target| (PV before the panels were installed, a meter that read a few W) gets no
  coefficient, instead of a huge one that explodes once the feature moves. A feature that is 0
  at every training origin (the PV's, for a household without PV) is left out of the household's
  IRLS altogether (the same regression; the coefficients equal up to rounding, tested), which
  then costs what its live features cost; the IRLS iterates a few lead buckets at a time, so
  their pair products stay in the cache (the same bits).
* Vectorised over households: one call fits or forecasts every row of a history; households never
  share parameters, so a household's forecast does not depend on who else is in the batch.
* **Incremental prediction.** An interval's profile features are a function of the meter values
  1–21 days before it, its calendar and its clear-sky GHI alone, so a fitted model keeps those of
  the intervals its last prediction used (the day before the origin and the targets) and the next
  prediction computes only the intervals it does not hold — from the next slot's origin, one.
  They are reused only for the same rows, grid, local offset and holidays, and when the meter
  values they were built from are the same: the same read-only memory (a
  :class:`~forecasting.series.MeterHistory` is an immutable value; the in-process engine passes
  windows of one history) or values equal bit for bit (a daemon builds its history anew). The
  forecasts are bit for bit those computed from scratch (tested from many origins and horizons,
  across gaps, changed values, refits and the new year). Clear-sky GHI is memoised per day, the
  day types per span of days. A prediction's one origin sums its last day and hour over the
  intervals as rows, vectorised across the households, in the order of the running sums (the
  same bits; one household keeps :func:`numpy.cumsum`, which numpy would otherwise sum pairwise).
* **Weekly refits.** A refit's training window is usually an earlier fit's grown or moved by a
  week (the engines refit every period on the history before it), so a process keeps the
  features its last :data:`FIT_MEMO_BLOCKS` fits computed (:class:`_FitMemo`: the 7-day median
  and PV envelope of every interval, and the other profile features of every interval that was
  a training target) and the next fit of the same rows takes those of every interval both
  windows hold whose inputs (meter values 21 days back, calendar, clear-sky GHI) are bit for bit
  the same; it computes the others. The training set, hence the fit, is bit for bit the one from
  scratch (tested over grown, moved and arbitrary windows, changed values, other rows,
  calendars and sites); what a fit returns does not depend on what was fitted before it. A
  process whose fits are never followed by a refit of the same rows (a run shorter than its
  refit period: one fit per household) keeps none (:func:`keep_fit_features` ``(0)``): an entry
  holds ≈ 70–100 MB for a block of 32 households' year, which such a process would only carry.
* Pure: no clock, no randomness; pvlib's clear-sky GHI is computed from the time stamps alone.

Known limits: no weather forecast (a cloudy day after a clear one is missed day-ahead; day-ahead
skill is bounded by that, see the docs); holidays only when a country is given; DST is not
modelled (the calendar is local standard time, as everywhere in :mod:`forecasting`); a household
needs ``min_history_days`` (30) of history to be fitted, 22 to be forecast, and is fitted best on
a year.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from forecasting import holidaycal
from forecasting.models import (
    QUANTILES,
    QuantileForecast,
    Target,
    _make_forecast,
    target_values,
)
from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory
from forecasting.solar import clear_sky_ghi_w_m2
from market.errors import InvalidInput, UsageError

__all__ = ["FIT_MEMO_BLOCKS", "FittedProfileQR", "ProfileQR", "keep_fit_features"]

IntArray = npt.NDArray[np.int64]

#: Lead bucket edges in seconds (a bucket is [edge_i, edge_i+1)).
LEAD_EDGES_S: Final = (0, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600, 28800, 43200,
                       57600, 86400)  # fmt: skip
PROFILE_DAYS: Final = 21  # the oldest lag a feature uses
ENVELOPE_DAYS: Final = 14
MIN_TRAIN_DAYS: Final = 7  # days of training origins a fit needs at least
MIN_GHI_W_M2: Final = 20.0
DEFAULT_BAND_SCALE: Final = 1.04  # too little history to calibrate: the tuning homes' factor
MIN_CALIBRATION_DAYS: Final = 14  # the held-out recent origins must span two weeks at least
DEAD_FEATURE_SHARE: Final = 0.01  # a feature with RMS below this share of mean |target| is left out
MIN_BAND_SCALE: Final = 1.0
MAX_BAND_SCALE: Final = 3.0
#: The IRLS iterates as many lead buckets at a time as have at most this many bytes of pair
#: products (at least one): what stays in a core's cache between iterations (2 MB of L2 here).
IRLS_CACHE_BYTES: Final = 4 << 20
#: Clear-sky days memoised (:func:`_ghi_day`): a fit's year and its profile look-back, so the next
#: week's fit computes only its new days (each ≈ 0.1 ms; 96 floats each at 15 minutes).
GHI_DAYS_KEPT: Final = 512
#: Blocks of households whose fit features a process keeps for their next fit (:class:`_FitMemo`).
FIT_MEMO_BLOCKS: Final = 4


@functools.lru_cache(maxsize=8)
def lead_buckets(step_s: int) -> IntArray:
    """Bucket index of each lead 0 .. steps_per_day − 1 for intervals of ``step_s`` (read-only;
    memoised: every prediction asks)."""
    s = SECONDS_PER_DAY // step_s
    edges = sorted({-(-e // step_s) for e in LEAD_EDGES_S})
    lead = np.arange(s)
    out = np.asarray(np.searchsorted(edges, lead, side="right") - 1, dtype=np.int64)
    out.setflags(write=False)
    return out


def _day_type(history: MeterHistory, idx: IntArray, holidays: frozenset[int]) -> IntArray:
    """1 for a weekend day or holiday (local calendar), else 0, for intervals ``idx``."""
    t = history.start_s + idx * history.step_s + history.utc_offset_s
    day = t // SECONDS_PER_DAY
    if not len(day):
        return np.zeros(0, dtype=np.int64)
    # a day's type is its own: computed once per day the intervals span, then spread to them
    # (the same integers as per interval; a holiday lookup per day, not per interval)
    first = int(day.min())
    out: IntArray = _day_types(first, int(day.max()) + 1, holidays)[day - first]
    return out


@functools.lru_cache(maxsize=8)
def _day_types(first: int, end: int, holidays: frozenset[int]) -> IntArray:
    """:func:`_day_type` of the local days ``first .. end − 1`` (read-only; memoised: a prediction
    at every slot asks for the same days)."""
    days = np.arange(first, end, dtype=np.int64)
    out = ((days + 3) % 7 >= 5).astype(np.int64)  # 1970-01-01 was a Thursday
    if holidays:
        out |= np.isin(days, np.fromiter(holidays, dtype=np.int64)).astype(np.int64)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)
def _holiday_days(country: str | None, subdiv: str | None, years: range) -> frozenset[int]:
    """Local day numbers (days since 1970-01-01) of public holidays, or none without a country
    (memoised: a pure function of its arguments, asked again at every forecast)."""
    if country is None:
        return frozenset()
    # from the process's calendar source: in-process, or the daemon's file cache (which never
    # imports the holidays package into the daemon: forecasting.holidaycal)
    return holidaycal.holiday_days(country, subdiv, years)


@functools.lru_cache(maxsize=8)
def _ghi(
    start_s: int, step_s: int, total: int, lo: int, *, latitude: float, longitude: float
) -> FloatArray:
    """Clear-sky GHI at the midpoints of ``total`` intervals from ``start_s`` (0 before ``lo``),
    read-only. Memoised: a community fitted or predicted in blocks of rows asks for the same
    window once per block (the values are a function of the arguments alone); the days are
    memoised too (:func:`_ghi_day`), so a prediction at every slot computes a new day's values
    once, not its whole window's at every slot."""
    ghi = np.zeros(total)
    if lo < total:
        s = SECONDS_PER_DAY // step_s
        phase = start_s % step_s
        k_lo = (start_s - phase) // step_s + lo  # interval numbers on the grid from unix 0
        k_hi = k_lo + total - lo
        first, last = k_lo // s, (k_hi - 1) // s
        days = [
            _ghi_day(d, phase, step_s, latitude=latitude, longitude=longitude)
            for d in range(first, last + 1)
        ]
        ghi[lo:] = np.concatenate(days)[k_lo - first * s : k_hi - first * s]
    ghi.setflags(write=False)
    return ghi


@functools.lru_cache(maxsize=GHI_DAYS_KEPT)
def _ghi_day(day: int, phase: int, step_s: int, *, latitude: float, longitude: float) -> FloatArray:
    """Clear-sky GHI at the midpoints of the intervals ``phase + k * step_s`` that start on UTC
    day ``day`` (read-only). :func:`forecasting.solar.clear_sky_ghi_w_m2` is elementwise, so the
    values do not depend on how the times are cut into calls (tested bit for bit)."""
    s = SECONDS_PER_DAY // step_s
    mid = day * SECONDS_PER_DAY + phase + np.arange(s, dtype=np.int64) * step_s + step_s // 2
    out = clear_sky_ghi_w_m2(mid, latitude=latitude, longitude=longitude)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True)
class _Series:
    """What the features are built from, for one history (all arrays (households, T) or (T,))."""

    load: FloatArray  # the load-like series: the load, or the target itself
    pv: FloatArray | None  # the PV, when metered
    ghi: FloatArray | None  # clear-sky GHI at each interval's midpoint (when the site is known)
    day_type: IntArray  # (T,)
    holidays: frozenset[int]  # the public holidays day_type was built with


def _lags(y: FloatArray, t: IntArray, s: int, days: int) -> FloatArray:
    """``(n, len(t), days)``: y at ``t − d·s`` for d = 1..days."""
    idx = t[:, None] - s * np.arange(1, days + 1)[None, :]
    out: FloatArray = y[:, idx]
    return out


def _lag(y: FloatArray, t: IntArray, s: int, d: int) -> FloatArray:
    """``(n, len(t))``: y at ``t − d·s`` (a view when ``t`` is a run of consecutive intervals)."""
    if len(t) and t[-1] - t[0] == len(t) - 1:
        return y[:, t[0] - d * s : t[-1] + 1 - d * s]
    out: FloatArray = y[:, t - d * s]
    return out


def _median7(v: list[FloatArray]) -> FloatArray:
    """The elementwise median of seven equal-shaped arrays: their 4th smallest value, picked by a
    sorting network of minima and maxima. A selection, no arithmetic: the same numbers as
    :func:`numpy.median` over an axis of length 7 (for values without NaN; tested bit for bit;
    of a zero and a negative zero either may be picked, as by numpy's partition), at a fraction
    of its cost (it partitions a copy and checks for NaN)."""
    assert len(v) == 7
    v = list(v)
    for i, j in _NETWORK7:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return v[3]


#: A sorting network of 7 inputs (16 compare-exchanges); after it, v[3] is the median.
_NETWORK7: Final = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4),
                    (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6))  # fmt: skip


#: Profile feature columns (load part; PV part follows when PV is metered).
MED7: Final = 2
PV_ENV: Final = 7
#: Origin feature columns of the load (the PV's clear-sky indices follow when PV is metered).
LOAD_ORIGIN: Final = 4


def _med7(series: _Series, t: IntArray, s: int) -> FloatArray:
    """``(n, len(t))`` the median of the load at the same time over the 7 days before ``t``
    (profile column :data:`MED7`)."""
    return _median7([_lag(series.load, t, s, d) for d in range(1, 8)])


def _pv_ratios(series: _Series, t: IntArray, s: int, days: range) -> list[FloatArray]:
    """PV at the same time ``d`` days before ``t`` for each ``d`` in ``days``, as a share of
    clear-sky GHI then (0 when the sun is below :data:`MIN_GHI_W_M2`), or the PV itself without
    the site's GHI: ``(n, len(t))`` each."""
    assert series.pv is not None
    if series.ghi is None:
        return [_lag(series.pv, t, s, d) for d in days]
    if not len(t):
        return [np.zeros((series.pv.shape[0], 0)) for _ in days]
    # an interval's ratio is a function of that interval alone: compute it once for every
    # interval the lags read (the span from the oldest to the newest) and take each lag from
    # it, when that span is smaller than the lags' intervals together (a fit's consecutive
    # intervals: ≈ 14 times less arithmetic; a prediction's few targets: the lags apart)
    lo, hi = int(t.min()) - days[-1] * s, int(t.max()) - days[0] * s + 1
    if hi - lo <= len(days) * len(t):
        ratio = _ratio_of(series.pv[:, lo:hi], series.ghi[lo:hi])
        return [_lag(ratio, t - lo, s, d) for d in days]
    # the lags apart: every lag's intervals in one gather and one ratio (elementwise: the same
    # values as lag by lag, at one call's overhead instead of one per lag)
    idx = t[None, :] - s * np.asarray(days, dtype=np.int64)[:, None]  # (D, M)
    ratio = _ratio_of(series.pv[:, idx], series.ghi[idx])  # (n, D, M)
    return [ratio[:, j] for j in range(len(days))]


def _ratio_of(pv: FloatArray, ghi: FloatArray) -> FloatArray:
    """``pv`` ``(n, *S)`` as a share of ``ghi`` ``S``, 0 where the sun is below
    :data:`MIN_GHI_W_M2` (elementwise: the same value for an interval in any batch)."""
    lit = ghi > MIN_GHI_W_M2
    out: FloatArray = np.where(lit[None], pv / np.where(lit, ghi, 1.0)[None], 0.0)
    return out


def _pv_env(series: _Series, t: IntArray, s: int) -> FloatArray:
    """``(n, len(t))`` the clear-day PV envelope at ``t`` (profile column :data:`PV_ENV`): the
    highest PV/GHI ratio at that time over :data:`ENVELOPE_DAYS` days times the GHI at ``t``
    (without GHI: the highest PV). A maximum is exact in any order."""
    return _envelope(series, t, _pv_ratios(series, t, s, range(1, ENVELOPE_DAYS + 1)))


def _envelope(series: _Series, t: IntArray, ratios: list[FloatArray]) -> FloatArray:
    """:func:`_pv_env` from the :data:`ENVELOPE_DAYS` ratios of :func:`_pv_ratios`."""
    env = functools.reduce(np.maximum, ratios)
    if series.ghi is None:
        return env
    out: FloatArray = env * series.ghi[t][None]
    return out


#: :func:`_profiles` of at most this many intervals (a prediction's new ones) takes the load's and
#: the PV's medians of seven in one pass of the sorting network (fewer, larger operations).
_FEW_INTERVALS: Final = 8


def _profiles(
    series: _Series,
    t: IntArray,
    s: int,
    *,
    med7: FloatArray | None = None,
    env: FloatArray | None = None,
) -> FloatArray:
    """``(n, len(t), P)`` profile features at intervals ``t`` (each needs 21 days before it).
    ``med7``, ``env``: the columns :data:`MED7` and :data:`PV_ENV` at ``t`` when the caller has
    them (a fit computes both at every interval: each value is a function of its own interval's
    inputs, so taking them is bit for bit computing them again)."""
    lags = _lags(series.load, t, s, PROFILE_DAYS)
    same = (
        series.day_type[t[:, None] - s * np.arange(1, PROFILE_DAYS + 1)]
        == (series.day_type[t][:, None])
    )  # (M, D)
    rank = np.cumsum(same, axis=1)
    w = (same & (rank <= 4)).astype(np.float64)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    ratios = None
    med = None
    if series.pv is not None:
        # the envelope's 14 ratios hold the median's 7 (a ratio is its interval's alone)
        ratios = _pv_ratios(series, t, s, range(1, (7 if env is not None else ENVELOPE_DAYS) + 1))
        if med7 is None and len(t) <= _FEW_INTERVALS:
            # a prediction's few intervals: both medians of seven through one sorting network
            # (elementwise: the same values; the load's 7 lags are the first 7 of ``lags``)
            m = len(t)
            both = np.empty((7, lags.shape[0], 2 * m))
            both[..., :m] = lags[..., :7].transpose(2, 0, 1)
            both[..., m:] = np.asarray(ratios[:7])
            medians = _median7(list(both))
            med7, med = medians[:, :m], medians[:, m:]
        else:
            med = _median7(ratios[:7])
    feats = [
        lags[..., 0],
        lags[..., 6],
        _med7(series, t, s) if med7 is None else med7,
        lags.mean(axis=-1),
        np.einsum("nmd,md->nm", lags, w),
    ]
    if series.pv is not None:
        assert ratios is not None and med is not None
        if series.ghi is not None:
            med = med * series.ghi[t][None]
        if env is None:
            env = _envelope(series, t, ratios)
        feats += [_lag(series.pv, t, s, 1), med, env]
    return np.stack(feats, axis=-1)


def _origin_features(  # noqa: PLR0917 - the profile columns it reads are passed apart
    series: _Series, med7: FloatArray, env: FloatArray | None, t0: int, o: IntArray, s: int
) -> FloatArray:
    """``(n, len(o), K)`` features known at origins ``o``, from the profile columns
    :data:`MED7` (``med7``) and :data:`PV_ENV` (``env``, with PV) of the intervals ``t0, t0 + 1,
    …`` (which must cover at least a day before each origin), ``(n, M)`` each."""
    hour = max(1, 3600 * s // SECONDS_PER_DAY)
    m = med7.shape[1]
    n = series.load.shape[0]
    i = o - t0  # position of the origin in the running sums (the first i values summed)
    load = series.load[:, t0 : t0 + m]
    pv = None if series.pv is None else series.pv[:, t0 : t0 + m]
    if len(o) == 1 and n >= _ROWS_SUMMED_ACROSS and int(i[0]) >= s:
        # one origin (a prediction): only the sums of its last day and hour are read, the
        # intervals as rows, so each running sum is a sum over rows, vectorised across the
        # households (module rules, *Incremental prediction*: the same sums, in the same order)
        at = (int(i[0]) - s, int(i[0]) - hour, int(i[0]))
        resid_t = np.empty((m, n))
        np.subtract(load.T, med7.T, out=resid_t)
        c_r = _sums_at(resid_t, at)
        feats = [(c_r[2] - c_r[1]) / hour, (c_r[2] - c_r[0]) / s, resid_t[at[2] - 1],
                 series.load[:, int(o[0]) - 1]]  # fmt: skip
        if pv is not None:
            assert env is not None
            c_pv, c_env = _sums_at(pv.T.copy(), at), _sums_at(env.T.copy(), at)
            k_day = _ratio(c_pv[2] - c_pv[0], c_env[2] - c_env[0], 1.0)
            feats += [_ratio(c_pv[2] - c_pv[1], c_env[2] - c_env[1], k_day), k_day]
        return np.stack(feats, axis=-1)[:, None, :]
    resid = load - med7
    r = _cumsum0(resid)
    feats = [
        (r[:, i] - r[:, i - hour]) / hour,
        (r[:, i] - r[:, i - s]) / s,
        resid[:, i - 1],
        series.load[:, o - 1],
    ]
    if pv is not None:
        assert env is not None
        p, e = _cumsum0(pv), _cumsum0(env)
        k_day = _ratio(p[:, i] - p[:, i - s], e[:, i] - e[:, i - s], 1.0)
        feats += [_ratio(p[:, i] - p[:, i - hour], e[:, i] - e[:, i - hour], k_day), k_day]
    return np.stack(feats, axis=-1)


def _cumsum0(a: FloatArray) -> FloatArray:
    """``(n, M + 1)``: 0, then the running sums of ``a`` ``(n, M)`` along its rows (into one
    array: the same sums as concatenating a zero column to :func:`numpy.cumsum`)."""
    out = np.empty((a.shape[0], a.shape[1] + 1))
    out[:, 0] = 0.0
    np.cumsum(a, axis=1, out=out[:, 1:])
    return out


#: :func:`_sums_at` needs at least this many columns: numpy adds the rows of a ``(M, n)`` array
#: one after the other (``out += row``, as :func:`numpy.cumsum` does) only when the rows are not
#: its fast axis, i.e. for ``n ≥ 2`` (a single column is summed pairwise: other bits; tested)
_ROWS_SUMMED_ACROSS: Final = 2


def _sums_at(a_t: FloatArray, at: tuple[int, ...]) -> list[FloatArray]:
    """The running sums of ``a_t`` ``(M, n)`` (C-contiguous, ``n ≥`` :data:`_ROWS_SUMMED_ACROSS`)
    over its first ``p`` rows for each ``p`` in ``at`` (ascending), ``(n,)`` each: bit for bit
    :func:`_cumsum0` of ``a_t.T`` at ``p`` — row 0, then each next row added in order (tested)."""
    out: list[FloatArray] = []
    acc: FloatArray | None = None
    done = 0
    for p in at:
        if p == 0:
            out.append(np.zeros(a_t.shape[1]))
            continue
        if acc is None:
            acc = np.add.reduce(a_t[:p], axis=0)
        else:
            acc = acc.copy()
            for k in range(done, p):
                acc += a_t[k]
        done = p
        out.append(acc)
    return out


def _ratio(num: FloatArray, den: FloatArray, default: FloatArray | float) -> FloatArray:
    """``num / den`` clipped to [0, 1.5], ``default`` where ``den`` is (nearly) zero (night)."""
    out: FloatArray = np.where(den > 1.0, np.clip(num / np.maximum(den, 1.0), 0.0, 1.5), default)
    return out


def _design(prof_t: FloatArray, orig: FloatArray, has_pv: bool) -> FloatArray:
    """``(n, M, F)`` regression features from target profiles and origin features (both (n, M, ·))."""
    n, m = prof_t.shape[:2]
    cols = [np.ones((n, m, 1)), prof_t, orig[..., :LOAD_ORIGIN]]
    if has_pv:
        env = prof_t[..., PV_ENV : PV_ENV + 1]
        cols += [env * orig[..., LOAD_ORIGIN : LOAD_ORIGIN + 1], env * orig[..., LOAD_ORIGIN + 1 :]]
    return np.concatenate(cols, axis=-1)


#: The profile columns a fit's memo keeps at every interval (computed from many lags); the others
#: are meter values and the columns :data:`MED7` and :data:`PV_ENV`, kept at every interval anyway.
_KEPT_LOAD: Final = (3, 4)  # the 21-day mean, the same-day-type mean
_KEPT_PV: Final = (3, 4, 6)  # and the 7-day median PV index × GHI


@dataclass(frozen=True, slots=True, eq=False)
class _FitFeatures:
    """One fit's features of one block of households, for the next fit of the same rows: the
    columns :data:`MED7` and :data:`PV_ENV` at the intervals ``lo .. lo + M − 1`` (numbered on
    the grid from unix 0), and the kept profile columns either as the fit computed them (all
    columns at the intervals ``rows``: a first fit stores what it has, at no cost) or at every
    interval of the window where ``valid`` (after a refit)."""

    key: tuple[object, ...]
    lo: int
    med7: FloatArray  # (n, M)
    env: FloatArray | None  # (n, M), with PV
    series: _Series  # what they were built from; its interval 0 is number `base`
    base: int
    rows: IntArray | None = None  # absolute numbers of prof's intervals (sorted)
    prof: FloatArray | None = None  # (n, len(rows), P)
    kept: FloatArray | None = None  # (K, n, M): _KEPT_LOAD or _KEPT_PV, where valid
    valid: npt.NDArray[np.bool_] | None = None  # (M,)


class _FitMemo:
    """The fit features of the last :data:`FIT_MEMO_BLOCKS` blocks a process fitted (module
    rules, *Weekly refits*). A weekly refit's training window is last week's moved or grown by
    a week: the features of every interval both windows hold are taken from the memo when the
    meter values, calendar and clear-sky GHI they were built from are bit for bit the same;
    the others are computed. Entries are never changed once stored (a fit builds new arrays),
    so fits on several threads read consistent entries; the lock guards the list only."""

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self._lock = threading.Lock()
        self._entries: list[_FitFeatures] = []
        self.taken = 0  # training targets whose kept features came from the memo (for tests)

    def clear(self) -> None:
        with self._lock:
            self._entries = []

    def resize(self, blocks: int) -> None:
        """Keep at most ``blocks`` entries from now on (the newest; ``0``: none)."""
        if blocks < 0:
            raise UsageError(f"the fit memo keeps >= 0 blocks, got {blocks}")
        with self._lock:
            self.blocks = blocks
            self._entries = self._entries[len(self._entries) - blocks :] if blocks else []

    def features(
        self,
        series: _Series,
        *,
        t0: int,
        end: int,
        t_used: IntArray,
        s: int,
        key: tuple[object, ...],
        base: int,
    ) -> tuple[FloatArray, FloatArray | None, FloatArray]:
        """The columns :data:`MED7` and :data:`PV_ENV` ``(n, end − t0)`` at intervals ``t0 ..
        end − 1`` of ``series`` (``None`` without PV) and :func:`_profiles` ``(n, len(t_used),
        P)`` at ``t_used`` (sorted, within them); interval 0 of ``series`` is number ``base``
        on the grid from unix 0. Bit for bit what they are computed from scratch (tested)."""
        old = self._find(series, key=key, lo=base + t0, hi=base + end, base=base, s=s)
        at = t_used - t0
        if old is None:  # computed as from scratch, and kept as computed
            t_all = np.arange(t0, end, dtype=np.int64)
            env = None if series.pv is None else _pv_env(series, t_all, s)
            med7 = _med7(series, t_all, s)
            prof = _profiles(
                series, t_used, s, med7=med7[:, at], env=None if env is None else env[:, at]
            )
            self._put(None, _FitFeatures(key, base + t0, med7, env, series, base,
                                         rows=t_used + base, prof=prof))  # fmt: skip
            return med7, env, prof
        m = end - t0
        n = series.load.shape[0]
        cols = _KEPT_LOAD if series.pv is None else _KEPT_PV
        med7 = np.empty((n, m))
        env = None if series.pv is None else np.empty((n, m))
        kept = np.empty((len(cols), n, m))
        valid = np.zeros(m, dtype=np.bool_)
        off = base + t0 - old.lo  # position p here is position p + off there
        a, b = max(0, -off), min(m, old.med7.shape[1] - off)
        med7[:, a:b] = old.med7[:, a + off : b + off]
        if env is not None:
            assert old.env is not None
            env[:, a:b] = old.env[:, a + off : b + off]
        for lo, hi in ((0, a), (b, m)):
            if lo < hi:
                t = np.arange(t0 + lo, t0 + hi, dtype=np.int64)
                med7[:, lo:hi] = _med7(series, t, s)
                if env is not None:
                    env[:, lo:hi] = _pv_env(series, t, s)
        if old.kept is not None:
            assert old.valid is not None
            kept[..., a:b] = old.kept[..., a + off : b + off]
            valid[a:b] = old.valid[a + off : b + off]
        else:
            assert old.rows is not None and old.prof is not None
            pos = old.rows - (base + t0)
            inside = (pos >= 0) & (pos < m)
            for j, c in enumerate(cols):
                kept[j][:, pos[inside]] = old.prof[:, inside, c]
            valid[pos[inside]] = True
        miss = at[~valid[at]]
        self.taken += len(at) - len(miss)
        if miss.size:
            new = _profiles(
                series, miss + t0, s, med7=med7[:, miss], env=None if env is None else env[:, miss]
            )
            for j, c in enumerate(cols):
                kept[j][:, miss] = new[..., c]
            valid[miss] = True
        # the other columns are meter values and the two columns kept at every interval: the
        # same numbers _profiles takes
        feats = [_lag(series.load, t_used, s, 1), _lag(series.load, t_used, s, 7), med7[:, at],
                 kept[0][:, at], kept[1][:, at]]  # fmt: skip
        if env is not None:
            assert series.pv is not None
            feats += [_lag(series.pv, t_used, s, 1), kept[2][:, at], env[:, at]]
        self._put(old, _FitFeatures(key, base + t0, med7, env, series, base, kept=kept,
                                    valid=valid))  # fmt: skip
        return med7, env, np.stack(feats, axis=-1)

    def _put(self, old: _FitFeatures | None, entry: _FitFeatures) -> None:
        """Store ``entry`` in place of ``old`` (if held), dropping the oldest beyond the limit."""
        with self._lock:
            if not self.blocks:
                self._entries = []
                return
            entries = [e for e in self._entries if e is not old]
            self._entries = [*entries[max(0, len(entries) + 1 - self.blocks) :], entry]

    def _find(
        self, series: _Series, *, key: tuple[object, ...], lo: int, hi: int, base: int, s: int
    ) -> _FitFeatures | None:
        """The newest entry for ``key`` whose intervals overlap ``lo .. hi − 1`` and whose
        inputs of those intervals equal ``series``' bit for bit (``None``: none)."""
        with self._lock:
            entries = list(self._entries)
        for e in reversed(entries):
            a, b = max(lo, e.lo), min(hi, e.lo + e.med7.shape[1])
            if e.key != key or a >= b:
                continue
            # an interval's inputs: the values up to PROFILE_DAYS before it, and its own
            # calendar and GHI (the load and PV at the interval itself are compared too)
            here = slice(a - base - PROFILE_DAYS * s, b - base)
            there = slice(a - e.base - PROFILE_DAYS * s, b - e.base)
            if _equal_inputs(e.series, series, there, here):
                return e
        return None


def _equal_inputs(old: _Series, new: _Series, there: slice, here: slice) -> bool:
    """Whether ``old``'s inputs at ``there`` are bit for bit ``new``'s at ``here``."""
    pairs: list[tuple[npt.NDArray[np.generic] | None, npt.NDArray[np.generic] | None]] = [
        (old.load, new.load), (old.pv, new.pv), (old.ghi, new.ghi), (old.day_type, new.day_type)
    ]  # fmt: skip
    for x, y in pairs:
        if x is None or y is None:
            if (x is None) != (y is None):
                return False
            continue
        u, v = x[..., there], y[..., here]
        if u.shape != v.shape:
            return False
        day = min(u.shape[-1], 96)  # a cheap first look: another block's rows differ at once
        if not np.array_equal(u[..., :day].view(np.int64), v[..., :day].view(np.int64)):
            return False
        if not np.array_equal(u.view(np.int64), v.view(np.int64)):
            return False
    return True


#: The process's fit memo (module rules, *Weekly refits*).
_FIT_MEMO: Final = _FitMemo(FIT_MEMO_BLOCKS)


def keep_fit_features(blocks: int) -> None:
    """How many blocks of households' fit features this process keeps for their next fit
    (module rules, *Weekly refits*): :data:`FIT_MEMO_BLOCKS` unless told otherwise; ``0`` for a
    process that will not refit the same rows (it then holds none). Never changes a fit's result,
    only what a refit costs and what the process holds."""
    _FIT_MEMO.resize(blocks)


@dataclass(frozen=True, slots=True)
class ProfileQR:
    """Quantile regression on profiles, the recent anomaly and clear-sky PV (module docstring)."""

    train_days: int = 365
    max_origins: int = 1500
    latitude: float | None = None
    longitude: float | None = None
    holiday_country: str | None = None
    holiday_subdiv: str | None = None
    band_scale: float | None = None
    calibration_share: float = 0.2
    iterations: int = 14
    relaxation: float = 1.8
    ridge: float = 1e-3
    target: Target = Target.NET

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise UsageError(f"profile-qr iterations must be >= 1, got {self.iterations}")
        if not 0.0 < self.relaxation < 2.0:  # over-relaxation converges only for 0 < ω < 2
            raise UsageError(f"profile-qr relaxation must be in (0, 2), got {self.relaxation}")

    @property
    def name(self) -> str:
        return "profile-qr"

    @property
    def min_history_days(self) -> int:
        """Whole days of history :meth:`fit` needs: 22 for the oldest lag, a week of training
        origins and a day of targets (forecasting alone needs :data:`PROFILE_DAYS` + 1). It
        learns better from more: ``train_days`` (a year) is what it was measured with."""
        return PROFILE_DAYS + 1 + MIN_TRAIN_DAYS + 1

    def _series(self, history: MeterHistory, extra_steps: int) -> _Series:
        use_pv = self.target is Target.NET and history.has_components
        load = target_values(history, self.target)
        pv = None
        if use_pv:
            assert history.load_w is not None and history.pv_w is not None
            load, pv = history.load_w, history.pv_w
        total = history.steps + extra_steps
        idx = np.arange(total, dtype=np.int64)
        ghi = None
        if use_pv and self.latitude is not None and self.longitude is not None:
            # the envelope looks back ENVELOPE_DAYS from a day before the origin at most
            lo = (
                max(0, history.steps - (ENVELOPE_DAYS + 1) * history.steps_per_day)
                if (extra_steps)
                else 0
            )
            ghi = _ghi(
                history.start_s,
                history.step_s,
                total,
                lo,
                latitude=self.latitude,
                longitude=self.longitude,
            )
        first = (history.start_s + history.utc_offset_s) // SECONDS_PER_DAY
        last = (history.start_s + total * history.step_s + history.utc_offset_s) // SECONDS_PER_DAY
        years = range(int(_year(first)), int(_year(last)) + 1)
        hol = _holiday_days(self.holiday_country, self.holiday_subdiv, years)
        # load and PV end with the history (a feature never reads a value after it); the
        # calendar and GHI cover the extra steps too (the targets')
        return _Series(load=load, pv=pv, ghi=ghi, day_type=_day_type(history, idx, hol),
                       holidays=hol)  # fmt: skip

    def training_set(self, history: MeterHistory) -> tuple[FloatArray, FloatArray, int | None]:
        """What :meth:`fit` fits: features ``(n, B, N, F)`` and targets ``(n, B, N)`` of the
        training origins (oldest first) for each household and lead bucket, and how many of the
        origins the calibration fit takes (``None``: no calibration, one fixed factor)."""
        s = history.steps_per_day
        y = target_values(history, self.target)
        first = (PROFILE_DAYS + 1) * s  # the oldest lag of the first origin's target
        last = history.steps - s  # every lead of the last origin is inside the history
        if last - first < MIN_TRAIN_DAYS * s:
            raise InvalidInput(
                reason="history_too_short", subject="meter history", field="steps",
                expected=f">= {self.min_history_days} days ({self.min_history_days * s} intervals)",
                found=f"{history.steps} intervals ({history.steps / s:.1f} days)",
            )  # fmt: skip
        first = max(first, last - self.train_days * s)
        # at most max_origins training origins, spread over every time of day
        stride = -(-(last - first) // self.max_origins)
        k = np.arange((last - first) // stride, dtype=np.int64)
        origins = first + k * stride + k % stride
        buckets = lead_buckets(history.step_s)
        n_b = int(buckets.max()) + 1
        series = self._series(history, 0)
        t0 = first - s
        targets = []
        for b in range(n_b):
            leads = np.flatnonzero(buckets == b)
            targets.append(origins + leads[k % len(leads)])
        t_used = _sorted_unique(np.concatenate(targets))
        # the origin features need two profile columns of every interval (their sums over the
        # last hour and day); the targets need all of them, but only ≈ 60 % of the intervals are
        # targets: an interval's features are its own (bit for bit the same in any subset), so
        # those an earlier fit of the same households computed are taken from it (_FitMemo)
        phase = history.start_s % history.step_s
        med7, env, prof = _FIT_MEMO.features(
            series, t0=t0, end=history.steps, t_used=t_used, s=s,
            key=(history.households, history.step_s, phase, series.pv is None,
                 series.ghi is None),
            base=(history.start_s - phase) // history.step_s,
        )  # fmt: skip
        orig = _origin_features(series, med7, env, t0, origins, s)
        pos = [np.searchsorted(t_used, t_b) for t_b in targets]
        first_x = _design(prof[:, pos[0]], orig, series.pv is not None)
        x_all = np.empty((first_x.shape[0], n_b, *first_x.shape[1:]))  # (n, B, N, F)
        x_all[:, 0] = first_x
        for b in range(1, n_b):
            x_all[:, b] = _design(prof[:, pos[b]], orig, series.pv is not None)
        n_cal = int(len(origins) * self.calibration_share)
        calibrate = self.band_scale is None and n_cal * stride >= MIN_CALIBRATION_DAYS * s
        y_all = np.stack([y[:, t_b] for t_b in targets], axis=1)  # (n, B, N)
        return x_all, y_all, len(origins) - n_cal if calibrate else None

    def fit(self, history: MeterHistory) -> FittedProfileQR:
        x_all, y_all, cut = self.training_set(history)
        n, n_b, n_origins, n_f = x_all.shape
        coefs = np.zeros((n, n_b, len(QUANTILES), n_f))
        scales = np.full((n, n_b), self.band_scale or DEFAULT_BAND_SCALE)
        # the households' products of feature pairs, one after the other in the same array per
        # number of features (20 MB for a year's origins: allocating it anew for each household
        # cost more than filling it)
        pairs_by_f: dict[int, FloatArray] = {}
        for i in range(n):
            # a feature that is 0 at every origin (the PV's, for a household without PV) is
            # dead in every bucket and both fits (its coefficient is 0, and the other
            # coefficients are those of the regression without it): left out of the IRLS, which
            # then costs as much as the features left in (a Gram matrix of 10 features instead
            # of 15: half the pair products)
            live = np.flatnonzero((x_all[i] != 0.0).any(axis=(0, 1)))
            x = x_all[i] if len(live) == n_f else np.ascontiguousarray(x_all[i][..., live])
            f = x.shape[-1]
            if f not in pairs_by_f:
                pairs_by_f[f] = np.empty((n_b, f * (f + 1) // 2 + f, n_origins))
            fits = _QuantileFits(
                x, y_all[i], ridge=self.ridge, relaxation=self.relaxation, pairs_t=pairs_by_f[f]
            )
            if cut is None:
                coefs[i][..., live] = fits.fit(n_origins, iterations=self.iterations)
                continue
            # split conformal: fit on the older origins, score the most recent ones; then fit
            # all origins alike (not from the older fit's coefficients: a fit started there
            # converges further than the one the bands were calibrated on, and the bands held
            # 0.5-1.4 points more than 80 %)
            older = fits.fit(cut, iterations=self.iterations)
            pred = np.einsum("bnf,bqf->bnq", x[:, cut:], older)
            scales[i] = _conformal_scales(pred, y_all[i, :, cut:])
            coefs[i][..., live] = fits.fit(n_origins, iterations=self.iterations)
        coefs.setflags(write=False)
        scales.setflags(write=False)
        return FittedProfileQR(self, coefs, history.step_s, scales)


#: Upper-triangle index pairs of a Gram matrix of F features, by F.
@functools.lru_cache(maxsize=4)
def _pairs(f: int) -> tuple[IntArray, IntArray]:
    iu, ju = np.triu_indices(f)
    return iu.astype(np.int64), ju.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _gram_of_pairs(f: int) -> IntArray:
    """For each element of an F × F Gram matrix (row-major), the index of its pair's product in
    :func:`_pairs`' order (the matrix is symmetric: (i, j) and (j, i) share one)."""
    iu, ju = _pairs(f)
    full = np.empty((f, f), dtype=np.int64)
    full[iu, ju] = np.arange(len(iu))
    full[ju, iu] = np.arange(len(iu))
    out: IntArray = full.ravel()
    out.setflags(write=False)
    return out


class _QuantileFits:
    """One household's quantile regressions: every lead bucket and quantile level, on the first
    ``rows`` training origins (the older ones, to calibrate) or all of them, by IRLS.

    The same regression as :func:`forecasting.models._irls_quantile` on each bucket and level
    (features scaled by their RMS over the fit's origins, the ridge relative to that scale, the
    same weights, dead features left out), computed so that the levels and both fits share the
    work: the three levels have the same features, so each Gram matrix ``Xᵀ W X`` is the
    products of feature pairs (computed once, for both fits) times the level's weights — one
    matrix product per iteration for all buckets and levels, half the multiplications of a Gram
    matrix per level (it is symmetric); the first step (least squares, the same for every
    level) is solved once. The same numbers as that function up to rounding (``relaxation =
    1``, the same iterations: tested).

    One change to the iteration (the rules of the module): from the third iteration the step is
    **over-relaxed**, ``β ← β + ω (β_IRLS − β)`` with ``ω`` = ``relaxation``: it reaches the
    pinball loss of 25 plain iterations in about 14."""

    def __init__(
        self,
        x: FloatArray,
        y: FloatArray,
        *,
        ridge: float,
        relaxation: float,
        pairs_t: FloatArray | None = None,
    ) -> None:
        """``pairs_t``: an array of shape ``(B, P + F, N)`` to hold the products of feature pairs
        (overwritten; a new one when ``None``)."""
        self.x, self.y = x, y  # (B, N, F), (B, N)
        self.ridge, self.relaxation = ridge, relaxation
        self.rms = np.sqrt((x**2).mean(axis=1))  # (B, F), over all origins
        self.scale = self.rms + 1e-9
        # the scaled features, laid out (B, F, N) as they are divided (the same quotients as
        # dividing (B, N, F) and transposing a copy: one pass, one array)
        self.xs_t = np.empty((x.shape[0], x.shape[2], x.shape[1]))  # (B, F, N)
        np.divide(x.transpose(0, 2, 1), self.scale[:, :, None], out=self.xs_t)
        n_b, f, n = self.xs_t.shape
        # the products of feature pairs (in _pairs' order), then of each feature and the
        # target: one matrix product with the weights gives XᵀWX and XᵀWy
        shape = (n_b, f * (f + 1) // 2 + f, n)  # (B, P + F, N)
        if pairs_t is not None and pairs_t.shape != shape:
            raise UsageError(f"pairs_t must have shape {shape}, got {pairs_t.shape}")
        self.pairs_t = np.empty(shape) if pairs_t is None else pairs_t
        at = 0
        for i in range(f):
            np.multiply(
                self.xs_t[:, i : i + 1], self.xs_t[:, i:], out=self.pairs_t[:, at : at + f - i]
            )
            at += f - i
        np.multiply(self.xs_t, y[:, None, :], out=self.pairs_t[:, at:])

    def fit(self, rows: int, *, iterations: int) -> FloatArray:
        """``(B, Q, F)`` coefficients (in the features' units) from the first ``rows`` origins,
        by ``iterations`` of IRLS from least squares."""
        x, y = self.x[:, :rows], self.y[:, :rows]
        n_b, _, f = x.shape
        # a feature that is (nearly) always zero here, such as PV before the panels were
        # installed, would get a huge coefficient and explode once it moves: leave it out
        rms = self.rms if rows == self.x.shape[1] else np.sqrt((x**2).mean(axis=1))
        dead = rms < DEAD_FEATURE_SHARE * (np.abs(y).mean(axis=1)[:, None] + 1.0)
        dead[:, 0] = False  # the intercept
        # this fit's features are xs · d: scaled by their RMS over its own origins, dead ones 0
        d = np.where(dead, 0.0, self.scale / (rms + 1e-9))[:, None, :]  # (B, 1, F)
        floor = 1e-3 * (np.abs(y).mean(axis=1)[:, None, None] + 1e-9)
        out: FloatArray = np.empty((n_b, len(QUANTILES), f))
        # the buckets are independent regressions: iterate a few at a time, so that their pair
        # products (what every iteration reads) stay in the cache from one iteration to the next
        # instead of streaming all of them (20 MB) from memory each time; every product, solve
        # and weight is computed for one bucket alone either way (the same bits, tested)
        per_bucket = self.pairs_t[0, :, :rows].nbytes
        group = max(1, IRLS_CACHE_BYTES // per_bucket)
        for lo in range(0, n_b, group):
            bs = slice(lo, min(n_b, lo + group))
            out[bs] = self._iterate(rows, bs, d[bs], floor[bs], iterations=iterations)
        return out

    def _iterate(
        self, rows: int, bs: slice, d: FloatArray, floor: FloatArray, *, iterations: int
    ) -> FloatArray:
        """The IRLS of buckets ``bs`` on the first ``rows`` origins: ``(b, Q, F)`` coefficients
        in the features' units, given the fit's feature factors ``d`` ``(b, 1, F)`` (scaled,
        dead ones 0) and the weights' ``floor`` ``(b, 1, 1)``."""
        n_b, _, f = d.shape
        p = f * (f + 1) // 2  # pair products; the target products follow
        dd = d[..., :, None] * d[..., None, :]  # (b, 1, F, F)
        xs_t, pairs_t = self.xs_t[bs, :, :rows], self.pairs_t[bs, :, :rows]
        taus = np.asarray(QUANTILES)[None, :, None]  # (1, Q, 1)
        yq = self.y[bs, None, :rows]  # (b, 1, N)
        eye = self.ridge * np.eye(f)
        gram = np.empty((n_b, len(QUANTILES), f, f))
        # each Gram matrix from its pairs' products in one gather (both triangles)
        flat = gram.reshape(n_b, len(QUANTILES), f * f)
        full = _gram_of_pairs(f)
        # least squares first: one set of weights for every level
        w: FloatArray = np.ones((n_b, 1, rows))
        beta: FloatArray = np.zeros((n_b, len(QUANTILES), f))
        # the residuals and weights of every iteration in the same two arrays (the same values
        # as new arrays: half a MB each, which the allocator maps and unmaps every time)
        r = np.empty((n_b, len(QUANTILES), rows))
        weights = np.empty_like(r)
        # the pinball weights' levels as whole arrays (τ above, 1 − τ below): picked by one
        # ``where`` over contiguous operands, ≈ 25 % cheaper than over the broadcast levels
        above = np.empty(r.shape, dtype=np.bool_)
        tau_hi = np.broadcast_to(taus, r.shape).copy()
        tau_lo = 1.0 - tau_hi
        pairs = pairs_t.transpose(0, 2, 1)
        for it in range(iterations):
            g = w @ pairs  # (b, Q or 1, P + F)
            if g.shape[1] == len(QUANTILES):
                np.take(g, full, axis=-1, out=flat)
            else:  # least squares: one set of weights for every level
                flat[...] = np.take(g, full, axis=-1)
            gram *= dd
            gram += eye
            rhs = g[..., p:] * d  # (b, Q or 1, F)
            step = np.asarray(np.linalg.solve(gram, rhs[..., None])[..., 0], dtype=np.float64)
            beta = step if it < 2 else beta + self.relaxation * (step - beta)
            np.matmul(beta * d, xs_t, out=r)
            np.subtract(yq, r, out=r)
            w = _weights_into(r, tau_hi, tau_lo, floor, above=above, out=weights)
        out: FloatArray = beta * d / self.scale[bs, None, :]
        return out


def _weights_into(
    r: FloatArray,
    tau_hi: FloatArray,
    tau_lo: FloatArray,
    floor: FloatArray,
    *,
    above: npt.NDArray[np.bool_],
    out: FloatArray,
) -> FloatArray:
    """:func:`forecasting.models._pinball_weights` of ``r`` into ``out`` (``r`` overwritten with
    the clipped sizes), given its levels as arrays of ``r``'s shape (τ, 1 − τ) and a buffer
    ``above`` for the signs: the same operations on the same numbers (tested bit for bit)."""
    np.greater_equal(r, 0.0, out=above)
    levels = np.where(above, tau_hi, tau_lo)
    size = np.abs(r, out=r)
    np.maximum(size, floor, out=size)
    np.divide(levels, size, out=out)
    return out


def _conformal_scales(pred: FloatArray, actual: FloatArray) -> FloatArray:
    """Per lead bucket, the factor that widens the P10/P90 about the P50 so that 80 % of the
    held-out ``actual`` values ``(B, N)`` fall inside (``pred`` is ``(B, N, Q)``), clipped to
    [:data:`MIN_BAND_SCALE`, :data:`MAX_BAND_SCALE`]."""
    pred = np.sort(pred, axis=-1)
    lo, mid, hi = pred[..., 0], pred[..., 1], pred[..., 2]
    width = np.maximum(np.abs(mid) * 1e-3, 1.0)  # W: a band of zero width needs any scale
    need = np.maximum(
        (mid - actual) / np.maximum(mid - lo, width), (actual - mid) / np.maximum(hi - mid, width)
    )
    level = QUANTILES[-1] - QUANTILES[0]
    k = np.ceil(level * (need.shape[1] + 1)) / need.shape[1]  # split-conformal rank
    out: FloatArray = np.clip(_row_quantile(need, min(k, 1.0)), MIN_BAND_SCALE, MAX_BAND_SCALE)
    return out


def _row_quantile(a: FloatArray, q: float) -> FloatArray:
    """Each row's quantile ``q`` of the finite ``a`` ``(B, N)``, ``N`` ≥ 1: bit for bit
    ``np.quantile(a, q, axis=1)`` (its default method, "linear": the order statistics at the
    floor and ceiling of ``(N − 1)·q``, interpolated as numpy's ``_lerp`` does; tested against
    it) but for the sign of a zero (numpy partitions, this sorts: equal -0.0 and 0.0 may come
    in another order; :func:`_conformal_scales` clips it to >= 1), without the :func:`numpy.unique` numpy calls for the positions to partition at, whose
    check for a masked array imports ``numpy.ma`` (:func:`_sorted_unique`)."""
    n = a.shape[1]
    virtual = (n - 1) * np.float64(q)
    if virtual >= n - 1:  # numpy: both neighbours are the last value
        prev = nxt = -1
    elif virtual < 0:
        prev = nxt = 0
    else:
        prev = int(np.floor(virtual))
        nxt = prev + 1
    gamma = float(virtual - prev)
    ordered = np.sort(a, axis=1)
    below, above = ordered[:, prev], ordered[:, nxt]
    diff = above - below
    if gamma >= 0.5:
        out: FloatArray = above - diff * (1 - gamma)
    else:
        out = below + diff * gamma
    return out


def _sorted_unique(a: IntArray) -> IntArray:
    """The distinct values of ``a``, ascending: :func:`numpy.unique`'s answer for integers (it
    sorts and keeps each first of a run, as here), without its check for a masked array, which
    imports ``numpy.ma`` — ≈ 1.6 MB (measured) that a household daemon would otherwise hold for good for
    this one call (``tests/daemon/test_light_imports.py``)."""
    ordered = np.sort(a)
    first = np.empty(ordered.shape, dtype=np.bool_)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    out: IntArray = ordered[first]
    return out


@functools.lru_cache(maxsize=64)
def _year(day: int) -> int:
    """The calendar year of day number ``day`` (memoised: asked twice at every prediction)."""
    return int(str(np.datetime64(int(day), "D"))[:4])


class _ProfileMemo:
    """What the last prediction of a fitted model computed that the next one can reuse: the
    profile features of the intervals it used (a day before its origin and its targets) and the
    meter values those features were built from (module rules, *Incremental prediction*).

    Private to one :class:`FittedProfileQR`. Its state is replaced as one tuple, so predictions
    from several threads read a consistent memo (at worst they compute more). A pickle of it is
    an empty memo: a fitted model crosses a process boundary without it."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        #: (key, unix second of the window's first interval, its profiles (n, M, P), the inputs:
        #: the load-like series and the PV or None, from PROFILE_DAYS before the window's first
        #: interval to a day before its end, (n, M + (PROFILE_DAYS - 1) · s) each)
        self.state: (
            tuple[tuple[object, ...], int, FloatArray, tuple[FloatArray, FloatArray | None]] | None
        ) = None

    def __reduce__(self) -> tuple[type[_ProfileMemo], tuple[()]]:
        return (_ProfileMemo, ())

    def window(
        self,
        series: _Series,
        *,
        t0: int,
        end: int,
        key: tuple[object, ...],
        start_s: int,
        step_s: int,
    ) -> FloatArray:
        """``(n, end − t0, P)`` :func:`_profiles` of the intervals ``t0 .. end − 1`` of
        ``series`` (``t0`` starts at ``start_s``): those the memo holds for the same ``key`` and
        the same input values are taken from it, the others computed; the memo then holds this
        window. Bit for bit :func:`_profiles` of the whole window (an interval's features are a
        function of its own inputs; for the same rows, numpy's reductions sum alike; tested)."""
        s = SECONDS_PER_DAY // step_s
        lag = PROFILE_DAYS * s  # the oldest input of an interval is this many steps before it
        inputs = (series.load[:, t0 - lag : end - s],
                  None if series.pv is None else series.pv[:, t0 - lag : end - s])  # fmt: skip
        m = end - t0
        lo = hi = shift = 0  # the window's positions [lo, hi) taken from the memo's shift + lo ..
        state = self.state
        if state is not None and state[0] == key:
            _, held_s, held, held_inputs = state
            shift = (start_s - held_s) // step_s
            lo, hi = max(0, -shift), min(m, held.shape[1] - shift)
            if lo < hi and not _same_inputs(
                held_inputs, inputs, shift=shift, lo=lo, hi=hi, span=lag - s
            ):
                lo = hi = 0
        if lo < hi:
            assert state is not None
            t = t0 + np.concatenate([np.arange(lo), np.arange(hi, m)]).astype(np.int64)
            parts = [state[2][:, shift + lo : shift + hi]]
            if t.size:
                new = _profiles(series, t, s)
                parts = [new[:, :lo], *parts, new[:, lo:]]
            prof = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        else:
            prof = _profiles(series, np.arange(t0, end, dtype=np.int64), s)
        kept = (_kept(inputs[0]), None if inputs[1] is None else _kept(inputs[1]))
        self.state = (key, start_s, prof, kept)
        return prof


def _kept(a: FloatArray) -> FloatArray:
    """``a`` itself when it is a read-only view of read-only memory (an immutable history's, as
    :class:`~forecasting.series.MeterHistory` makes them), else a copy: what the memo keeps."""
    return a if _frozen_owner(a) is not None else a.copy()


def _frozen_owner(a: FloatArray) -> FloatArray | None:
    """The array that owns ``a``'s memory, when neither it nor ``a`` can be written through."""
    owner = a
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    if a.flags.writeable or owner.flags.writeable or owner.base is not None:
        return None
    return owner


def _same_inputs(
    old: tuple[FloatArray, FloatArray | None],
    new: tuple[FloatArray, FloatArray | None],
    *,
    shift: int,
    lo: int,
    hi: int,
    span: int,
) -> bool:
    """Whether the inputs of window positions ``lo .. hi − 1`` are bit for bit the same in the
    memo's ``old`` (positions offset by ``shift``) and ``new`` (each position's inputs are the
    ``span + 1`` values from its own position on)."""
    for a, b in zip(old, new, strict=True):
        if (a is None) != (b is None):
            return False
        if a is None or b is None:
            continue
        owner = _frozen_owner(a)
        if (
            owner is not None
            and owner is _frozen_owner(b)
            and a.strides == b.strides
            and a.shape[0] == b.shape[0]
            and _address(b) - _address(a) == shift * a.strides[1]
        ):
            continue  # the same immutable memory: the same values
        x = a[:, shift + lo : shift + hi + span]
        y = b[:, lo : hi + span]
        if x.shape != y.shape or not np.array_equal(x.view(np.int64), y.view(np.int64)):
            return False
    return True


def _address(a: FloatArray) -> int:
    return int(a.__array_interface__["data"][0])


@dataclass(frozen=True, slots=True, eq=False)
class FittedProfileQR:
    """Per-household coefficients ``(households, buckets, quantiles, features)`` and band
    scales ``(households, buckets)``."""

    model: ProfileQR
    coefs: FloatArray
    step_s: int
    band_scales: FloatArray
    _memo: _ProfileMemo = field(default_factory=_ProfileMemo, init=False, repr=False)

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        s = history.steps_per_day
        if history.step_s != self.step_s:
            raise UsageError(f"fitted on {self.step_s}-s steps, got {history.step_s}-s steps")
        if not 1 <= horizon <= s:
            raise UsageError(f"horizon must be 1..{s} intervals, got {horizon}")
        if history.households != self.coefs.shape[0]:
            raise UsageError(
                f"fitted for {self.coefs.shape[0]} households, got {history.households}"
            )
        need = (PROFILE_DAYS + 1) * s
        if history.steps < need:
            raise InvalidInput(
                reason="history_too_short", subject="meter history", field="steps",
                expected=f">= {need} intervals ({PROFILE_DAYS + 1} days)", found=str(history.steps),
            )  # fmt: skip
        tail = history.window(history.end_s - need * history.step_s, history.end_s)
        series = self.model._series(tail, horizon)
        o = tail.steps
        t0 = o - s
        key = (tail.households, series.pv is None, series.ghi is None, tail.step_s,
               tail.start_s % tail.step_s, tail.utc_offset_s, series.holidays)  # fmt: skip
        prof = self._memo.window(series, t0=t0, end=o + horizon, key=key,
                                 start_s=tail.start_s + t0 * tail.step_s, step_s=tail.step_s)  # fmt: skip
        env = None if series.pv is None else prof[:, :s, PV_ENV]
        orig = _origin_features(series, prof[:, :s, MED7], env, t0, np.array([o], np.int64), s)
        x = _design(prof[:, s:], np.repeat(orig, horizon, axis=1), series.pv is not None)
        buckets = lead_buckets(history.step_s)[:horizon]
        values = np.einsum("nhf,nhqf->nhq", x, self.coefs[:, buckets])  # coefs (n, H, Q, F)
        mid = values[:, :, QUANTILES.index(0.5)][:, :, None]
        values = mid + self.band_scales[:, buckets, None] * (values - mid)
        return _make_forecast(history, values)
