"""The household's slot forecaster on real data: one batched forecast equals each household's own, fits
follow the community clock's periods (not when a driver started), seasonal naive while history is
short, forecasts stay within what the meter showed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data import SHIPPED_LATITUDE, SHIPPED_LONGITUDE, load_shipped
from forecasting.models import FittedForecaster, QuantileForecast, SeasonalNaive
from forecasting.policy import forecast_slots
from forecasting.profile_qr import ProfileQR
from forecasting.series import MeterHistory
from gridnode.household import forecast as forecast_module
from gridnode.household.agent import HISTORY_DAYS
from gridnode.household.forecast import (
    PLAUSIBLE_DAYS,
    RecentRange,
    Site,
    SlotForecaster,
    bidding_forecaster,
    recent_range,
)
from market.errors import UsageError
from market.slots import SlotClock

CLOCK = SlotClock(900, 300)
SITE = Site(SHIPPED_LATITUDE, SHIPPED_LONGITUDE, "FR")


def community(now_s: int, days: int = HISTORY_DAYS + 1) -> MeterHistory:
    """Three households from the shipped real data: scaled, and one a day shifted."""
    data = load_shipped()
    start = now_s - days * 86_400
    a, b = data.window(start, now_s), data.window(start - 86_400, now_s - 86_400)
    assert a.pv_w is not None and a.load_w is not None
    assert b.pv_w is not None and b.load_w is not None
    return MeterHistory.from_components(
        np.concatenate([a.pv_w, a.pv_w * 2.0, b.pv_w]),
        np.concatenate([a.load_w, a.load_w * 0.7, b.load_w]),
        start_s=start,
        step_s=data.step_s,
        utc_offset_s=data.utc_offset_s,
    )


NOW_S = 1_243_879_200  # 2009-06-01 11:00 UTC-7 in the shipped data, on a slot boundary
DAY_START = NOW_S - NOW_S % 86_400  # the daily fit's period starts at 00:00 UTC


def test_a_batched_forecast_gives_every_household_its_own_forecast() -> None:
    hist = community(NOW_S)
    slots = [CLOCK.slot_at(NOW_S) + k for k in (1, 2, 5)]
    batch = bidding_forecaster(site=SITE).forecast(hist, now_s=NOW_S, slots=slots, clock=CLOCK)
    assert len(batch) == 3 and len({fc.quantiles for fc in batch}) == 3  # the rows differ
    model = ProfileQR(latitude=SHIPPED_LATITUDE, longitude=SHIPPED_LONGITUDE,
                      holiday_country="FR")  # fmt: skip
    for row, fc in enumerate(batch):
        alone = bidding_forecaster(site=SITE).forecast(
            hist.select([row]), now_s=NOW_S, slots=slots, clock=CLOCK
        )
        assert [fc] == alone
        assert fc.model == "profile-qr"
        assert [q.slot for q in fc.quantiles] == slots
        # the model fitted on the history before today's period, forecasting from now
        mine = hist.select([row])
        fitted = model.fit(mine.window(DAY_START - HISTORY_DAYS * 86_400, DAY_START))
        direct = forecast_slots(mine, fitted, now=NOW_S, clock=CLOCK, horizon=8)
        recent = mine.net_w[0, -PLAUSIBLE_DAYS * 96 :] * 0.25  # Wh per 15 min
        for got, want in zip(fc.quantiles, [q for q in direct if q.slot in slots], strict=True):
            if recent.min() <= want.p10_wh and want.p90_wh <= recent.max():
                assert got == want  # within what the meter showed: not clipped


def test_slots_out_of_reach_are_left_out_and_the_future_is_refused() -> None:
    hist = community(NOW_S)
    f = bidding_forecaster(site=SITE)
    first_open = CLOCK.first_open_slot(NOW_S)
    far = CLOCK.slot_at(NOW_S + 2 * 86_400)
    (fc, *_) = f.forecast(hist, now_s=NOW_S, slots=[first_open - 1, first_open, far], clock=CLOCK)
    assert [q.slot for q in fc.quantiles] == [first_open]  # gate closed; more than a day ahead
    assert f.forecast(hist, now_s=NOW_S, slots=[], clock=CLOCK)[1].quantiles == ()
    with pytest.raises(UsageError, match="after now"):
        f.forecast(hist, now_s=NOW_S - 900, slots=[first_open], clock=CLOCK)


@dataclass
class CountingModel:
    """A real model that counts its fits and remembers where each fit's history ended."""

    inner: SeasonalNaive = field(default_factory=lambda: SeasonalNaive(1, 28))
    ends: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def fit(self, history: MeterHistory) -> FittedForecaster:
        self.ends.append(history.end_s)
        return self.inner.fit(history)


