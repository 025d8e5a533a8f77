"""A household's forecast of the slots it quotes: one forecaster for one household or a community.

Pure: no clock, no I/O; the same history and ``now_s`` give the same quantiles. Rules of this module:

* :class:`SlotForecaster` wraps one model (a :class:`forecasting.models.Forecaster`). Its
  :meth:`~SlotForecaster.forecast` takes a :class:`~forecasting.series.MeterHistory` of one or
  more households (rows) that ends at or before ``now_s`` (what was known then) and returns one
  :class:`SlotForecast` per row, in row order. The daemon passes its one household; the in-process
  engine passes its whole community's matrix, so the model is fitted and predicted **once** for all
  rows (vectorised), and each household's agent consumes its own row.
* **Fitting off the slot's hot path, on a schedule of the community clock**: the model is fitted
  once per period of ``refit_every_s`` (:data:`REFIT_EVERY_S`: a day; periods are aligned to
  multiples of it in unix time) on the history *before the period started* — at most
  :data:`HISTORY_DAYS` days of it — and again whenever the number of rows changes. So a fit is a
  function of the period and the meter data alone, never of when a driver started: a daemon and
  the in-process engine fit alike, provided they pass :attr:`~SlotForecaster.history_days` of
  history (or all there is). Each call then only predicts, from the history passed in (a fit
  from midnight forecasts from this hour's meter data). ``refit_every_s = 0`` fits at every call
  on the history up to ``now_s``.
* **Many rows** are fitted :data:`FIT_ROWS` at a time (a year of history for a thousand households
  at once would need gigabytes); rows never share parameters, so the forecasts are the same. The
  blocks are fitted by a :data:`BlockFitter`: :func:`fit_inline` (in order, on the caller's thread)
  unless the driver passes another — the in-process engine fits them in worker processes
  (``sims.fitpool``); a fit is a pure function of the model and the block, so the results are
  the same. :meth:`SlotForecaster.fit_window` says which history a period's fit sees, so a
  driver can fit the next period ahead. profile-qr's fitted blocks are then stacked into one
  fitted model (its coefficients are per row and its prediction vectorised over rows), so a
  community is *predicted* in one call, not one per block (bit for bit the same numbers, tested;
  other models predict block by block).
* **Too little history**: when the model cannot be fitted yet, or cannot predict from the
  history passed (``history_too_short``: profile-qr needs 30 days, the federated blend's community
  model 8), the ``fallback`` (seasonal naive: same time yesterday, needs 2 days) is fitted
  instead — on the history up to ``now_s``, at every call, until the model can be fitted.
* **Plausible**: every forecast is clipped, row by row, to the range of net power the household's
  meter showed in the last :data:`PLAUSIBLE_DAYS` days of the history passed in. A model that
  extrapolates wildly (a PV system that produced next to nothing all year and comes back to life
  makes profile-qr's PV coefficients, fitted on near-zero features, forecast tens of kWh an hour)
  cannot make a household bid for or offer more than its meter has ever moved in a month.
* **Slot quantiles**: each requested slot takes the forecast mean power of the interval that
  contains its start, times the slot length (:func:`forecasting.policy.slot_quantiles`, all rows
  at once), as integer Wh at P10 ≤ P50 ≤ P90. A slot whose gate is closed at ``now_s`` or that
  starts more than a day (the models' longest horizon) after the history ends is left out.
* :func:`bidding_forecaster` is what both drivers bid with: the registry's
  :data:`~forecasting.registry.DEFAULT_MODEL` (profile-qr) unless a scenario or the daemon's
  config names another, told the site (:class:`Site`: coordinates for clear-sky PV, the country
  of the public holidays) when known.
* :func:`federated_forecaster` is what both drivers bid with under **federated training**
  (``docs/federated.md``): :class:`forecasting.federated.FederatedForecaster` — the community
  model of the last committed round blended with the same local model :func:`bidding_forecaster`
  would use — in the same :class:`SlotForecaster` (its refit schedule, fallback and clipping).
  Without a community model, or while the history is shorter than the community model needs
  (:data:`forecasting.federated.MIN_FORECAST_DAYS`), it is exactly the local forecaster. A new
  community model means a new forecaster (the blend weights depend on it): the driver builds one
  per committed model.
* :func:`foresight` is the *perfect-foresight* policy's forecast: every quantile of a slot is the
  net the meter will measure in it (only a simulation or a replay meter knows it).
* Every :class:`SlotForecast` names the model that produced it (``model``: ``profile-qr``, the
  fallback's ``seasonal-naive-day``, ``perfect-foresight``). Orders placed from it are traced to
  it through the agent's :class:`~gridnode.household.agent.Quote`.

Known limit: by default a fit runs on the caller's thread at the first boundary of a period
(profile-qr: ≈ 0.07–0.1 s per household with a year of 15-minute history; the in-process engine fits its whole community at once,
in worker processes and a period ahead on long runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

import numpy as np

from forecasting.models import FittedForecaster, Forecaster, QuantileForecast, SeasonalNaive
from forecasting.policy import SlotQuantiles, slot_quantiles
from forecasting.profile_qr import FittedProfileQR
from forecasting.registry import DEFAULT_MODEL, build_model
from forecasting.series import FloatArray, MeterHistory
from market.errors import InvalidInput, UsageError
from market.slots import SlotClock

if TYPE_CHECKING:  # federated training's code: imported by a household that trains so
    from forecasting.federated import CommunityModel

__all__ = [
    "FIT_ROWS",
    "FORESIGHT_MODEL",
    "HISTORY_DAYS",
    "PLAUSIBLE_DAYS",
    "REFIT_EVERY_S",
    "BlockFitter",
    "RecentRange",
    "Site",
    "SlotForecast",
    "SlotForecaster",
    "bidding_forecaster",
    "federated_forecaster",
    "fit_inline",
    "foresight",
    "recent_range",
    "row_blocks",
]

#: the model name of :func:`foresight`'s forecasts
FORESIGHT_MODEL = "perfect-foresight"
#: the forecaster is refitted once a day (at 00:00 UTC), on the history before that
REFIT_EVERY_S: Final = 86_400
#: days of meter history a fit uses at most (profile-qr fits from 30 days and was measured with a
#: year: its training window)
HISTORY_DAYS: Final = 365
#: rows fitted in one call of the model
FIT_ROWS: Final = 32
#: a forecast stays within the net power the meter showed in this many days
PLAUSIBLE_DAYS: Final = 28

#: fits ``model`` on each of the blocks (histories of at most :data:`FIT_ROWS` rows), in order
BlockFitter = Callable[[Forecaster, Sequence[MeterHistory]], Sequence[FittedForecaster]]


def fit_inline(model: Forecaster, blocks: Sequence[MeterHistory]) -> list[FittedForecaster]:
    """The default :data:`BlockFitter`: each block fitted in turn on the caller's thread."""
    return [model.fit(block) for block in blocks]


