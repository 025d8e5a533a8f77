"""Forecasters of a household's mean power for the next slots, as quantiles.

Rules of this module:

* One protocol: ``Forecaster.fit(history) -> FittedForecaster`` learns from a
  :class:`~forecasting.series.MeterHistory`; ``FittedForecaster.predict(history, horizon)`` forecasts
  the ``horizon`` intervals right after ``history.end_s`` (the forecast origin), using only
  ``history``. Fitting is the expensive part (refit daily or weekly); predicting is cheap and is what
  runs every slot. Both are pure: the same inputs give the same numbers, nothing reads a clock.
* Forecasts are :class:`QuantileForecast` arrays ``(households, horizon, quantiles)`` of mean power
  in W at the quantile levels :data:`QUANTILES` (P10, P50, P90), **non-decreasing** along the
  quantile axis (crossing quantiles are sorted, i.e. monotone rearrangement).
* Every model is vectorised over households (rows), and forecasts ``target``: the net surplus, or
  the PV or load component when the history has them (:class:`Target`).
* Horizons are at most one day (``steps_per_day`` intervals): models use same-time-yesterday lags.
* Uncertainty of point models (seasonal naive, AutoReg) comes from empirical quantiles of their own
  in-sample errors per local time of day. The seasonal naive P50 is the point forecast itself (the
  textbook baseline); AutoReg's P50 adds its median in-sample error at that time of day (a per-hour
  bias correction, worth about 5 points of skill on the real household); the quantile-regression model fits each quantile directly;
  the clear-sky PV model takes quantiles of recent clear-sky indices.
* :class:`MidnightBlend` (``day-ahead-blend``) is a forecast combination: another model from every
  origin; from local midnight the weighted average of its quantiles and the midnight quantile
  regression's, level by level, moved a fixed share toward the 7-day median.
* Prophet lives in :mod:`forecasting.prophet_model` (imported lazily: it is optional and slow).

Known limits: no weather forecast input (day-ahead PV skill is limited by clouds); holidays are not
modelled; the component model combines PV and load quantiles assuming independent errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from forecasting.series import FloatArray, MeterHistory
from forecasting.solar import clear_sky_ghi_w_m2
from market.errors import DataReason, InvalidInput, UsageError

__all__ = [
    "QUANTILES",
    "AutoRegForecaster",
    "ClearSkyPV",
    "ComponentForecaster",
    "FittedForecaster",
    "Forecaster",
    "MidnightBlend",
    "QuantileForecast",
    "QuantileRegression",
    "SeasonalNaive",
    "Target",
    "min_history_days",
]

#: Quantile levels every forecaster produces: P10, P50, P90.
QUANTILES: Final = (0.1, 0.5, 0.9)


class Target(Enum):
    """Which series a forecaster predicts."""

    NET = "net"
    PV = "pv"
    LOAD = "load"


def target_values(history: MeterHistory, target: Target) -> FloatArray:
    """The ``(households, steps)`` array of ``target`` in ``history``."""
    if target is Target.NET:
        return history.net_w
    values = history.pv_w if target is Target.PV else history.load_w
    if values is None:
        raise UsageError(f"target {target.value!r} needs a history with PV and load metered")
    return values


@dataclass(frozen=True, slots=True, eq=False)
class QuantileForecast:
    """Mean power (W) per household, interval and quantile level, from ``origin_s`` on."""

    origin_s: int
    step_s: int
    quantiles: tuple[float, ...]
    values_w: FloatArray  # (households, horizon, len(quantiles)), sorted along the last axis

    @property
    def horizon(self) -> int:
        return int(self.values_w.shape[1])

    def at(self, level: float) -> FloatArray:
        """``(households, horizon)`` forecast at quantile ``level`` (one of :attr:`quantiles`)."""
        try:
            k = self.quantiles.index(level)
        except ValueError:
            raise UsageError(f"no quantile {level} in {self.quantiles}") from None
        out: FloatArray = self.values_w[:, :, k]
        return out

    @property
    def median_w(self) -> FloatArray:
        return self.at(0.5)

    def interval_start_s(self, h: int) -> int:
        """Unix second at which forecast interval ``h`` (0-based) starts."""
        return self.origin_s + h * self.step_s


def _make_forecast(history: MeterHistory, values: FloatArray) -> QuantileForecast:
    values = np.sort(values, axis=2)
    values.setflags(write=False)
    return QuantileForecast(history.end_s, history.step_s, QUANTILES, values)


class FittedForecaster(Protocol):
    """A fitted model: forecasts the intervals right after a history ends."""

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast: ...


class Forecaster(Protocol):
    """A model family with its settings; ``fit`` learns per-household parameters."""

    @property
    def name(self) -> str: ...

    def fit(self, history: MeterHistory) -> FittedForecaster: ...


def _check_horizon(history: MeterHistory, horizon: int, need_steps: int) -> None:
    if not 1 <= horizon <= history.steps_per_day:
        raise UsageError(f"horizon must be 1..{history.steps_per_day} intervals, got {horizon}")
    if history.steps < need_steps:
        raise InvalidInput(
            reason="history_too_short",
            subject="meter history",
            field="steps",
            expected=f">= {need_steps} intervals",
            found=str(history.steps),
        )


def _targets(history: MeterHistory, horizon: int) -> npt.NDArray[np.int64]:
    """Indices (relative to ``history``) of the next ``horizon`` intervals."""
    return history.steps + np.arange(horizon, dtype=np.int64)


def _residual_quantiles_by_time(
    history: MeterHistory, residuals: FloatArray, first_index: int, *, median_offset: bool
) -> FloatArray:
    """``(households, steps_per_day, quantiles)`` empirical quantiles of ``residuals`` (columns
    starting at ``first_index`` of ``history``) grouped by local time of day."""
    s = history.steps_per_day
    tod = history.step_of_day(first_index + np.arange(residuals.shape[1]))
    out = np.zeros((residuals.shape[0], s, len(QUANTILES)))
    for k in range(s):
        cols = residuals[:, tod == k]
        if cols.shape[1]:
            out[:, k, :] = np.quantile(cols, QUANTILES, axis=1).T
    if not median_offset:
        out[:, :, QUANTILES.index(0.5)] = 0.0  # the P50 is the point forecast itself
    return out


# --------------------------------------------------------------------------- seasonal naive


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """Same time ``period_days`` ago; errors from the same rule over the last ``train_days``."""

    period_days: int = 1
    train_days: int = 56
    target: Target = Target.NET

    @property
    def name(self) -> str:
        return {1: "seasonal-naive-day", 7: "seasonal-naive-week"}.get(
            self.period_days, f"seasonal-naive-{self.period_days}d"
        )

    @property
    def min_history_days(self) -> int:
        """Whole days of history :meth:`fit` and ``predict`` need."""
        return self.period_days + 1

    def fit(self, history: MeterHistory) -> FittedSeasonalNaive:
        y = target_values(history, self.target)
        p = self.period_days * history.steps_per_day
        n = min(self.train_days * history.steps_per_day, y.shape[1] - p)
        if n <= 0:
            raise InvalidInput(
                reason="history_too_short", subject="meter history", field="steps",
                expected=f"> {p} intervals", found=str(y.shape[1]),
            )  # fmt: skip
        first = y.shape[1] - n
        residuals = y[:, first:] - y[:, first - p : y.shape[1] - p]
        tod = history.step_of_day(first + np.arange(residuals.shape[1]))
        return FittedSeasonalNaive(self, residuals, tod, history.steps_per_day)


@dataclass(frozen=True, slots=True, eq=False)
class FittedSeasonalNaive:
    """The in-sample errors; their quantiles per time of day are computed when a forecast first
    needs that time of day (a forecast of a few slots needs a few of the day's intervals, and
    fitting every slot is what the daemon and the simulation do). Same numbers as computing all."""

    model: SeasonalNaive
    residuals: FloatArray  # (households, n) in-sample errors
    tod: npt.NDArray[np.int64]  # local time-of-day index of each residual column
    steps_per_day: int
    _by_tod: dict[int, FloatArray] = field(default_factory=dict)

    def spread(self, k: int) -> FloatArray:
        """``(households, quantiles)`` error quantiles at time-of-day index ``k`` (P50 = 0)."""
        q = self._by_tod.get(k)
        if q is None:
            q = np.zeros((self.residuals.shape[0], len(QUANTILES)))
            cols = self.residuals[:, self.tod == k]
            if cols.shape[1]:
                q[:, :] = np.quantile(cols, QUANTILES, axis=1).T
            q[:, QUANTILES.index(0.5)] = 0.0  # the P50 is the point forecast itself
            self._by_tod[k] = q
        return q

    @property
    def residual_q(self) -> FloatArray:
        """``(households, steps_per_day, quantiles)``: every time of day's error quantiles."""
        return np.stack([self.spread(k) for k in range(self.steps_per_day)], axis=1)

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        p = self.model.period_days * history.steps_per_day
        _check_horizon(history, horizon, p)
        y = target_values(history, self.model.target)
        t = _targets(history, horizon)
        point = y[:, t - p]
        spread = np.stack([self.spread(int(k)) for k in history.step_of_day(t)], axis=1)
        return _make_forecast(history, point[:, :, None] + spread)


