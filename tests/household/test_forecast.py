"""The household's slot forecaster: one batched forecast equals each household's own, on real data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from forecasting.data import load_shipped
from forecasting.models import FittedForecaster, SeasonalNaive
from forecasting.policy import forecast_slots
from forecasting.series import MeterHistory
from gridnode.household.agent import HISTORY_DAYS
from gridnode.household.forecast import SlotForecaster, bidding_forecaster
from market.errors import UsageError
from market.slots import SlotClock

CLOCK = SlotClock(900, 300)


def community(now_s: int) -> MeterHistory:
    """Three households from the shipped real data: scaled, and one a day shifted."""
    data = load_shipped()
    start = now_s - HISTORY_DAYS * 86_400
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


def test_a_batched_forecast_gives_every_household_its_own_forecast() -> None:
    hist = community(NOW_S)
    slots = [CLOCK.slot_at(NOW_S) + k for k in (1, 2, 5)]
    batch = bidding_forecaster().forecast(hist, now_s=NOW_S, slots=slots, clock=CLOCK)
    assert len(batch) == 3 and len({fc.quantiles for fc in batch}) == 3  # the rows differ
    for row, fc in enumerate(batch):
        alone = bidding_forecaster().forecast(
            hist.select([row]), now_s=NOW_S, slots=slots, clock=CLOCK
        )
        assert [fc] == alone
        assert fc.model == "seasonal-naive-day"
        assert [q.slot for q in fc.quantiles] == slots
        # the same quantiles as forecasting the next two hours straight from the model
        model = SeasonalNaive(period_days=1, train_days=28)
        direct = forecast_slots(
            hist.select([row]), model.fit(hist.select([row])), now=NOW_S, clock=CLOCK, horizon=8
        )
        assert list(fc.quantiles) == [q for q in direct if q.slot in slots]


def test_slots_out_of_reach_are_left_out_and_the_future_is_refused() -> None:
    hist = community(NOW_S)
    f = bidding_forecaster()
    first_open = CLOCK.first_open_slot(NOW_S)
    far = CLOCK.slot_at(NOW_S + 2 * 86_400)
    (fc, *_) = f.forecast(hist, now_s=NOW_S, slots=[first_open - 1, first_open, far], clock=CLOCK)
    assert [q.slot for q in fc.quantiles] == [first_open]  # gate closed; more than a day ahead
    assert f.forecast(hist, now_s=NOW_S, slots=[], clock=CLOCK)[1].quantiles == ()
    with pytest.raises(UsageError, match="after now"):
        f.forecast(hist, now_s=NOW_S - 900, slots=[first_open], clock=CLOCK)


@dataclass
class CountingModel:
    """A real model that counts its fits."""

    inner: SeasonalNaive = field(default_factory=lambda: SeasonalNaive(1, 28))
    fits: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def fit(self, history: MeterHistory) -> FittedForecaster:
        self.fits += 1
        return self.inner.fit(history)


def test_refits_follow_the_schedule() -> None:
    hist = community(NOW_S)
    model = CountingModel()
    f = SlotForecaster(model, refit_every_s=3_600)
    slot = CLOCK.first_open_slot(NOW_S)
    for k in range(4):  # four boundaries within the hour: one fit
        now_s = NOW_S + 900 * k
        f.forecast(community(now_s), now_s=now_s, slots=[slot + k], clock=CLOCK)
    assert model.fits == 1
    f.forecast(community(NOW_S + 3_600), now_s=NOW_S + 3_600, slots=[slot + 4], clock=CLOCK)
    assert model.fits == 2
    f.forecast(hist.select([0]), now_s=NOW_S + 3_600, slots=[slot + 4], clock=CLOCK)
    assert model.fits == 3  # other rows: fitted again
    with pytest.raises(UsageError, match="refit_every_s"):
        SlotForecaster(model, refit_every_s=-1)