@dataclass(frozen=True, slots=True)
class Site:
    """Where the household is, for the forecaster: coordinates (clear-sky PV) and the public
    holidays' country (and subdivision), each ``None`` when not known."""

    latitude: float | None = None
    longitude: float | None = None
    holiday_country: str | None = None
    holiday_subdiv: str | None = None

    def __post_init__(self) -> None:
        if (self.latitude is None) != (self.longitude is None):
            raise UsageError("a site needs both latitude and longitude, or neither")
        if self.latitude is not None and not -90.0 <= self.latitude <= 90.0:
            raise UsageError(f"latitude must lie in [-90, 90], got {self.latitude}")
        if self.longitude is not None and not -180.0 <= self.longitude <= 180.0:
            raise UsageError(f"longitude must lie in [-180, 180], got {self.longitude}")


@dataclass(frozen=True, slots=True)
class SlotForecast:
    """One household's forecast net surplus of the slots it asked for, and which model made it."""

    model: str
    quantiles: tuple[SlotQuantiles, ...]  # ascending slots


def foresight(actual_wh: Iterable[tuple[int, int | None]]) -> SlotForecast:
    """Perfect foresight of ``(slot, net Wh the meter will read)`` pairs: every quantile is the
    actual net; a slot without a reading (``None``) is left out."""
    return SlotForecast(
        FORESIGHT_MODEL,
        tuple(SlotQuantiles(s, wh, wh, wh) for s, wh in actual_wh if wh is not None),
    )