# --------------------------------------------------------------------------- quantile regression

_LAG_DAYS: Final = 28


def _qr_features(
    y: FloatArray, history: MeterHistory, origins: npt.NDArray[np.int64], horizon: int
) -> FloatArray:
    """Features ``(households, origins, horizon, F)`` for targets ``origin + h``.

    ``origin`` is the index of the first forecast interval (all data before it is known).
    """
    s = history.steps_per_day
    t = origins[:, None] + np.arange(horizon)[None, :]  # (N, H)
    lags = np.stack([y[:, t - s * j] for j in range(1, _LAG_DAYS + 1)], axis=-1)  # (n, N, H, 28)
    last = y[:, origins - 1]  # (n, N)
    day_idx = origins[:, None] - 1 - np.arange(s)[None, :]  # (N, s)
    last_day = y[:, day_idx].mean(axis=2)  # (n, N)
    n_h, n_o = y.shape[0], origins.shape[0]
    weekend = np.broadcast_to(history.is_weekend(t).astype(np.float64), (n_h, n_o, horizon))
    cols = [
        np.ones((n_h, n_o, horizon)),
        lags[..., 0],
        lags[..., 6],
        np.median(lags[..., :7], axis=-1),
        np.median(lags[..., :14], axis=-1),
        np.median(lags, axis=-1),
        lags.mean(axis=-1),
        np.broadcast_to(last[:, :, None], (n_h, n_o, horizon)),
        np.broadcast_to(last_day[:, :, None], (n_h, n_o, horizon)),
        weekend,
    ]
    return np.stack(cols, axis=-1)


