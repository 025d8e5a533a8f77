"""The community forecaster that members train together in federated rounds, and its personal blend.

Rules of this module (all pure: no clock, no randomness, no I/O):

* **Model family: pooled linear quantile regression** (P10/P50/P90) on *short-lag, normalised*
  profile features, one coefficient set per lead bucket (the buckets of :mod:`forecasting.profile_qr`)
  and quantile level, shared by every member. Features of a target ``t = o + L`` from origin ``o``
  (all from data before ``o``; "the lag days": the :data:`LAG_DAYS` = 13 days before ``t``, or as
  many as the history holds, at least :data:`WEEK_DAYS`): the load a day and a week before, the
  median and mean of the same time over the lag days, the mean of the last 4 days of the same day
  type; yesterday's PV, the lag days' median clear-sky index × clear-sky GHI and their clear-sky
  envelope (pvlib's sun geometry when the site is known, else the PV's own maximum); at the origin
  the last hour's and the last day's departure from the median profile, the last interval's
  departure, and the envelope × the last hour's / day's clear-sky index. Every feature and the
  target are divided by the household's **scale** (its mean load over the 7 days before the
  origin, at least :data:`SCALE_FLOOR_W`), so a household of any size weighs the same and the
  intercept is in units of that scale. A net-only meter uses ``-net`` as its load and no PV
  (zeros). A household forecasts from :data:`MIN_FORECAST_DAYS` days of history and contributes
  from :data:`MIN_CONTRIBUTE_DAYS`; 13 lag days (:data:`FEATURE_VERSION` ``gn.fedqr.2``; 7 in
  ``gn.fedqr.1``) is what a two-week-old household has. A member's samples are its origins of the
  last :data:`TRAIN_DAYS` days (60: with daily rounds the model follows the season), and its update
  reads only those days and their look-back.
* **Why this family.** Its sufficient statistics sum *exactly*: for weights ``w`` the weighted
  normal equations ``Σ XᵀWX β = Σ XᵀWy`` over all members' samples give the same coefficients as
  one fit on everyone's pooled data. Quantile regression is solved by iteratively reweighted least
  squares (IRLS, weights ``τ / |r|`` or ``(1 − τ) / |r|``); a federated **round is one IRLS step
  warm-started from the last committed model** (the first round is least squares), so one secure
  sum per round and the model tracks the pooled quantile regression as rounds go on (the P50
  settles within a few rounds; the P10/P90 bands need more: after two IRLS rounds the P10–P90
  coverage measured in ``benchmarks/federated.py`` was only 27 %). Averaging members' own
  coefficients (FedAvg) was rejected: one member with near-zero PV or load fits wild coefficients
  and the average is ruined, while pooled statistics are robust to it (an argument from an earlier
  WIP measurement, not re-run in the benchmark).
* **Updates are integers.** A member's update (:func:`local_update`) is one vector of
  :data:`FRAC_BITS`-bit fixed-point int64: per bucket and quantile the upper triangle of ``XᵀWX``
  and ``XᵀWy``, per bucket the sample count, then the **held-back validation** of the previous
  model (:data:`VALIDATION_FIELDS`: on the samples whose target the history reads at or after
  ``since_s``, data that model never saw: count, absolute error of the P50, pinball losses,
  seasonal-naive error, P10–P90 coverage; all in scale units). Inputs are clipped
  (:data:`X_CLIP`, :data:`R_FLOOR`, at most :data:`MAX_ORIGINS` origins) so every entry is
  bounded and a sum over up to 2**20 members cannot overflow int64: secure aggregation sums the
  vectors mod 2**64 and the total is exact.
* **A model is its aggregate.** :class:`CommunityModel` is the exact summed vector plus the round,
  the step, the feature version, the previous model's hash and the number of contributors; its
  **content hash** (:attr:`CommunityModel.hash`) is the SHA-256 of that canonical encoding, so every
  member that received the sum derives the same hash bit for bit, while the coefficients (a ridge
  solve in float64) are derived from it locally.
* **Differential privacy** (optional): members pre-scale their statistics by powers of two
  (:func:`dp_scale`, from the previous committed model: public), the round clips and adds
  Gaussian noise, and the model records the sum's public noise (:class:`SumNoise`: its standard
  deviation and the scale exponents; a 9th content element, absent without DP). Its coefficients
  come from a **stable solve** (:func:`_solve_noisy`): each (bucket, quantile) noisy Gram has its
  eigenvalues raised to at least :data:`DP_NOISE_FLOOR` times the largest row norm of the noise's
  standard deviations (about twice its spectral norm), so an indefinite noisy Gram cannot return wild coefficients and noise-swamped directions shrink
  toward zero.
* **Personalisation, 1: a MAP correction** (:func:`personal_coefs`): each household refits the
  community's coefficients on its own last :data:`PERSONAL_DAYS` days with the community model as
  the prior — its own IRLS statistics (one :func:`local_update` at the community's coefficients)
  plus the community's summed statistics scaled to weigh :data:`PERSONAL_PRIOR_SAMPLES` samples —
  so a two-week-old household moves its coefficients only as far as its few days support. Local:
  nothing leaves the node, and the result is a function of the committed model and the household's
  own history.
* **Personalisation, 2: the blend** (:class:`FederatedForecaster`): each household blends the
  (corrected) community forecast with its own local model's (``local``: profile-qr, or the ``fallback`` while its history is too
  short for it) per lead bucket. The local model's odds are its error ratio on the household's own
  last :data:`BLEND_DAYS` days raised to :data:`BLEND_POWER`, times a **prior** for the amount of
  local evidence — ``h`` days of history against :data:`BLEND_PRIOR_DAYS` (``k``):
  ``odds = (e_c / e_l)^p · h / (h + k)``, ``w_local = odds / (1 + odds)``. A year-old household
  whose local model is better keeps most of its own forecast (prior ≈ 0.93); a two-week-old one,
  whose comparison rests on 6 days, needs its local model clearly better before it outweighs the
  community (prior 1/3 at ``k = 28``); while the ``fallback`` stands in for the local model the
  prior is ``h / (h + FALLBACK_PRIOR_DAYS)`` (0.14 at 14 days: a placeholder earns less trust); a
  community model far worse than the local one (a garbage round) gets little weight whatever the
  prior. The blend is per quantile level, re-sorted.
* **Personalisation, 3: a cold-start household's own profile at long leads** (``profile_days``,
  on by default; 0: off), while the ``fallback`` stands in for its local model: at leads of
  :data:`PROFILE_MIN_LEAD_S` (4 h) and more (:func:`profile_buckets`) the community side of the
  blend is itself a mix of the corrected community forecast and the household's own **median
  profile** (:func:`profile_forecast`: the P10/P50/P90 of its net at the same time of day over its
  last :data:`PROFILE_DAYS` days), per lead bucket with odds ``(e_c / e_p)^p`` from both
  forecasts' errors on the same origins of its own last days (no prior). The shorter leads — the
  slots a household bids with — keep the corrected community model: there the origin's
  departures make it far better than a profile (mixed in from the second lead bucket on, it made
  the in-process engine's cold-start households, who bid an hour ahead, 2 % worse). Forecast
  combination: the two err differently (the linear community model cannot reproduce a median of
  the net from its load and PV features; adding that median as a feature did not help), and a
  garbage community model leaves the community side to the profile. A household whose local
  model fits gets no profile (its profile-qr has it), so established households are unaffected.
  Each row's :class:`ModelRef` names the community model's hash, the local model and the
  community's weight (permille; the community model's share of the whole blend): what an
  order's provenance carries.

Known limits: no weather input (like profile-qr); the community model assumes households are alike
after normalisation (one neighbourhood; clusters of the 12-13 real homes did not help, fixed or
trained in rounds as IFCA with 2-3 models: ``docs/federated.md``); DST is not modelled; a DP model is not corrected (its sample counts are not
shared, and its noisy statistics would make a poor prior); the blend judges the corrected model on
days it was fitted on (optimistic for it).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from forecasting.models import (
    QUANTILES,
    FittedForecaster,
    Forecaster,
    QuantileForecast,
    SeasonalNaive,
    _make_forecast,
)
from forecasting.profile_qr import _day_type, _holiday_days, _ratio, _year, lead_buckets
from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory
from forecasting.solar import clear_sky_ghi_w_m2
from market.codec import pack, unpack
from market.errors import DataReason, InvalidInput, UsageError, WireReason

__all__ = [
    "BLEND_DAYS",
    "BLEND_POWER",
    "BLEND_PRIOR_DAYS",
    "DP_MAX_SHIFT",
    "DP_NOISE_FLOOR",
    "DP_UNIT",
    "FALLBACK_PRIOR_DAYS",
    "FEATURES",
    "FEATURE_VERSION",
    "FRAC_BITS",
    "LAG_DAYS",
    "MIN_CONTRIBUTE_DAYS",
    "MIN_FORECAST_DAYS",
    "PERSONAL_DAYS",
    "PERSONAL_PRIOR_SAMPLES",
    "PROFILE_DAYS",
    "PROFILE_MIN_LEAD_S",
    "VALIDATION_FIELDS",
    "WEEK_DAYS",
    "CommunityModel",
    "FederatedForecaster",
    "FittedFederated",
    "Layout",
    "ModelRef",
    "SumNoise",
    "Validation",
    "community_forecast",
    "decode_model",
    "dp_scale",
    "dp_total",
    "dp_unscale",
    "local_update",
    "personal_coefs",
    "pooled_model",
    "profile_buckets",
    "profile_forecast",
]

IntArray = npt.NDArray[np.int64]

#: names the features, their normalisation, the update layout and the IRLS rule: members with
#: another version do not mix (a new version starts again from least squares)
FEATURE_VERSION: Final = "gn.fedqr.2"
#: the profile features' lags: the last ``LAG_DAYS`` days before a target, or as many as the
#: history holds but at least ``WEEK_DAYS`` (gn.fedqr.1 used 7 days; 13 days, what a 14-day
#: household has, was chosen on the tuning homes: ``docs/federated.md``)
LAG_DAYS: Final = 13
WEEK_DAYS: Final = 7
#: days of history a household needs to be forecast (7 days of lags + the day before the origin)
MIN_FORECAST_DAYS: Final = WEEK_DAYS + 1
#: days of history a household needs to contribute (one origin whose every lead is known)
MIN_CONTRIBUTE_DAYS: Final = WEEK_DAYS + 2
#: regression columns: intercept, 5 load profile, 3 PV profile, 3 origin departures, 2 PV × index
FEATURES: Final = 14
#: fixed-point fractional bits of an update's entries
FRAC_BITS: Final = 16
#: every normalised feature and target is clipped to [-X_CLIP, X_CLIP]
X_CLIP: Final = 16.0
#: IRLS: a residual counts as at least this (scale units), so a weight is at most 0.9 / R_FLOOR
R_FLOOR: Final = 0.05
#: training origins per household at most (spread over the training window and times of day)
MAX_ORIGINS: Final = 2000
#: a member's samples are its origins of the last ``TRAIN_DAYS`` days: with daily rounds the
#: model follows the season (chosen on the tuning homes with rolling rounds, cold start day-ahead:
#: 365 days 574.5 W, 180 572.3 W, 90 572.0 W, 60 570.2 W; ``docs/federated.md``, "Measured")
TRAIN_DAYS: Final = 60
#: ridge on the pooled normal equations (scale units; a conditioning guard, not a prior)
RIDGE: Final = 1e-2
SCALE_FLOOR_W: Final = 50.0
#: the P10/P90 are widened about the P50 by this (set in the WIP module, not re-tuned since)
BAND_SCALE: Final = 1.1
BLEND_DAYS: Final = 14
BLEND_POWER: Final = 4.0
#: the local model's prior odds are ``h / (h + BLEND_PRIOR_DAYS)`` for ``h`` days of history (chosen
#: on the tuning homes 1, 3, 5, 8, 10: ``docs/federated.md``, "Personalisation")
BLEND_PRIOR_DAYS: Final = 28.0
#: ... and ``h / (h + FALLBACK_PRIOR_DAYS)`` while its history is too short for its own local model
#: (the ``fallback``, seasonal naive, stands in): a placeholder is trusted less than a fitted
#: model (chosen on the tuning homes with rolling rounds: ``docs/federated.md``, "Measured")
FALLBACK_PRIOR_DAYS: Final = 84.0
#: personalisation: a household corrects the community's coefficients on its own last
#: ``PERSONAL_DAYS`` days, the community model weighing as ``PERSONAL_PRIOR_SAMPLES`` of an average
#: member's samples (:func:`personal_coefs`; chosen on the tuning homes: ``docs/federated.md``)
PERSONAL_DAYS: Final = 28
#: the profile's days when a household on the fallback mixes its own median profile into the
#: community side of the blend (module rules, *Personalisation, 3*)
PROFILE_DAYS: Final = 14
#: ... at the lead buckets whose first interval starts at least this long after the history's
#: end (:func:`profile_buckets`): the slots a household bids with (the next hour or two) keep the
#: corrected community model. Chosen on the tuning homes (cold start, day-ahead, offline
#: emulation; mix from lead 1 h / 2 h / 3 h / 4 h / 6 h: 562.7 / 562.8 / 563.7 / 564.3 / 564.7 W,
#: none 568.7 W): 4 h, as far as the gain allows from the slots bid with (``docs/federated.md``)
PROFILE_MIN_LEAD_S: Final = 4 * 3600
PERSONAL_PRIOR_SAMPLES: Final = 80.0
VALIDATION_FIELDS: Final = (
    "count",
    "abs_error",
    "pinball_p10",
    "pinball_p50",
    "pinball_p90",
    "naive_abs_error",
    "covered",
)
#: under differential privacy a member scales its statistics entry by entry (:func:`dp_scale`) so
#: a typical member's entry is about this many update units before clipping and noise
DP_UNIT: Final = float(1 << 25)
#: :func:`dp_scale`'s factors are ``2**k`` for ``|k| <= DP_MAX_SHIFT``
DP_MAX_SHIFT: Final = 6
#: the noisy solve raises a Gram's eigenvalues to at least this times the largest row norm of its
#: noise's standard deviations (about twice the noise's expected spectral norm). Chosen on the
#: tuning homes 1, 3, 5, 8, 10 (cold start, day-ahead, community model alone, 14 daily rounds;
#: ``docs/federated.md``): 1: 633 W, 2: 608 W, 4: 595 W, 8: 592 W, 16: 591 W at 10,000 households
#: and ε = 2 over the rounds; but 2: 621 W, 8: 628 W, 16: 949 W (the model shrinks to nothing) at
#: 1,000 households and ε = 9.3
DP_NOISE_FLOOR: Final = 4.0
_TRI: Final = FEATURES * (FEATURES + 1) // 2
_BLOCK: Final = _TRI + FEATURES  # one (bucket, quantile): triu(XᵀWX) then XᵀWy
_MODEL_TAG: Final = "gn.fedmodel"
_MODEL_VERSION: Final = 1
#: the hash a first round names as its previous model
NO_MODEL: Final = bytes(32)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each statistic sits in an update vector for intervals of ``step_s``."""

    step_s: int

    @property
    def buckets(self) -> int:
        return int(lead_buckets(self.step_s).max()) + 1

    @property
    def stats_len(self) -> int:
        return self.buckets * len(QUANTILES) * _BLOCK

    @property
    def counts_at(self) -> int:
        return self.stats_len

    @property
    def validation_at(self) -> int:
        return self.stats_len + self.buckets

    @property
    def length(self) -> int:
        """Entries of one update (int64 each)."""
        return self.validation_at + len(VALIDATION_FIELDS)