def test_fits_follow_the_periods_of_the_community_clock() -> None:
    model = CountingModel()
    f = SlotForecaster(model, refit_every_s=3_600)
    slot = CLOCK.first_open_slot(NOW_S)
    for k in range(4):  # four boundaries within the hour: one fit, on the data before the hour
        now_s = NOW_S + 900 * k
        f.forecast(community(now_s, 40), now_s=now_s, slots=[slot + k], clock=CLOCK)
    assert model.ends == [NOW_S]
    f.forecast(community(NOW_S + 3_600, 40), now_s=NOW_S + 3_600, slots=[slot + 4], clock=CLOCK)
    assert model.ends == [NOW_S, NOW_S + 3_600]
    f.forecast(community(NOW_S + 3_600).select([0]), now_s=NOW_S + 3_600, slots=[slot + 4],
               clock=CLOCK)  # fmt: skip
    assert len(model.ends) == 3  # other rows: fitted again
    with pytest.raises(UsageError, match="refit_every_s"):
        SlotForecaster(model, refit_every_s=-1)


def test_a_fit_depends_on_the_period_not_on_when_the_driver_started() -> None:
    """A daemon that started hours earlier and the in-process engine that starts now forecast
    alike: both fitted on the data before today's period began."""
    slots = [CLOCK.first_open_slot(NOW_S)]
    early = bidding_forecaster(site=SITE)
    early.forecast(community(NOW_S - 6 * 3_600), now_s=NOW_S - 6 * 3_600, slots=[
        CLOCK.first_open_slot(NOW_S - 6 * 3_600)], clock=CLOCK)  # fmt: skip
    late = bidding_forecaster(site=SITE)
    hist = community(NOW_S)
    assert early.forecast(hist, now_s=NOW_S, slots=slots, clock=CLOCK) == late.forecast(
        hist, now_s=NOW_S, slots=slots, clock=CLOCK
    )
    assert early.fits == late.fits == 1
    assert early.history_days == HISTORY_DAYS + 1


def test_seasonal_naive_stands_in_while_the_history_is_short() -> None:
    f = bidding_forecaster(site=SITE)
    slot = CLOCK.first_open_slot(NOW_S)
    (fc, *_) = f.forecast(community(NOW_S, 10), now_s=NOW_S, slots=[slot], clock=CLOCK)
    assert fc.model == "seasonal-naive-day" and fc.quantiles
    (fc, *_) = f.forecast(community(NOW_S, 60), now_s=NOW_S, slots=[slot], clock=CLOCK)
    assert fc.model == "profile-qr"  # enough history now: the model takes over
    with pytest.raises(Exception, match="history_too_short"):
        f.forecast(community(NOW_S, 1), now_s=NOW_S, slots=[slot], clock=CLOCK)


@dataclass(frozen=True)
class Wild:
    """A model that forecasts 100 kW of surplus and 100 kW of need (a broken extrapolation)."""

    name: str = "wild"

    def fit(self, history: MeterHistory) -> FittedForecaster:
        return self

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        values = np.tile([-1e5, 0.0, 1e5], (history.households, horizon, 1))
        return QuantileForecast(history.end_s, history.step_s, (0.1, 0.5, 0.9), values)


def test_a_forecast_never_leaves_the_range_the_meter_showed() -> None:
    hist = community(NOW_S, 40)
    (fc, *_) = SlotForecaster(Wild()).forecast(
        hist, now_s=NOW_S, slots=[CLOCK.first_open_slot(NOW_S)], clock=CLOCK
    )
    (q,) = fc.quantiles
    recent = hist.net_w[0, -PLAUSIBLE_DAYS * 96 :]
    assert q.p10_wh == round(recent.min() / 4) and q.p90_wh == round(recent.max() / 4)