def _irls_quantile(
    x: FloatArray, y: FloatArray, taus: FloatArray, *, iterations: int, ridge: float
) -> FloatArray:
    """Batched linear quantile regression by iteratively reweighted least squares.

    ``x`` is ``(B, N, F)``, ``y`` ``(B, N)``, ``taus`` ``(B,)``; returns coefficients ``(B, F)``.
    Features are scaled by their RMS for conditioning; ``ridge`` is relative to that scale.

    profile-qr's :class:`forecasting.profile_qr._QuantileFits` is the same regression computed
    another way (the levels share pair products, over-relaxed steps, dead features left out):
    the same numbers up to rounding (tested with this function as the oracle), not the same
    bits, so :class:`QuantileRegression` keeps this fit. Fitted by that class instead (ω = 1,
    the same iterations), its coefficients move by up to 3e-8 of the largest of their horizon
    step and level, its forecasts by up to 4e-6 W (shipped hourly data, 30 daily origins from
    November 2008), and the dead-feature rule drops its weekend flag (forecasts then differ by
    up to 1.6 kW).
    """
    scale = np.sqrt((x**2).mean(axis=1, keepdims=True)) + 1e-9  # (B, 1, F)
    xs = x / scale
    b, n, f = x.shape
    eye = ridge * np.eye(f)
    y_scale = np.abs(y).mean(axis=1, keepdims=True) + 1e-9
    floor = 1e-3 * y_scale
    w = np.ones_like(y)
    beta = np.zeros((b, f))
    # the iterations write into buffers allocated once (the same operations on the same
    # operands as allocating each product anew: the same numbers, ≈ 15 % less time)
    weighted = np.empty_like(xs)
    xtw = weighted.transpose(0, 2, 1)  # (B, F, N), contiguous along F: fast
    gram = np.empty((b, f, f))
    fitted = np.empty((b, n, 1))
    r = np.empty_like(y)
    level = taus[:, None]
    for _ in range(iterations):
        np.multiply(xs, w[:, :, None], out=weighted)
        np.matmul(xtw, xs, out=gram)
        gram += eye
        beta = np.linalg.solve(gram, (xtw @ y[:, :, None]))[:, :, 0]
        np.matmul(xs, beta[:, :, None], out=fitted)
        np.subtract(y, fitted[:, :, 0], out=r)
        w = _pinball_weights(r, level, floor)
    out: FloatArray = beta / scale[:, 0, :]
    return out