# --------------------------------------------------------------------------- features


@dataclass(frozen=True, slots=True)
class _Series:
    load: FloatArray  # (n, T) load-like (the load, or -net for a net-only meter)
    pv: FloatArray  # (n, T) PV (zeros for a net-only meter)
    has_pv: bool
    ghi: FloatArray | None  # (T,) clear-sky GHI at interval midpoints, when the site is known
    day_type: IntArray  # (T,)
    day: IntArray  # (T,) local day of each interval, counted from the first interval's
    type_of_day: IntArray  # (days,) the day type of each local day (``day`` indexes it)


def _series(
    history: MeterHistory,
    extra: int,
    *,
    latitude: float | None,
    longitude: float | None,
    holiday_country: str | None,
    holiday_subdiv: str | None,
) -> _Series:
    """The history's series padded with ``extra`` future intervals (zeros)."""
    n = history.households
    if history.load_w is not None and history.pv_w is not None:
        load, pv, has_pv = history.load_w, history.pv_w, True
    else:
        load, pv, has_pv = -history.net_w, np.zeros_like(history.net_w), False
    total = history.steps + extra
    pad = np.zeros((n, extra))
    idx = np.arange(total, dtype=np.int64)
    ghi = None
    if has_pv and latitude is not None and longitude is not None:
        mid = history.start_s + idx * history.step_s + history.step_s // 2
        ghi = clear_sky_ghi_w_m2(mid, latitude=latitude, longitude=longitude)
    first = (history.start_s + history.utc_offset_s) // SECONDS_PER_DAY
    last = (history.start_s + total * history.step_s + history.utc_offset_s) // SECONDS_PER_DAY
    hol = _holiday_days(holiday_country, holiday_subdiv, range(_year(first), _year(last) + 1))
    day_type = _day_type(history, idx, hol)
    day = (history.start_s + idx * history.step_s + history.utc_offset_s) // SECONDS_PER_DAY - first
    type_of_day = np.zeros(int(day[-1]) + 1 if total else 0, dtype=np.int64)
    type_of_day[day] = day_type  # constant within a local day
    return _Series(
        load=np.concatenate([load, pad], axis=1),
        pv=np.concatenate([pv, pad], axis=1),
        has_pv=has_pv,
        ghi=ghi,
        day_type=day_type,
        day=day,
        type_of_day=type_of_day,
    )


