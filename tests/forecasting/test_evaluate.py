"""Offline policy evaluation through the market's clearing and settlement, on real data."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.evaluate import community_from, evaluate_policies
from forecasting.series import MeterHistory
from market.errors import UsageError
from market.settlement import Netting, Tariff
from tests.forecasting.conftest import local_midnight_utc

TARIFF = Tariff(retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000)


@pytest.fixture(scope="module")
def community(shipped_hourly: MeterHistory) -> MeterHistory:
    return community_from(shipped_hourly, [1.0, 0.0, 1.5, 0.0])


def test_community_households_are_shifted_real_series(
    shipped_hourly: MeterHistory, community: MeterHistory
) -> None:
    assert community.households == 4
    assert community.pv_w is not None and community.load_w is not None
    assert shipped_hourly.pv_w is not None and shipped_hourly.load_w is not None
    np.testing.assert_array_equal(community.pv_w[0], shipped_hourly.pv_w[0])
    np.testing.assert_array_equal(community.pv_w[1], 0.0)
    np.testing.assert_array_equal(community.load_w[2], np.roll(shipped_hourly.load_w[0], 14 * 24))
    with pytest.raises(UsageError):
        community_from(community, [1.0])


def test_policies_are_settled_exactly_and_ranked_sensibly(community: MeterHistory) -> None:
    start = local_midnight_utc(2009, 5, 1)
    results = evaluate_policies(community, start_s=start, days=7, tariff=TARIFF)
    by = {r.policy: r for r in results}
    assert list(by) == ["grid-only", "median-one-step", "quantile-steps", "perfect-foresight"]
    grid = by["grid-only"]
    assert grid.savings_micro == 0 and grid.traded_wh == 0
    assert all(r.grid_only_bill_micro == grid.grid_only_bill_micro for r in results)
    for r in results:
        assert sum(r.bills_micro) == r.community_bill_micro
    perfect = by["perfect-foresight"]
    assert perfect.traded_wh > 0
    # knowing the future, every traded Wh removes one Wh of imbalance on each side, exactly
    assert perfect.imbalance_abs_wh == grid.imbalance_abs_wh - 2 * perfect.traded_wh
    assert perfect.savings_micro > 0
    for name in ("median-one-step", "quantile-steps"):
        assert 0 < by[name].savings_micro < perfect.savings_micro
    # deterministic to the µ¤
    assert evaluate_policies(community, start_s=start, days=7, tariff=TARIFF) == results


def test_perfect_foresight_never_costs_a_household_more_than_grid_only(
    community: MeterHistory,
) -> None:
    start = local_midnight_utc(2009, 7, 1)
    (grid, perfect) = evaluate_policies(
        community, start_s=start, days=3, tariff=TARIFF, policies=("grid-only", "perfect-foresight")
    )
    assert all(p <= g for p, g in zip(perfect.bills_micro, grid.bills_micro, strict=True))
    netted = evaluate_policies(
        community, start_s=start, days=3, tariff=TARIFF, policies=("grid-only",),
        netting=Netting.COMMUNITY,
    )  # fmt: skip
    assert netted[0].community_bill_micro < grid.community_bill_micro
    with pytest.raises(UsageError):
        evaluate_policies(community, start_s=start, days=1, tariff=TARIFF, policies=("psychic",))