def _pinball_weights(
    r: FloatArray, taus: FloatArray, floor: FloatArray, *, out: FloatArray | None = None
) -> FloatArray:
    """IRLS weights of the pinball loss for residuals ``r``: τ / |r| above, (1 − τ) / |r| below
    (``|r|`` at least ``floor``; ``taus`` and ``floor`` broadcast against ``r``). ``out``: an
    array of ``r``'s shape to write them to (the same values; a loop saves the allocations),
    and then ``r`` is overwritten with the clipped sizes."""
    # the level of each residual picked by one ``where`` (a masked ``copyto`` over a broadcast
    # level costs about twice as much), then divided by the clipped size: the same numbers
    levels = np.where(r >= 0, taus, 1.0 - taus)
    if out is None:
        size = np.abs(r)
        np.maximum(size, floor, out=size)
        weights: FloatArray = np.divide(levels, size, out=levels)
        return weights
    size = np.abs(r, out=r)
    np.maximum(size, floor, out=size)
    np.divide(levels, size, out=out)
    return out


@dataclass(frozen=True, slots=True)
class QuantileRegression:
    """Direct linear quantile regression per horizon step and quantile level.

    Features (see :func:`_qr_features`): the value one day and one week before the target, medians
    of the same time over the last 7/14/28 days, their 28-day mean, the last observed value, the
    mean of the last day, and a weekend flag. One set of coefficients per forecast origin time of
    day in ``origin_steps_of_day`` (default: local midnight only, the backtest's daily origins);
    predicting from an origin at another time of day is refused. A daemon that re-forecasts every
    hour fits all of them (``tuple(range(24))`` for hourly steps; about 3.5 s per household here,
    so refit weekly). Trained on origins of the last ``train_days`` days.
    """

    horizon: int = 24
    train_days: int = 600
    origin_steps_of_day: tuple[int, ...] = (0,)
    iterations: int = 30
    ridge: float = 1e-3
    target: Target = Target.NET

    @property
    def name(self) -> str:
        return "quantile-regression"

    @property
    def min_history_days(self) -> int:
        """Whole days of history :meth:`fit` needs: 29 for the lags, 14 of training origins and
        the horizon's day."""
        return _LAG_DAYS + 1 + 14 + 1

    def fit(self, history: MeterHistory) -> FittedQuantileRegression:
        s = history.steps_per_day
        if not 1 <= self.horizon <= s:
            raise UsageError(f"horizon must be 1..{s} intervals, got {self.horizon}")
        y = target_values(history, self.target)
        first = _LAG_DAYS * s + s  # need 28 days of lags and one day of recent values
        last = history.steps - self.horizon  # the origin's targets must be inside the history
        if last - first < 14 * s:
            raise InvalidInput(
                reason="history_too_short", subject="meter history", field="steps",
                expected=f">= {first + 14 * s + self.horizon} intervals", found=str(history.steps),
            )  # fmt: skip
        first = max(first, last - self.train_days * s)
        candidates = np.arange(first, last + 1, dtype=np.int64)
        tod = history.step_of_day(candidates)
        taus = np.repeat(np.asarray(QUANTILES), self.horizon)  # (Q*H,)
        coefs = np.zeros(
            (y.shape[0], len(self.origin_steps_of_day), self.horizon, len(QUANTILES), 10)
        )
        for p, phase in enumerate(self.origin_steps_of_day):
            origins = candidates[tod == phase]
            t = origins[:, None] + np.arange(self.horizon)[None, :]
            for i in range(y.shape[0]):  # one household at a time keeps memory at ~MBs
                feats = _qr_features(y[i : i + 1], history, origins, self.horizon)[0]  # (N, H, F)
                x = np.tile(feats.transpose(1, 0, 2), (len(QUANTILES), 1, 1))  # (Q*H, N, F)
                yy = np.tile(y[i][t].T, (len(QUANTILES), 1))  # (Q*H, N)
                beta = _irls_quantile(x, yy, taus, iterations=self.iterations, ridge=self.ridge)
                coefs[i, p] = beta.reshape(len(QUANTILES), self.horizon, -1).transpose(1, 0, 2)
        coefs.setflags(write=False)
        return FittedQuantileRegression(self, coefs)