def _profiles(series: _Series, t: IntArray, s: int) -> FloatArray:
    """``(n, len(t), 8)`` profile features of targets ``t`` (each needs :data:`WEEK_DAYS` days
    before it) over the last :data:`LAG_DAYS` days before each, or as many as there are."""
    days = np.minimum(t // s, LAG_DAYS)
    groups = np.unique(days)
    if len(groups) == 1:
        return _profiles_over(series, t, s, int(groups[0]))
    out = np.zeros((series.load.shape[0], len(t), 8))
    for d in groups:
        sel = days == d
        out[:, sel] = _profiles_over(series, t[sel], s, int(d))
    return out


def _profiles_over(series: _Series, t: IntArray, s: int, days: int) -> FloatArray:
    """:func:`_profiles` of targets ``t`` over their last ``days`` days."""
    back = np.arange(1, days + 1)
    idx = t[:, None] - s * back[None, :]  # (M, D)
    lags = series.load[:, idx]  # (n, M, D)
    # The same-day-type weights depend on the target's local day only (interval t - s*k lies k
    # days before t's): computed once per day, then spread over the day's targets.
    target_days, of_target = np.unique(series.day[t], return_inverse=True)
    kinds = series.type_of_day
    same = kinds[target_days[:, None] - back[None, :]] == kinds[target_days][:, None]
    rank = np.cumsum(same, axis=1)
    w_day = (same & (rank <= 4)).astype(np.float64)
    w_day /= np.maximum(w_day.sum(axis=1, keepdims=True), 1.0)
    w = w_day[of_target.reshape(-1)]
    pv_lags = series.pv[:, idx]
    n = lags.shape[0]
    if series.ghi is None:
        env = pv_lags.max(axis=-1)
        medians = _median(np.concatenate([lags, pv_lags]))
        med = medians[n:]
    else:
        lit = series.ghi > 20.0
        inverse = np.where(lit, 1.0 / np.where(lit, series.ghi, 1.0), 0.0)  # (T,): 0 unlit
        ratio = pv_lags * inverse[idx][None]
        env = ratio.max(axis=-1) * series.ghi[t][None]
        medians = _median(np.concatenate([lags, ratio]))
        med = medians[n:] * series.ghi[t][None]
    return np.stack(
        [
            lags[..., 0],
            lags[..., WEEK_DAYS - 1],
            medians[:n],
            lags.mean(axis=-1),
            np.einsum("nmd,md->nm", lags, w),
            pv_lags[..., 0],
            med,
            env,
        ],
        axis=-1,
    )


def _median(values: FloatArray) -> FloatArray:
    """The median over the last (short: the lag days) axis, ``np.median``'s value exactly: one
    sort of the short rows (2–4× faster than ``np.median``'s partition of many short rows)."""
    d = values.shape[-1]
    ranked = np.sort(values, axis=-1)
    out: FloatArray = 0.5 * (ranked[..., (d - 1) // 2] + ranked[..., d // 2])
    return out


_MED7: Final = 2
_ENV: Final = 7


def _all_profiles(series: _Series, s: int, first: int = 0) -> FloatArray:
    """``(n, T, 8)`` :func:`_profiles` of every interval from ``first`` with :data:`WEEK_DAYS`
    days before it (zeros before): computed once per series, so origins and targets share them."""
    total = series.load.shape[1]
    out = np.zeros((series.load.shape[0], total, 8))
    lo = max(first, WEEK_DAYS * s)
    # Targets are contiguous, so each look-back length (7 .. LAG_DAYS days: :func:`_profiles`'
    # groups) is one slice: no masks, no scatter.
    for days in range(WEEK_DAYS, LAG_DAYS + 1):
        a = max(lo, days * s)
        b = total if days == LAG_DAYS else min(total, (days + 1) * s)
        if a < b:
            out[:, a:b] = _profiles_over(series, np.arange(a, b, dtype=np.int64), s, days)
    return out


def _origins(
    series: _Series, o: IntArray, s: int, every: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(n, len(o), 5)`` origin features and ``(n, len(o))`` scales at origins ``o`` (each needs
    ``(WEEK_DAYS + 1)`` days before it): the last hour's, day's and interval's departure from the
    7-day median profile, the PV's clear-sky index over the last hour and day; the mean load of the
    last 7 days (at least :data:`SCALE_FLOOR_W`). ``every``: :func:`_all_profiles`. Window sums
    are differences of running sums (one pass over the series, whatever the origins)."""
    hour = max(1, 3600 * s // SECONDS_PER_DAY)
    resid = series.load - every[..., _MED7]

    def before(values: FloatArray, k: int) -> FloatArray:
        run = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
        out: FloatArray = run[:, o] - run[:, o - k]
        return out

    pv_day, env_day = before(series.pv, s), before(every[..., _ENV], s)
    k_day = _ratio(pv_day, env_day, 1.0)
    k_hour = _ratio(before(series.pv, hour), before(every[..., _ENV], hour), k_day)
    feats = np.stack(
        [before(resid, hour) / hour, before(resid, s) / s, resid[:, o - 1], k_hour, k_day],
        axis=-1,
    )
    scale = np.maximum(before(np.abs(series.load), WEEK_DAYS * s) / (WEEK_DAYS * s), SCALE_FLOOR_W)
    return feats, scale


def _design(prof: FloatArray, orig: FloatArray, scale: FloatArray) -> FloatArray:
    """``(n, M, FEATURES)`` normalised, clipped regression rows (targets' profiles ``prof``, their
    origins' features ``orig`` and scales ``scale``, all per row)."""
    env = prof[..., _ENV]
    cols = np.concatenate(
        [
            scale[..., None],
            prof,
            orig[..., :3],
            (env * orig[..., 3])[..., None],
            (env * orig[..., 4])[..., None],
        ],
        axis=-1,
    )
    out: FloatArray = np.clip(cols / scale[..., None], -X_CLIP, X_CLIP)
    return out


def _training_rows(
    history: MeterHistory, series: _Series, *, max_origins: int, train_days: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Training samples of every row: ``X (n, B, N, F)``, ``y (n, B, N)`` (normalised net) and
    each sample's **target** index ``(B, N)``: origins spread over the last ``train_days`` days
    (at most ``max_origins``, over every time of day), one lead of each bucket per origin,
    cycling."""
    s = history.steps_per_day
    first = MIN_FORECAST_DAYS * s
    last = history.steps - s  # every lead of the last origin is inside the history
    if last < first:
        raise InvalidInput(
            reason=DataReason.HISTORY_TOO_SHORT, subject="meter history", field="steps",
            expected=f">= {MIN_CONTRIBUTE_DAYS} days to contribute to a round",
            found=f"{history.steps / s:.1f} days",
        )  # fmt: skip
    first = max(first, last - train_days * s)
    stride = max(1, -(-(last + 1 - first) // max_origins))
    k = np.arange((last + 1 - first) // stride, dtype=np.int64)
    origins = first + k * stride + (k % stride)
    origins = origins[origins <= last]
    k = k[: len(origins)]
    buckets = lead_buckets(history.step_s)
    every = _all_profiles(series, s)
    orig, scale = _origins(series, origins, s, every)
    xs, ys, ts = [], [], []
    for b in range(int(buckets.max()) + 1):
        leads = np.flatnonzero(buckets == b)
        t = origins + leads[k % len(leads)]
        prof = every[:, t]
        xs.append(_design(prof, orig, scale))
        net = series.pv[:, t] - series.load[:, t]
        ys.append(np.clip(net / scale, -X_CLIP, X_CLIP))
        ts.append(t)
    return np.stack(xs, axis=1), np.stack(ys, axis=1), np.stack(ts)


# --------------------------------------------------------------------------- updates


def _fixed(values: FloatArray) -> IntArray:
    out: IntArray = np.rint(values * float(1 << FRAC_BITS)).astype(np.int64)
    return out


def _pinball(r: FloatArray, tau: float) -> FloatArray:
    out: FloatArray = np.maximum(tau * r, (tau - 1.0) * r)
    return out


def local_update(
    history: MeterHistory,
    *,
    previous: CommunityModel | None,
    since_s: int | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
    max_origins: int = MAX_ORIGINS,
    train_days: int = TRAIN_DAYS,
    rows_per_chunk: int = 1,
) -> IntArray:
    """Every row's update ``(households, Layout(step).length)`` int64 (module rules): the IRLS
    step's statistics with weights from ``previous`` (``None``, or another step or version: least
    squares), and ``previous``'s held-back validation on samples from origins at or after
    ``since_s`` (none without ``previous`` or ``since_s``). Rows are computed ``rows_per_chunk`` at
    a time; a row's update never depends on the others."""
    layout = Layout(history.step_s)
    usable = previous if previous is not None and previous.step_s == history.step_s else None
    # Only the last train_days days' origins are samples, and their features look back at most
    # LAG_DAYS + 1 days (an origin's departures use its last day's profiles, each over the LAG_DAYS
    # before it): the rest of the history cannot change the update (tested), so it is not read.
    keep = (train_days + LAG_DAYS + 2) * history.steps_per_day
    if history.steps > keep:
        history = history.window(history.end_s - keep * history.step_s, history.end_s)
    out = np.zeros((history.households, layout.length), dtype=np.int64)
    for lo in range(0, history.households, rows_per_chunk):
        rows = list(range(lo, min(lo + rows_per_chunk, history.households)))
        chunk = history.select(rows) if len(rows) != history.households else history
        out[lo : lo + len(rows)] = _update_rows(
            chunk,
            usable,
            since_s,
            layout,
            site=(latitude, longitude, holiday_country, holiday_subdiv),
            max_origins=max_origins,
            train_days=train_days,
        )
    return out


def _update_rows(
    history: MeterHistory,
    previous: CommunityModel | None,
    since_s: int | None,
    layout: Layout,
    *,
    site: tuple[float | None, float | None, str | None, str | None],
    max_origins: int,
    train_days: int,
) -> IntArray:
    lat, lon, country, subdiv = site
    series = _series(
        history, 0, latitude=lat, longitude=lon, holiday_country=country, holiday_subdiv=subdiv
    )
    x, y, targets = _training_rows(history, series, max_origins=max_origins, train_days=train_days)
    n, n_b, n_s, f = x.shape
    taus = np.asarray(QUANTILES)
    pred = None
    if previous is None:
        w = np.ones((n, n_b, len(taus), n_s))
    else:
        pred = np.einsum("nbsf,bqf->nbqs", x, previous.coefs)  # (n, B, Q, S)
        r = y[:, :, None, :] - pred
        w = np.where(r >= 0, taus[None, None, :, None], 1.0 - taus[None, None, :, None])
        w = w / np.maximum(np.abs(r), R_FLOOR)
    xt = np.ascontiguousarray(np.swapaxes(x, -1, -2))  # (n, B, F, S)
    xwt = xt[:, :, None] * w[:, :, :, None, :]  # (n, B, Q, F, S)
    gram = np.matmul(xwt, x[:, :, None])  # (n, B, Q, F, F), BLAS
    rhs = np.matmul(xwt, y[:, :, None, :, None])[..., 0]
    iu = np.triu_indices(f)
    stats = np.concatenate([gram[..., iu[0], iu[1]], rhs], axis=-1)  # (n, B, Q, _BLOCK)
    out = np.zeros((n, layout.length), dtype=np.int64)
    out[:, : layout.stats_len] = _fixed(stats.reshape(n, -1))
    out[:, layout.counts_at : layout.counts_at + n_b] = n_s << FRAC_BITS
    if pred is not None and since_s is not None:
        out[:, layout.validation_at :] = _held_back(x, y, targets, pred, since_s, history)
    return out


def _held_back(  # noqa: PLR0917 - the samples, the previous model's forecasts of them, the cut
    x: FloatArray,
    y: FloatArray,
    targets: IntArray,
    pred: FloatArray,
    since_s: int,
    history: MeterHistory,
) -> IntArray:
    """Each row's held-back validation (:data:`VALIDATION_FIELDS`, fixed point) of the previous
    model's forecasts ``pred (n, B, Q, S)`` of the samples whose **target** the history reads at
    or after ``since_s`` — the previous round's time: that model was fitted before those readings
    existed, so it never saw them (not as a target, not in a feature). A sample of lead ``L``
    qualifies from an origin ``L`` before ``since_s`` on: with daily rounds at hourly steps ≈ 71
    samples per member and round over the 9 buckets, the long leads most (before stop 31 only
    origins at or after ``since_s`` counted, and a sample needs its whole day ahead known: at
    most one origin per member and round — 9 samples —, often none). Zeros when no sample is
    held back."""
    n = x.shape[0]
    since = (since_s - history.start_s) // history.step_s
    held = targets >= since  # (B, S): the reading at index t is known once its interval ends
    if not held.any():
        return np.zeros((n, len(VALIDATION_FIELDS)), dtype=np.int64)
    b_i, s_i = np.nonzero(held)
    xv, yv = x[:, b_i, s_i], y[:, b_i, s_i]  # (n, H, F), (n, H)
    pv = np.moveaxis(pred[:, b_i, :, s_i], 0, 1)  # (n, H, Q)
    mid = pv[..., 1:2]
    pv = np.sort(mid + BAND_SCALE * (pv - mid), axis=-1)
    r = yv[..., None] - pv
    naive = xv[..., 6] - xv[..., 1]  # yesterday's PV − load, in scale units
    covered = (yv >= pv[..., 0]) & (yv <= pv[..., 2])
    values = [
        np.full(n, float(len(b_i))),
        np.abs(r[..., 1]).sum(axis=1),
        *(_pinball(r[..., q], tau).sum(axis=1) for q, tau in enumerate(QUANTILES)),
        np.abs(yv - naive).sum(axis=1),
        covered.sum(axis=1).astype(np.float64),
    ]
    return _fixed(np.stack(values, axis=-1))


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Validation:
    """The previous model's error on data it never saw, summed over the contributors (scale
    units: 1.0 is a household's mean load)."""

    samples: int
    mae: float  # mean |P50 − actual|
    pinball: float  # mean pinball loss over P10/P50/P90
    naive_mae: float  # seasonal naive (same time yesterday) on the same samples
    coverage: float  # share inside [P10, P90]

    @property
    def skill(self) -> float:
        """MAE skill against seasonal naive (0 when there were no samples)."""
        return 1.0 - self.mae / self.naive_mae if self.naive_mae > 0 else 0.0


def _unfixed(values: IntArray) -> FloatArray:
    out: FloatArray = values.astype(np.float64) / float(1 << FRAC_BITS)
    return out


@dataclass(frozen=True, slots=True)
class SumNoise:
    """The public noise of a differentially private round's sum (module rules, and
    ``docs/federated.md``, "Differential privacy"): every member multiplied statistic ``k`` by
    ``2**shifts[k]`` (:func:`dp_scale`) before clipping and noise, the sum carries Gaussian noise
    of standard deviation ``sigma`` in those scaled units, and the model's ``total`` is that sum
    divided back; so statistic ``k`` of ``total`` carries noise of ``sigma / 2**shifts[k]``. The
    sample counts and the held-back validation are not shared under DP (zeros)."""

    sigma: int
    shifts: tuple[
        int, ...
    ]  # one per statistic (Layout.stats_len), in [-DP_MAX_SHIFT, DP_MAX_SHIFT]

    def __post_init__(self) -> None:
        if self.sigma <= 0 or any(abs(k) > DP_MAX_SHIFT for k in self.shifts):
            raise UsageError(f"DP noise: sigma > 0 and shifts within ±{DP_MAX_SHIFT}")

    @classmethod
    def of(cls, sigma: float, scale: FloatArray, layout: Layout) -> SumNoise:
        """The noise of a sum with noise ``sigma`` (scaled units) of :func:`dp_scale` ``scale``."""
        shifts = np.rint(np.log2(scale[: layout.stats_len])).astype(np.int64)
        return cls(max(1, round(sigma)), tuple(int(k) for k in shifts))

    def std(self) -> FloatArray:
        """Each statistic's noise standard deviation in update units."""
        out: FloatArray = self.sigma * np.exp2(-np.asarray(self.shifts, dtype=np.float64))
        return out


@dataclass(frozen=True, slots=True, eq=False)
class CommunityModel:
    """A committed round's model: the exact summed update and what it was made from (module
    rules); ``coefs (buckets, quantiles, FEATURES)`` are derived from it."""

    round: int
    step_s: int
    previous: bytes  # the hash of the model whose weights the round used (NO_MODEL: none)
    contributors: int
    total: IntArray  # (Layout(step_s).length,) the exact sum of the contributors' updates
    coefs: FloatArray
    #: the public noise of a differentially private round's sum (``None``: no DP)
    noise: SumNoise | None = None

    @classmethod
    def of(
        cls,
        total: IntArray,
        *,
        round: int,
        step_s: int,
        previous: bytes,
        contributors: int,
        noise: SumNoise | None = None,
    ) -> CommunityModel:
        """The model of a round whose updates summed to ``total`` (``noise``: a DP round's)."""
        layout = Layout(step_s)
        total = np.asarray(total, dtype=np.int64)
        if total.shape != (layout.length,):
            raise UsageError(f"an update for {step_s}-s steps has {layout.length} entries")
        if len(previous) != 32:
            raise UsageError("previous must be a 32-byte model hash")
        if noise is not None and len(noise.shifts) != layout.stats_len:
            raise UsageError(f"a DP model's noise names {layout.stats_len} statistics")
        total = total.copy()
        total.setflags(write=False)
        coefs = _solve(total, layout) if noise is None else _solve_noisy(total, layout, noise)
        coefs.setflags(write=False)
        return cls(round, step_s, bytes(previous), contributors, total, coefs, noise)

    def content(self) -> bytes:
        """The canonical bytes the hash covers (what a member serves to one that missed the
        round): ``["gn.fedmodel", 1, version, step_s, round, previous, contributors, total]``, and
        for a DP round a 9th element ``[sigma, [shift…]]`` (:class:`SumNoise`); a model without DP
        has exactly the 8 elements it always had."""
        fields: list[object] = [
            _MODEL_TAG,
            _MODEL_VERSION,
            FEATURE_VERSION,
            self.step_s,
            self.round,
            self.previous,
            self.contributors,
            [int(v) for v in self.total],
        ]
        if self.noise is not None:
            fields.append([self.noise.sigma, list(self.noise.shifts)])
        return pack(fields)

    @property
    def hash(self) -> bytes:
        """The model's content hash: SHA-256 of :meth:`content`."""
        return hashlib.sha256(self.content()).digest()

    @property
    def samples(self) -> int:
        """Training samples summed over contributors and buckets."""
        layout = Layout(self.step_s)
        counts = self.total[layout.counts_at : layout.counts_at + layout.buckets]
        return int(counts.sum() >> FRAC_BITS)

    @property
    def validation(self) -> Validation:
        """The previous model's held-back error (zeros when nobody had any)."""
        layout = Layout(self.step_s)
        v = _unfixed(self.total[layout.validation_at :])
        count, abs_e, p10, p50, p90, naive, covered = (float(x) for x in v)
        if count <= 0:
            return Validation(0, 0.0, 0.0, 0.0, 0.0)
        return Validation(
            round(count),
            abs_e / count,
            (p10 + p50 + p90) / (3 * count),
            naive / count,
            covered / count,
        )


def _solve(total: IntArray, layout: Layout) -> FloatArray:
    stats = _unfixed(total[: layout.stats_len]).reshape(layout.buckets, len(QUANTILES), _BLOCK)
    gram = _gram(stats[..., :_TRI])
    rhs = stats[..., _TRI:]
    solved = np.linalg.solve(gram + RIDGE * np.eye(FEATURES), rhs[..., None])[..., 0]
    beta: FloatArray = np.asarray(solved, dtype=np.float64)
    return beta


def _gram(stats: FloatArray) -> FloatArray:
    """Symmetric ``(…, FEATURES, FEATURES)`` matrices from their upper triangles ``(…, _TRI)``."""
    iu = np.triu_indices(FEATURES)
    gram = np.zeros((*stats.shape[:-1], FEATURES, FEATURES))
    gram[..., iu[0], iu[1]] = stats
    gram += np.swapaxes(np.triu(gram, 1), -1, -2)
    return gram


def _solve_noisy(total: IntArray, layout: Layout, noise: SumNoise) -> FloatArray:
    """Coefficients of a DP round's noisy normal equations that stay bounded however large the
    noise (module rules): per (bucket, quantile) the noisy Gram ``G + E`` (``E`` symmetric with the
    public per-entry standard deviations ``s_ij`` of :class:`SumNoise`) has its eigenvalues raised
    to at least ``λ = DP_NOISE_FLOOR · max_i sqrt(Σ_j s_ij²)`` (``2 max_i …`` is about the
    expected spectral norm of ``E``) before the solve. Directions the noise swamps get eigenvalue
    ``λ`` (a ridge of the noise's size: they shrink toward zero), directions well above it are left
    as they are, and an indefinite noisy Gram (which made the plain ridge solve return wild
    coefficients) cannot occur: ``‖β‖ ≤ ‖b‖ / λ``."""
    shape = (layout.buckets, len(QUANTILES), _BLOCK)
    stats = _unfixed(total[: layout.stats_len]).reshape(shape)
    std = (noise.std() / (1 << FRAC_BITS)).reshape(shape)
    gram = _gram(stats[..., :_TRI])
    s_gram = _gram(std[..., :_TRI])
    floor = DP_NOISE_FLOOR * np.sqrt((s_gram**2).sum(axis=-1)).max(axis=-1) + RIDGE  # (B, Q)
    vals, vecs = np.linalg.eigh(gram)
    vals = np.maximum(vals, floor[..., None])
    rhs = stats[..., _TRI:]
    proj = np.einsum("bqfk,bqf->bqk", vecs, rhs) / vals
    beta: FloatArray = np.einsum("bqfk,bqk->bqf", vecs, proj)
    return beta


def dp_scale(previous: CommunityModel | None, step_s: int) -> FloatArray:
    """Per-entry factors by which a member multiplies its update before DP clipping and noise (the
    sum is divided by them afterwards): user-level DP adds the same noise to every entry, while a
    member's statistics span orders of magnitude, so unscaled the noise drowns all but the largest.
    Scaled so that the ``previous`` committed model's per-contributor mean of each statistic (public)
    is :data:`DP_UNIT` units (means under a thousandth of their RMS count as that), every statistic
    pays the noise alike. Factors are kept within [2⁻⁶, 2⁶]: a previous model that is mostly noise
    (a small community at a small ε) would otherwise shrink them round after round until the
    unscaled noise overflows. Factors are powers of two (the model records their exponents,
    :class:`SumNoise`). The sample counts and the held-back validation get 0: not shared
    under DP. Without a usable ``previous`` (the first round): 1 on every statistic."""
    layout = Layout(step_s)
    out = np.zeros(layout.length)
    if previous is None or previous.step_s != step_s or previous.contributors <= 0:
        out[: layout.stats_len] = 1.0
        return out
    mean = np.abs(previous.total[: layout.stats_len].astype(np.float64)) / previous.contributors
    floor = 1e-3 * float(np.sqrt(np.mean(mean**2))) + 1.0
    shift = np.clip(
        np.rint(np.log2(DP_UNIT / np.maximum(mean, floor))), -DP_MAX_SHIFT, DP_MAX_SHIFT
    )
    out[: layout.stats_len] = np.exp2(shift)
    return out


def dp_unscale(total: IntArray, scale: FloatArray) -> IntArray:
    """The noisy sum of :func:`dp_scale`-scaled updates in update units again (0 where unshared)."""
    kept = scale > 0
    out = np.zeros(total.shape, dtype=np.int64)
    out[kept] = np.rint(total[kept].astype(np.float64) / scale[kept]).astype(np.int64)
    return out


def dp_total(
    total: IntArray,
    previous: CommunityModel | None,
    step_s: int,
    *,
    sigma: float,
    contributors: int,
    threshold: int,
) -> tuple[IntArray, SumNoise]:
    """A DP round's summed total in update units again (:func:`dp_unscale` by the
    :func:`dp_scale` of ``previous``) and the public noise it carries: each of ``contributors``
    members added a share of ``N(0, sigma² / threshold)``, so the sum holds
    ``N(0, sigma² · contributors / threshold)`` (:class:`SumNoise`)."""
    scale = dp_scale(previous, step_s)
    spread = sigma * math.sqrt(contributors / threshold)
    return dp_unscale(total, scale), SumNoise.of(spread, scale, Layout(step_s))


def pooled_model(
    updates: IntArray, *, round: int, step_s: int, previous: CommunityModel | None
) -> CommunityModel:
    """The model of a round from its members' updates in the clear (rows of ``updates``): what
    secure aggregation computes without seeing them (tests and the local check)."""
    total = np.asarray(updates, dtype=np.int64).sum(axis=0, dtype=np.int64)
    return CommunityModel.of(
        total,
        round=round,
        step_s=step_s,
        previous=NO_MODEL if previous is None else previous.hash,
        contributors=int(np.asarray(updates).shape[0]),
    )


def decode_model(data: bytes) -> CommunityModel:
    """A model from :meth:`CommunityModel.content` (strict: tag, version, feature version,
    layout)."""
    value = unpack(data, what="community model", max_bytes=1 << 20)
    if not isinstance(value, list) or len(value) not in (8, 9):
        raise InvalidInput(reason=WireReason.BAD_SHAPE, subject="community model")
    tag, version, features, step_s, rnd, previous, contributors, total = value[:8]
    if tag != _MODEL_TAG or version != _MODEL_VERSION:
        raise InvalidInput(reason=WireReason.BAD_TAG, subject="community model", found=repr(tag))
    if features != FEATURE_VERSION:
        raise InvalidInput(
            reason=WireReason.BAD_VERSION, subject="community model", field="features",
            expected=FEATURE_VERSION, found=repr(features)[:40],
        )  # fmt: skip
    ints = (step_s, rnd, contributors)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not (
        isinstance(previous, bytes) and len(previous) == 32 and isinstance(total, list)
    ):
        raise InvalidInput(reason=WireReason.BAD_TYPE, subject="community model")
    if step_s <= 0 or SECONDS_PER_DAY % step_s or len(total) != Layout(step_s).length:
        raise InvalidInput(reason=WireReason.BAD_SHAPE, subject="community model", field="total")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in total):
        raise InvalidInput(reason=WireReason.BAD_TYPE, subject="community model", field="total")
    try:
        arr = np.asarray(total, dtype=np.int64)
    except OverflowError:
        raise InvalidInput(reason=WireReason.BAD_TYPE, subject="community model") from None
    noise = None if len(value) == 8 else _decode_noise(value[8], Layout(step_s))
    return CommunityModel.of(
        arr, round=rnd, step_s=step_s, previous=previous, contributors=contributors, noise=noise
    )


def _decode_noise(value: object, layout: Layout) -> SumNoise:
    bad = InvalidInput(reason=WireReason.BAD_SHAPE, subject="community model", field="noise")
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], list):
        raise bad
    sigma, shifts = value
    if len(shifts) != layout.stats_len or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (sigma, *shifts)
    ):
        raise bad
    try:
        return SumNoise(sigma, tuple(shifts))
    except UsageError:
        raise bad from None


def community_forecast(
    model: CommunityModel,
    history: MeterHistory,
    horizon: int,
    *,
    latitude: float | None = None,
    longitude: float | None = None,
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
) -> QuantileForecast:
    """The community model's forecast of the ``horizon`` intervals after ``history`` for every
    row (each needs :data:`MIN_FORECAST_DAYS` days)."""
    if history.step_s != model.step_s:
        raise UsageError(f"the model is for {model.step_s}-s steps, got {history.step_s}-s steps")
    site = (latitude, longitude, holiday_country, holiday_subdiv)
    return _forecast(model.coefs[None], history, horizon, site)


def _forecast(
    coefs: FloatArray,
    history: MeterHistory,
    horizon: int,
    site: tuple[float | None, float | None, str | None, str | None],
) -> QuantileForecast:
    """The forecast of coefficients ``coefs`` — ``(1 or n, buckets, quantiles, FEATURES)``: one
    set for every row, or each row its own — of the ``horizon`` intervals after ``history``."""
    s = history.steps_per_day
    if not 1 <= horizon <= s:
        raise UsageError(f"horizon must be 1..{s} intervals, got {horizon}")
    need = MIN_FORECAST_DAYS * s
    if history.steps < need:
        raise InvalidInput(
            reason=DataReason.HISTORY_TOO_SHORT, subject="meter history", field="steps",
            expected=f">= {need} intervals ({MIN_FORECAST_DAYS} days)", found=str(history.steps),
        )  # fmt: skip
    latitude, longitude, holiday_country, holiday_subdiv = site
    span = min(history.steps, (LAG_DAYS + 1) * s)  # every lag of the origin's last day
    tail = history.window(history.end_s - span * history.step_s, history.end_s)
    series = _series(
        tail,
        horizon,
        latitude=latitude,
        longitude=longitude,
        holiday_country=holiday_country,
        holiday_subdiv=holiday_subdiv,
    )
    o = np.array([tail.steps], dtype=np.int64)
    every = _all_profiles(series, s, tail.steps - s)  # the origin's features use its last day
    orig, scale = _origins(series, o, s, every)  # (n, 1, 5), (n, 1)
    t = tail.steps + np.arange(horizon, dtype=np.int64)
    prof = every[:, t]
    x = _design(prof, np.repeat(orig, horizon, axis=1), np.repeat(scale, horizon, axis=1))
    lead = coefs[:, lead_buckets(history.step_s)[:horizon]]  # (1 or n, H, Q, F)
    values = np.einsum("nhf,nhqf->nhq", x, np.broadcast_to(lead, (x.shape[0], *lead.shape[1:])))
    values = values * scale[:, :, None]
    mid = values[..., 1:2]
    return _make_forecast(history, mid + BAND_SCALE * (values - mid))


def personal_coefs(
    model: CommunityModel,
    history: MeterHistory,
    *,
    prior_samples: float = PERSONAL_PRIOR_SAMPLES,
    days: int = PERSONAL_DAYS,
    latitude: float | None = None,
    longitude: float | None = None,
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
) -> FloatArray:
    """Every row's own coefficients ``(n, buckets, quantiles, FEATURES)``: the community model
    corrected on the row's own last ``days`` days, with the community model as the prior (module
    rules, *Personalisation*). Per (bucket, quantile) the MAP estimate
    ``β = (G_h + a·G_c)⁻¹ (b_h + a·b_c)``: ``G_h, b_h`` the row's own IRLS statistics at the
    community's coefficients (:func:`local_update` of its recent history), ``G_c, b_c`` the
    community's summed statistics (whose solution is the community's ``β_c``) scaled by
    ``a = prior_samples / N_c`` (``N_c`` the community's samples in that bucket), so the prior
    weighs as much as ``prior_samples`` of an average member's samples whatever the community's
    size. A row too short to have a sample of its own (under :data:`MIN_CONTRIBUTE_DAYS` days), a
    model without sample counts (a DP round: the counts are not shared) or ``prior_samples = inf``:
    the community's coefficients unchanged."""
    if history.step_s != model.step_s:
        raise UsageError(f"the model is for {model.step_s}-s steps, got {history.step_s}-s steps")
    layout = Layout(model.step_s)
    n = history.households
    out: FloatArray = np.repeat(model.coefs[None], n, axis=0)
    counts = (
        model.total[layout.counts_at : layout.counts_at + layout.buckets] >> FRAC_BITS
    ).astype(np.float64)
    s = history.steps_per_day
    if (
        not math.isfinite(prior_samples)
        or history.steps < MIN_CONTRIBUTE_DAYS * s
        or np.any(counts <= 0)
    ):
        return out
    span = min(history.steps, (days + LAG_DAYS + 1) * s)  # the own samples' every lag
    recent = history.window(history.end_s - span * history.step_s, history.end_s)
    own = _unfixed(
        local_update(
            recent,
            previous=model,
            latitude=latitude,
            longitude=longitude,
            holiday_country=holiday_country,
            holiday_subdiv=holiday_subdiv,
            train_days=days,
            rows_per_chunk=n,
        )[:, : layout.stats_len]
    ).reshape(n, layout.buckets, len(QUANTILES), _BLOCK)
    com = _unfixed(model.total[: layout.stats_len]).reshape(layout.buckets, len(QUANTILES), _BLOCK)
    stats = own + (prior_samples / counts)[:, None, None] * com
    gram = _gram(stats[..., :_TRI]) + RIDGE * np.eye(FEATURES)
    solved = np.linalg.solve(gram, stats[..., _TRI:, None])[..., 0]
    out[:] = solved
    return out


def profile_buckets(step_s: int, min_lead_s: int = PROFILE_MIN_LEAD_S) -> npt.NDArray[np.bool_]:
    """Which lead buckets (:func:`forecasting.profile_qr.lead_buckets` at ``step_s``) a cold-start
    household mixes its own profile into: those whose first interval starts at least
    ``min_lead_s`` after the history's end (interval ``i`` of a forecast starts ``i · step_s``
    after it)."""
    if step_s <= 0 or min_lead_s < 0:
        raise UsageError(f"step_s must be > 0 and min_lead_s >= 0, got {step_s}, {min_lead_s}")
    buckets = lead_buckets(step_s)
    first = np.array([np.flatnonzero(buckets == b)[0] for b in range(int(buckets.max()) + 1)])
    out: npt.NDArray[np.bool_] = first * step_s >= min_lead_s
    return out


def profile_forecast(history: MeterHistory, horizon: int, days: int) -> QuantileForecast:
    """The household's own median profile: P10/P50/P90 of the net at the same time of day over
    the last ``days`` days (as many as the history holds, at least one)."""
    s = history.steps_per_day
    if not 1 <= horizon <= s or history.steps < s:
        raise UsageError(f"a profile needs a whole day and a horizon of 1..{s} intervals")
    t = history.steps + np.arange(horizon, dtype=np.int64)
    back = np.arange(1, min(days, history.steps // s) + 1, dtype=np.int64)
    same = history.net_w[:, t[:, None] - s * back[None, :]]  # (n, H, D)
    return _make_forecast(history, np.moveaxis(np.quantile(same, QUANTILES, axis=-1), 0, -1))


# --------------------------------------------------------------------------- personalisation


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model version made a row's forecast: the committed community model (``None``: a
    local model alone), the local model's name and the community's weight in the blend (‰)."""

    community: bytes | None
    local: str
    community_permille: int


#: the local model of a household whose history is too short for its own local model
_FALLBACK: Final = SeasonalNaive(period_days=1, train_days=28)


@dataclass(frozen=True, slots=True)
class FederatedForecaster:
    """The personalised forecaster: ``community`` blended with the household's ``local`` model
    (``fallback`` while its history is too short for ``local``), module rules. Without a
    community model it is the local model alone."""

    community: CommunityModel | None
    local: Forecaster
    fallback: Forecaster = _FALLBACK
    latitude: float | None = None
    longitude: float | None = None
    holiday_country: str | None = None
    holiday_subdiv: str | None = None
    blend_days: int = BLEND_DAYS
    blend_power: float = BLEND_POWER
    blend_prior_days: float = BLEND_PRIOR_DAYS
    fallback_prior_days: float = FALLBACK_PRIOR_DAYS
    personal_prior_samples: float = PERSONAL_PRIOR_SAMPLES
    personal_days: int = PERSONAL_DAYS
    #: days of the cold-start profile mix (*Personalisation, 3*); 0: off
    profile_days: int = PROFILE_DAYS
    #: the mix applies from this lead on (:func:`profile_buckets`)
    profile_min_lead_s: int = PROFILE_MIN_LEAD_S

    def __post_init__(self) -> None:
        if self.profile_days < 0:
            raise UsageError(
                f"federated profile_days must be >= 0 (0: off), got {self.profile_days}"
            )
        if self.profile_min_lead_s < 0:
            raise UsageError(
                f"federated profile_min_lead_s must be >= 0, got {self.profile_min_lead_s}"
            )

    @property
    def name(self) -> str:
        return "federated"

    @property
    def min_history_days(self) -> int:
        return MIN_FORECAST_DAYS

    def _site(self) -> tuple[float | None, float | None, str | None, str | None]:
        return (self.latitude, self.longitude, self.holiday_country, self.holiday_subdiv)

    def fit(self, history: MeterHistory) -> FittedFederated:
        local_model = self.local
        try:
            local = local_model.fit(history)
        except InvalidInput as exc:
            if exc.reason is not DataReason.HISTORY_TOO_SHORT:
                raise
            local_model = self.fallback
            local = local_model.fit(history)
        n = history.households
        n_b = Layout(history.step_s).buckets
        weights = np.ones((n, n_b))
        community = self.community
        if community is not None and community.step_s != history.step_s:
            community = None
        coefs = None
        if community is not None:
            latitude, longitude, country, subdiv = self._site()
            coefs = personal_coefs(
                community, history, prior_samples=self.personal_prior_samples,
                days=self.personal_days, latitude=latitude, longitude=longitude,
                holiday_country=country, holiday_subdiv=subdiv,
            )  # fmt: skip
            on_fallback = local_model is self.fallback
            k = self.fallback_prior_days if on_fallback else self.blend_prior_days
            mix = on_fallback and self.profile_days > 0
            weights, profile = self._weights(history, coefs, local, k, mix)
        else:
            profile = np.zeros((n, n_b))
        refs = tuple(
            ModelRef(
                None if community is None else community.hash,
                local_model.name,
                round(1000 * float(np.mean((1.0 - w) * (1.0 - p)))),
            )
            for w, p in zip(weights, profile, strict=True)
        )
        return FittedFederated(self, community, coefs, local, weights, profile, refs)

    def _weights(
        self,
        history: MeterHistory,
        coefs: FloatArray,
        local: FittedForecaster,
        prior_days: float,
        with_profile: bool,
    ) -> tuple[FloatArray, FloatArray]:
        """``(n, buckets)`` local weights from both models' errors on the last ``blend_days``, the
        local model's prior odds ``h / (h + prior_days)``; and (``with_profile``, else zeros) the
        weights of the household's median profile against the corrected community model on the
        community side, from their errors on the same origins (``(e_c / e_p)^p`` odds, no
        prior)."""
        s = history.steps_per_day
        buckets = lead_buckets(history.step_s)
        n_b = int(buckets.max()) + 1
        first = max(MIN_FORECAST_DAYS * s, history.steps - self.blend_days * s)
        origins = list(range(first, history.steps - 1, max(1, s // 8)))
        err_c = np.zeros((history.households, n_b))
        err_l = np.zeros((history.households, n_b))
        err_p = np.zeros((history.households, n_b))
        hits = np.zeros(n_b)
        for o in origins:
            horizon = min(s, history.steps - o)
            past = history.window(history.start_s, history.start_s + o * history.step_s)
            try:
                fl = local.predict(past, horizon).median_w
            except InvalidInput:
                continue
            fc = _forecast(coefs, past, horizon, self._site()).median_w
            fp = fc
            if with_profile:
                fp = profile_forecast(past, horizon, self.profile_days).median_w
            actual = history.net_w[:, o : o + horizon]
            for b in range(n_b):
                lead = np.flatnonzero(buckets[:horizon] == b)
                if len(lead):
                    err_c[:, b] += np.abs(fc[:, lead] - actual[:, lead]).mean(axis=1)
                    err_l[:, b] += np.abs(fl[:, lead] - actual[:, lead]).mean(axis=1)
                    err_p[:, b] += np.abs(fp[:, lead] - actual[:, lead]).mean(axis=1)
                    hits[b] += 1
        p = self.blend_power
        days = history.steps / s
        prior = days / (days + prior_days)  # the local model's prior odds
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # odds e_c^p / e_l^p × prior, as a weight; overflow-safe
            w = 1.0 / (1.0 + (err_l / err_c) ** p / prior)
            wp = 1.0 / (1.0 + (err_p / err_c) ** p)
        w = np.where(hits[None, :] > 0, np.nan_to_num(w, nan=prior / (1.0 + prior)), 0.0)
        out: FloatArray = w  # no evidence: the community
        # equal (or no) errors: half each; no evidence or no profile: the community model alone
        wp = np.where(hits[None, :] > 0, np.nan_to_num(wp, nan=0.5), 0.0)
        # The short leads (the next hours: what the household bids with) keep the community side
        # as it was: there the origin's departures make the corrected model far better than any
        # profile; the mix cost next-hour accuracy (tuning homes: 467.9 → 469.5 W) and, at a lead
        # of an hour, the in-process engine's cold-start bids (2.1 %).
        wp[:, ~profile_buckets(history.step_s, self.profile_min_lead_s)] = 0.0
        return out, wp if with_profile else np.zeros_like(out)


@dataclass(frozen=True, slots=True, eq=False)
class FittedFederated:
    """A fitted personalised forecaster: each row's local weights per lead bucket and its
    :class:`ModelRef` (``refs``, one per row)."""

    model: FederatedForecaster
    community: CommunityModel | None
    #: ``(n, buckets, quantiles, FEATURES)`` each row's personal coefficients (no community: None)
    coefs: FloatArray | None
    local: FittedForecaster
    weights: FloatArray  # (n, buckets): the local model's weight
    #: ``(n, buckets)`` the weight of the household's own median profile on the community side
    #: (zeros unless the local model is the fallback)
    profile: FloatArray
    refs: tuple[ModelRef, ...]

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        fl = self.local.predict(history, horizon)
        if self.coefs is None:
            return fl
        if history.households != self.weights.shape[0]:
            raise UsageError(
                f"fitted for {self.weights.shape[0]} households, got {history.households}"
            )
        buckets = lead_buckets(history.step_s)[:horizon]
        side = _forecast(self.coefs, history, horizon, self.model._site()).values_w
        wp = self.profile[:, buckets][:, :, None]
        if np.any(wp > 0):  # not when every lead asked is short (the slots a household bids)
            fp = profile_forecast(history, horizon, self.model.profile_days).values_w
            side = wp * fp + (1.0 - wp) * side
        w = self.weights[:, buckets][:, :, None]
        return _make_forecast(history, w * fl.values_w + (1.0 - w) * side)