def bidding_forecaster(
    model: str = DEFAULT_MODEL,
    *,
    site: Site = Site(),
    refit_every_s: int = REFIT_EVERY_S,
    fit_blocks: BlockFitter = fit_inline,
) -> SlotForecaster:
    """The forecaster households bid with (module rules): the registry's model ``model`` for the
    household's ``site``, refitted every ``refit_every_s``, seasonal naive while history is short."""
    return SlotForecaster(
        build_model(
            model,
            latitude=site.latitude,
            longitude=site.longitude,
            holiday_country=site.holiday_country,
            holiday_subdiv=site.holiday_subdiv,
        ),
        refit_every_s=refit_every_s,
        fallback=SeasonalNaive(period_days=1, train_days=28),
        fit_blocks=fit_blocks,
    )


def federated_forecaster(
    community: CommunityModel | None,
    model: str = DEFAULT_MODEL,
    *,
    site: Site = Site(),
    refit_every_s: int = REFIT_EVERY_S,
    fit_blocks: BlockFitter = fit_inline,
) -> SlotForecaster:
    """The forecaster households bid with under federated training (module rules): ``community``
    blended with the local model ``model`` (the registry's, for the ``site``), refitted every
    ``refit_every_s``; ``community=None`` is :func:`bidding_forecaster`'s model."""
    if community is None:
        return bidding_forecaster(
            model, site=site, refit_every_s=refit_every_s, fit_blocks=fit_blocks
        )
    from forecasting.federated import FederatedForecaster  # noqa: PLC0415 - federated only

    local = build_model(
        model,
        latitude=site.latitude,
        longitude=site.longitude,
        holiday_country=site.holiday_country,
        holiday_subdiv=site.holiday_subdiv,
    )
    blended = FederatedForecaster(
        community,
        local,
        latitude=site.latitude,
        longitude=site.longitude,
        holiday_country=site.holiday_country,
        holiday_subdiv=site.holiday_subdiv,
    )
    return SlotForecaster(
        blended,
        refit_every_s=refit_every_s,
        fallback=SeasonalNaive(period_days=1, train_days=28),
        fit_blocks=fit_blocks,
    )