@dataclass(frozen=True, slots=True, eq=False)
class FittedQuantileRegression:
    model: QuantileRegression
    coefs: FloatArray  # (households, phases, horizon, quantiles, F)

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        s = history.steps_per_day
        _check_horizon(history, horizon, (_LAG_DAYS + 1) * s)
        if horizon > self.model.horizon:
            raise UsageError(f"fitted for horizon {self.model.horizon}, asked for {horizon}")
        if history.households != self.coefs.shape[0]:
            raise UsageError(
                f"fitted for {self.coefs.shape[0]} households, got {history.households}"
            )
        y = target_values(history, self.model.target)
        origin = np.array([history.steps], dtype=np.int64)
        feats = _qr_features(y, history, origin, horizon)[:, 0]  # (n, H, F)
        tod = int(history.step_of_day(history.steps))
        if tod not in self.model.origin_steps_of_day:
            raise UsageError(
                f"fitted for origins at steps {self.model.origin_steps_of_day} of the day, "
                f"asked to forecast from step {tod}; fit with that origin_steps_of_day"
            )
        p = self.model.origin_steps_of_day.index(tod)
        values = np.einsum("nhf,nhqf->nhq", feats, self.coefs[:, p, :horizon])
        return _make_forecast(history, values)


# --------------------------------------------------------------------------- AutoReg (statsmodels)


@dataclass(frozen=True, slots=True)
class AutoRegForecaster:
    """statsmodels ``AutoReg`` refitted at every origin on the last ``window_days``, lags 1, 2,
    one day and one week; quantiles from its in-sample residuals per time of day."""

    window_days: int = 56
    target: Target = Target.NET

    @property
    def name(self) -> str:
        return "autoreg"

    @property
    def min_history_days(self) -> int:
        return self.window_days

    def fit(self, history: MeterHistory) -> FittedAutoReg:
        return FittedAutoReg(self)