def test_many_rows_are_fitted_a_block_at_a_time_with_the_same_forecasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hist = community(NOW_S, 40)
    slots = [CLOCK.first_open_slot(NOW_S) + k for k in range(3)]
    whole = SlotForecaster(SeasonalNaive(1, 28)).forecast(hist, now_s=NOW_S, slots=slots,
                                                          clock=CLOCK)  # fmt: skip
    monkeypatch.setattr(forecast_module, "FIT_ROWS", 2)
    model = CountingModel()
    blocks = SlotForecaster(model).forecast(hist, now_s=NOW_S, slots=slots, clock=CLOCK)
    assert len(model.ends) == 2  # rows 0-1, then row 2
    assert blocks == whole


def test_profile_qr_blocks_predict_as_one_model_with_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """profile-qr fitted in blocks of rows is stacked into one fitted model for all rows: its
    predictions equal the block-by-block ones bit for bit, from any origin, for any horizon."""
    monkeypatch.setattr(forecast_module, "FIT_ROWS", 2)
    model = ProfileQR(latitude=SHIPPED_LATITUDE, longitude=SHIPPED_LONGITUDE, max_origins=200)
    hist = community(NOW_S, 40)
    blocks = forecast_module.row_blocks(hist)
    fitted = forecast_module.fit_inline(model, [b for _, b in blocks])
    by_block = forecast_module._FittedRows(
        tuple((rows, f) for (rows, _), f in zip(blocks, fitted, strict=True))
    )
    stacked = forecast_module._fit_rows(model, hist)
    assert len(blocks) == 2 and not isinstance(stacked, forecast_module._FittedRows)
    for hours in (0, 5, 13, 23):
        h = hist.window(hist.start_s, NOW_S - hours * 3600)
        for horizon in (1, 2, 7, 96):
            a, b = by_block.predict(h, horizon), stacked.predict(h, horizon)
            assert a.values_w.tobytes() == b.values_w.tobytes()
            assert (a.origin_s, a.step_s, a.quantiles) == (b.origin_s, b.step_s, b.quantiles)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    step_s=st.sampled_from([900, 1800, 3600]),
    start_offset_steps=st.integers(0, 95),
    days=st.integers(1, PLAUSIBLE_DAYS + 6),
    moves=st.lists(st.integers(0, 200), min_size=1, max_size=12),
)
def test_the_cached_plausible_bounds_equal_a_whole_scan(
    seed: int, step_s: int, start_offset_steps: int, days: int, moves: list[int]
) -> None:
    """RecentRange (whole days cached, partial days scanned) gives recent_range's numbers for
    windows moving on over one history, and over a second history after it (the cache starts
    again), whatever the grid and the UTC-day alignment."""
    rng = np.random.default_rng(seed)
    per_day = 86_400 // step_s
    steps = (days + 3) * per_day
    start_s = 1_244_000_000 // 86_400 * 86_400 + start_offset_steps * 900
    start_s -= start_s % step_s
    # values with many ties and signed zeros' neighbours: a minimum or maximum must not move
    values = rng.integers(-3, 4, size=(5, steps)).astype(np.float64) * rng.choice([0.5, 250.0])
    full = MeterHistory.from_net(values, start_s=start_s, step_s=step_s)
    other = MeterHistory.from_net(values[:, ::-1], start_s=start_s, step_s=step_s)
    ranges = RecentRange()
    end = start_s + per_day * step_s
    for history in (full, other):
        for move in moves:
            end = min(full.end_s, end + move * step_s)
            window = history.window(history.start_s, end)
            lo, hi = ranges.of(window)
            want_lo, want_hi = recent_range(window)
            assert lo.tobytes() == want_lo.tobytes()
            assert hi.tobytes() == want_hi.tobytes()


def test_a_writable_history_is_scanned_whole_not_cached() -> None:
    """A history whose values could still change is never served from the cache."""
    values = np.arange(4 * 96, dtype=np.float64).reshape(1, -1)
    writable = MeterHistory(0, 900, values[:, : 3 * 96])  # a view of a writable array
    ranges = RecentRange()
    assert ranges.of(writable)[1][0] == 3 * 96 - 1
    values[0, 3 * 96 - 1] = 10_000.0
    assert ranges.of(writable)[1][0] == 10_000.0