class SlotForecaster:
    """One model, fitted on a history of one or many households (see the module rules)."""

    def __init__(
        self,
        model: Forecaster,
        *,
        refit_every_s: int = REFIT_EVERY_S,
        fit_days: int = HISTORY_DAYS,
        fallback: Forecaster | None = None,
        fit_blocks: BlockFitter = fit_inline,
    ) -> None:
        if refit_every_s < 0:
            raise UsageError(f"refit_every_s must be >= 0, got {refit_every_s}")
        if fit_days < 1:
            raise UsageError(f"fit_days must be >= 1, got {fit_days}")
        self.model = model
        self.refit_every_s = refit_every_s
        self.fit_days = fit_days
        self.fallback = fallback
        self.fit_blocks = fit_blocks
        self._fitted: FittedForecaster | None = None
        self._fitted_name = model.name
        self._period: int | None = None  # the period the model was fitted in; None: the fallback
        self._rows = 0
        self.fits = 0  # how many fits it made (the model's and the fallback's)
        self._recent = RecentRange()  # the Plausible rule's bounds, by whole days cached

    @property
    def name(self) -> str:
        """The model whose forecasts come out now (the fallback's while the model cannot fit)."""
        return self._fitted_name

    @property
    def history_days(self) -> int:
        """Days of history a driver passes so that every fit sees all of its ``fit_days`` (the
        period may have started up to ``refit_every_s`` ago): then a fit depends on the period
        and the meter data alone."""
        return self.fit_days + -(-self.refit_every_s // 86_400)

    def _period_of(self, now_s: int) -> int:
        return now_s // self.refit_every_s if self.refit_every_s else now_s

    def fit_window(self, history: MeterHistory, *, now_s: int) -> MeterHistory:
        """What the model's fit for the period of ``now_s`` sees of ``history``: the history up to
        the period's start, at most ``fit_days`` of it (module rules)."""
        end = self._period_of(now_s) * self.refit_every_s if self.refit_every_s else now_s
        end = min(end, history.end_s)
        end -= (end - history.start_s) % history.step_s
        start = max(history.start_s, end - self.fit_days * 86_400)
        return history.window(start, max(start, end))

    def fit(self, history: MeterHistory, *, now_s: int) -> None:
        """Fit for the period of ``now_s`` on ``history`` up to the period's start (at most
        ``fit_days`` of it), or the fallback on all of ``history`` (module rules)."""
        period = self._period_of(now_s)
        self._rows = history.households
        self.fits += 1
        try:
            self._fitted = _fit_rows(
                self.model, self.fit_window(history, now_s=now_s), self.fit_blocks
            )
            self._fitted_name, self._period = self.model.name, period
        except InvalidInput as exc:
            if self.fallback is None or exc.reason != "history_too_short":
                raise
            fit_on = history.window(max(history.start_s, history.end_s - self.fit_days * 86_400),
                                    history.end_s)  # fmt: skip
            self._fitted = _fit_rows(self.fallback, fit_on, self.fit_blocks)
            self._fitted_name, self._period = self.fallback.name, None

    def forecast(
        self, history: MeterHistory, *, now_s: int, slots: Sequence[int], clock: SlotClock
    ) -> list[SlotForecast]:
        """Each row's quantiles for ``slots`` (see the module rules). Raises the model's
        :class:`~market.errors.InvalidInput` (``history_too_short``) when it cannot forecast."""
        if history.end_s > now_s:
            raise UsageError(f"history ends at {history.end_s}, after now={now_s}: the future")
        wanted = sorted(set(slots))
        rows = history.households
        if not wanted:
            return [SlotForecast(self.name, ()) for _ in range(rows)]
        step = history.step_s
        horizon = min(-(-(clock.end(wanted[-1]) - history.end_s) // step), history.steps_per_day)
        if (
            self._fitted is None
            or self._rows != rows
            or self._period is None
            or self._period != self._period_of(now_s)
        ):
            self.fit(history, now_s=now_s)
        assert self._fitted is not None
        try:
            predicted = self._fitted.predict(history, horizon)
        except InvalidInput as exc:
            # a model that fitted but needs more history to predict than this (the federated
            # blend's community model: MIN_FORECAST_DAYS): the fallback, like a model that cannot fit
            if self.fallback is None or exc.reason != "history_too_short":
                raise
            self._fitted = _fit_rows(self.fallback, history, self.fit_blocks)
            self._fitted_name, self._period = self.fallback.name, None
            predicted = self._fitted.predict(history, horizon)
        fc = _plausible(predicted, *self._recent.of(history))
        rows_q = slot_quantiles(fc, now=now_s, clock=clock)
        if not rows_q:
            return []
        # every row has the same slots: which to keep is decided once (most often, all)
        keep = set(wanted)
        kept = [j for j, q in enumerate(rows_q[0]) if q.slot in keep]
        name = self.name
        if len(kept) == len(rows_q[0]):
            return [SlotForecast(name, tuple(row)) for row in rows_q]
        return [SlotForecast(name, tuple(row[j] for j in kept)) for row in rows_q]


def recent_range(history: MeterHistory) -> tuple[FloatArray, FloatArray]:
    """Each row's lowest and highest net power in the last :data:`PLAUSIBLE_DAYS` days of
    ``history``: the bounds of the Plausible rule (module rules)."""
    recent = history.net_w[:, -PLAUSIBLE_DAYS * history.steps_per_day :]
    return recent.min(axis=1), recent.max(axis=1)


class RecentRange:
    """:func:`recent_range` for a driver that asks at every slot boundary with a window one slot
    further on (the in-process engine: a community's 28 days, ≈ 2.7 million values scanned twice a
    slot). Each whole UTC day of the window has its rows' minimum and maximum computed once and
    kept; a call scans only the window's partial first and last days and takes the minimum and
    maximum over the pieces: the same numbers as :func:`recent_range` (a minimum or maximum does not
    depend on how the values are grouped; the histories' values are finite). A day is cached by
    the address of its values in one read-only array (the history's ``net_w`` a view of it, as
    :meth:`~forecasting.series.MeterHistory.window` cuts them); a history over another array starts
    the cache again, and one that is not a read-only view is scanned whole."""

    def __init__(self) -> None:
        self._base: FloatArray | None = None  # the array the cached days are in (kept alive)
        self._days: dict[tuple[int, int, int, int], tuple[FloatArray, FloatArray]] = {}

    def of(self, history: MeterHistory) -> tuple[FloatArray, FloatArray]:
        """Each row's (minimum, maximum) net power over the last :data:`PLAUSIBLE_DAYS` days."""
        net = history.net_w
        base = net.base
        if not isinstance(base, np.ndarray) or base.flags.writeable or net.flags.writeable:
            return recent_range(history)
        per_day = history.steps_per_day
        width = min(PLAUSIBLE_DAYS * per_day, history.steps)
        recent = net[:, history.steps - width :]
        if base is not self._base or len(self._days) > 4 * PLAUSIBLE_DAYS:
            self._base, self._days = base, {}
        first_s = history.end_s - width * history.step_s
        cut = (-first_s % 86_400) // history.step_s  # the first day's partial columns
        whole = (width - cut) // per_day
        if cut > width or whole == 0:
            return recent_range(history)
        address = recent.__array_interface__["data"][0]
        rows, row_stride, col_stride = net.shape[0], net.strides[0], net.strides[1]
        lows: list[FloatArray] = []
        highs: list[FloatArray] = []
        for a, b in ((0, cut), (cut + whole * per_day, width)):  # the partial days: scanned
            if b > a:
                lows.append(recent[:, a:b].min(axis=1))
                highs.append(recent[:, a:b].max(axis=1))
        days = self._days
        for d in range(whole):
            a = cut + d * per_day
            key = (address + a * col_stride, rows, row_stride, per_day)
            day = days.get(key)
            if day is None:
                piece = recent[:, a : a + per_day]
                day = days[key] = (piece.min(axis=1), piece.max(axis=1))
            lows.append(day[0])
            highs.append(day[1])
        return np.minimum.reduce(lows), np.maximum.reduce(highs)


def _plausible(fc: QuantileForecast, lo: FloatArray, hi: FloatArray) -> QuantileForecast:
    """``fc`` clipped, row by row, to ``lo``..``hi``: :func:`recent_range` of the history it
    was predicted from (module rules)."""
    values = np.clip(fc.values_w, lo[:, None, None], hi[:, None, None])
    values.setflags(write=False)
    return replace(fc, values_w=values)


def row_blocks(history: MeterHistory) -> list[tuple[slice, MeterHistory]]:
    """``history`` cut into blocks of :data:`FIT_ROWS` rows (module rules): one block, itself,
    when it has no more rows than that."""
    n = history.households
    if n <= FIT_ROWS:
        return [(slice(0, n), history)]
    rows = [slice(i, min(i + FIT_ROWS, n)) for i in range(0, n, FIT_ROWS)]
    return [(r, history.select(r)) for r in rows]


def _fit_rows(
    model: Forecaster, history: MeterHistory, fit_blocks: BlockFitter = fit_inline
) -> FittedForecaster:
    """``model`` fitted on ``history``, :data:`FIT_ROWS` rows at a time (module rules)."""
    blocks = row_blocks(history)
    fitted = fit_blocks(model, [block for _, block in blocks])
    if len(blocks) == 1:
        return fitted[0]
    stacked = _stacked(fitted)
    if stacked is not None:
        return stacked
    return _FittedRows(tuple((rows, f) for (rows, _), f in zip(blocks, fitted, strict=True)))


def _stacked(fitted: Sequence[FittedForecaster]) -> FittedProfileQR | None:
    """profile-qr's blocks as one fitted model for all their rows (``None``: not profile-qr
    blocks of one model): its coefficients and band scales are per row and its prediction
    vectorised over rows, each row's forecast independent of the others in the batch
    (:mod:`forecasting.profile_qr`'s rules), so predicting once for all rows gives the same
    numbers as predicting block by block (tested bit for bit) at a fraction of the calls."""
    parts = [f for f in fitted if isinstance(f, FittedProfileQR)]
    if len(parts) != len(fitted):
        return None
    first = parts[0]
    for f in parts:
        if (f.model, f.step_s) != (first.model, first.step_s) or (
            f.coefs.shape[1:],
            f.band_scales.shape[1:],
        ) != (first.coefs.shape[1:], first.band_scales.shape[1:]):
            return None
    coefs = np.concatenate([f.coefs for f in parts])
    scales = np.concatenate([f.band_scales for f in parts])
    coefs.setflags(write=False)
    scales.setflags(write=False)
    return FittedProfileQR(first.model, coefs, first.step_s, scales)


@dataclass(frozen=True, slots=True, eq=False)
class _FittedRows:
    """A model fitted in blocks of rows: predicts each block and stacks the rows back."""

    parts: tuple[tuple[slice, FittedForecaster], ...]

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        forecasts = [f.predict(history.select(rows), horizon) for rows, f in self.parts]
        values = np.concatenate([fc.values_w for fc in forecasts])
        values.setflags(write=False)
        return replace(forecasts[0], values_w=values)