@dataclass(frozen=True, slots=True)
class FittedAutoReg:
    model: AutoRegForecaster

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        from statsmodels.tsa.ar_model import AutoReg  # noqa: PLC0415 - heavy, only this model needs it

        s = history.steps_per_day
        n = self.model.window_days * s
        _check_horizon(history, horizon, n)
        y = target_values(history, self.model.target)[:, -n:]
        lags = [1, 2, s, 7 * s]
        first = history.steps - n + 7 * s
        out = np.zeros((y.shape[0], horizon, len(QUANTILES)))
        t = _targets(history, horizon)
        for i in range(y.shape[0]):
            res = AutoReg(y[i], lags=lags, trend="c").fit()
            point = np.asarray(res.predict(start=n, end=n + horizon - 1, dynamic=True))
            resid = np.asarray(res.resid, dtype=np.float64)[None, :]
            rq = _residual_quantiles_by_time(history, resid, first, median_offset=True)
            out[i] = point[:, None] + rq[0, history.step_of_day(t)]
        return _make_forecast(history, out)


# --------------------------------------------------------------------------- clear-sky PV


@dataclass(frozen=True, slots=True)
class ClearSkyPV:
    """PV = clear-sky irradiance at the target time × quantiles of the clear-sky index (PV over
    clear-sky GHI) at the same time of day over the last ``days`` days. Zero at night; the daily
    shape follows the sun. Needs the site's ``latitude``/``longitude``; forecasts the PV component."""

    latitude: float
    longitude: float
    days: int = 14
    min_ghi_w_m2: float = 20.0

    @property
    def name(self) -> str:
        return "clear-sky-pv"

    @property
    def min_history_days(self) -> int:
        return self.days

    def fit(self, history: MeterHistory) -> FittedClearSkyPV:
        return FittedClearSkyPV(self)


@dataclass(frozen=True, slots=True)
class FittedClearSkyPV:
    model: ClearSkyPV

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        s = history.steps_per_day
        _check_horizon(history, horizon, self.model.days * s)
        pv = target_values(history, Target.PV)
        t = _targets(history, horizon)
        lag_idx = t[None, :] - s * np.arange(1, self.model.days + 1)[:, None]  # (days, H)
        ghi = self._ghi(history, np.concatenate([t, lag_idx.ravel()]))
        ghi_t, ghi_lag = ghi[:horizon], ghi[horizon:].reshape(lag_idx.shape)
        lit = ghi_lag > self.model.min_ghi_w_m2
        ratio = np.where(lit[None], pv[:, lag_idx] / np.where(lit, ghi_lag, 1.0)[None], np.nan)
        any_lit = np.asarray(lit.any(axis=0), dtype=np.bool_)  # (H,): some past day was lit
        ratio = np.where(any_lit[None, None, :], ratio, 0.0)
        q = np.nanquantile(ratio, QUANTILES, axis=1)  # (Q, n, H)
        values = np.clip(q.transpose(1, 2, 0), 0.0, None) * ghi_t[None, :, None]
        values = np.where(ghi_t[None, :, None] > 0, values, 0.0)
        return _make_forecast(history, values)

    def _ghi(self, history: MeterHistory, idx: npt.NDArray[np.int64]) -> FloatArray:
        mid = history.start_s + idx * history.step_s + history.step_s // 2
        return clear_sky_ghi_w_m2(mid, latitude=self.model.latitude, longitude=self.model.longitude)


# --------------------------------------------------------------------------- components


@dataclass(frozen=True, slots=True)
class ComponentForecaster:
    """Net surplus as PV forecast minus load forecast, for histories with both metered.

    P50 is ``pv50 - load50``; the other levels add the two components' distances from their
    medians in quadrature (independent errors): ``net_q = net50 ± hypot(pv_q - pv50, load_(1-q) -
    load50)``.
    """

    pv: Forecaster
    load: Forecaster
    label: str = field(default="components")

    @property
    def name(self) -> str:
        return self.label

    @property
    def min_history_days(self) -> int:
        return max(min_history_days(self.pv), min_history_days(self.load))

    def fit(self, history: MeterHistory) -> FittedComponents:
        if not history.has_components:
            raise UsageError("the component model needs a history with PV and load metered")
        return FittedComponents(self.pv.fit(history), self.load.fit(history))


@dataclass(frozen=True, slots=True)
class FittedComponents:
    pv: FittedForecaster
    load: FittedForecaster

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        pv = self.pv.predict(history, horizon).values_w
        load = self.load.predict(history, horizon).values_w
        mid = QUANTILES.index(0.5)
        net50 = pv[:, :, mid] - load[:, :, mid]
        out = np.zeros_like(pv)
        for k, q in enumerate(QUANTILES):
            mirror = QUANTILES.index(round(1.0 - q, 10))
            dist = np.hypot(pv[:, :, k] - pv[:, :, mid], load[:, :, mirror] - load[:, :, mid])
            out[:, :, k] = net50 + np.sign(q - 0.5) * dist
        return _make_forecast(history, out)


# --------------------------------------------------------------------------- day-ahead blend

#: The midnight model's share in :class:`MidnightBlend` (chosen on the tuning set).
MIDNIGHT_SHARE: Final = 0.3
#: How far :class:`MidnightBlend` moves its forecast toward the 7-day median (tuning set).
MEDIAN_SHARE: Final = 0.1


@dataclass(frozen=True, slots=True)
class MidnightBlend:
    """``anytime`` from every origin; from an origin the midnight model ``midnight`` was fitted
    for (local midnight, up to its horizon), a **forecast combination**: the weighted average of
    the two forecasts' quantiles, level by level (Vincentisation, a valid distribution; the bands
    stay as wide as the members'), ``midnight_share`` of the midnight model, then moved
    ``median_share`` of the way from its P50 to the median of the same time over the last 7 days
    (a shrinkage toward the robust profile; every level moves by the same amount).

    Two forecasters with different errors (one coefficient set per lead bucket fitted on every
    time of day, against one per target hour fitted at midnight) beat each alone day-ahead; the
    weights are fixed (learnt per household on held-out origins they were noisier and no better).
    A history too short for the midnight model (it needs
    :attr:`QuantileRegression.min_history_days`) gets ``anytime`` alone.
    """

    anytime: Forecaster
    midnight: QuantileRegression
    midnight_share: float = MIDNIGHT_SHARE
    median_share: float = MEDIAN_SHARE

    @property
    def name(self) -> str:
        return "day-ahead-blend"

    @property
    def min_history_days(self) -> int:
        return min_history_days(self.anytime)

    def fit(self, history: MeterHistory) -> FittedMidnightBlend:
        midnight: FittedForecaster | None
        try:
            midnight = self.midnight.fit(history)
        except InvalidInput as exc:
            if exc.reason is not DataReason.HISTORY_TOO_SHORT:
                raise
            midnight = None
        return FittedMidnightBlend(self, self.anytime.fit(history), midnight)


@dataclass(frozen=True, slots=True, eq=False)
class FittedMidnightBlend:
    model: MidnightBlend
    anytime: FittedForecaster
    midnight: FittedForecaster | None

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        fc = self.anytime.predict(history, horizon)
        m = self.model.midnight
        if (
            self.midnight is None
            or horizon > m.horizon
            or int(history.step_of_day(history.steps)) not in m.origin_steps_of_day
        ):
            return fc
        w = self.model.midnight_share
        values = (1.0 - w) * fc.values_w + w * self.midnight.predict(history, horizon).values_w
        s = history.steps_per_day
        t = _targets(history, horizon)
        y = target_values(history, m.target)
        med7 = np.median(y[:, t[None, :] - s * np.arange(1, 8)[:, None]], axis=1)  # (n, H)
        mid = values[:, :, QUANTILES.index(0.5)]
        values = values + (self.model.median_share * (med7 - mid))[:, :, None]
        return _make_forecast(history, values)


def min_history_days(model: Forecaster) -> int:
    """Whole days of history ``model`` needs before it can be fitted and forecast (its
    ``min_history_days`` property; 1 for a model that does not say)."""
    days = getattr(model, "min_history_days", 1)
    return int(days) if isinstance(days, int) else 1


def fit_all(models: Sequence[Forecaster], history: MeterHistory) -> dict[str, FittedForecaster]:
    """Fit several models on the same history, keyed by name."""
    return {m.name: m.fit(history) for m in models}
