"""Backtests on the real household: the metrics, and the skill targets of issue 5."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecasting.backtest import backtest, format_table, pinball_loss
from forecasting.models import QuantileRegression, SeasonalNaive
from forecasting.series import MeterHistory
from tests.forecasting.conftest import local_midnight_utc


def test_pinball_loss_by_hand() -> None:
    actual = np.array([10.0])
    forecast = np.array([[8.0, 10.0, 14.0]])
    # q=0.1: under by 2 → 0.2; q=0.5: exact → 0; q=0.9: over by 4 → 0.1*4 = 0.4
    assert pinball_loss(actual, forecast, (0.1, 0.5, 0.9)) == pytest.approx((0.2 + 0.0 + 0.4) / 3)


def test_naive_scores_itself_zero_skill_and_metrics_are_consistent(
    shipped_hourly: MeterHistory,
) -> None:
    report = backtest(
        shipped_hourly,
        [SeasonalNaive(7)],
        start_s=local_midnight_utc(2009, 3, 1),
        end_s=local_midnight_utc(2009, 3, 15),
        horizon=24,
    )
    base, week = report.scores
    assert report.origins == 14 and report.baseline == base.name == "seasonal-naive-day"
    assert base.skill_mae == 0.0
    assert week.skill_mae == pytest.approx(1 - week.mae_w / base.mae_w)
    for s in report.scores:
        assert s.rmse_w >= s.mae_w > 0
        assert 0 <= s.coverage_p10_p90 <= 1
        assert np.mean(s.mae_by_horizon_w) == pytest.approx(s.mae_w)
        assert s.fit_seconds is None and s.predict_ms_per_household is None
    # the breakdowns add up: households equally weighted, months weighted by their origins
    assert report.origins_by_month == (0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    for s in report.scores:
        by_hh = np.asarray(s.mae_by_household_w)
        assert by_hh.shape == (1, 24)
        assert by_hh.mean(axis=0) == pytest.approx(s.mae_by_horizon_w)
        assert [len(row) for row in s.mae_by_month_w] == [0, 0, 24] + [0] * 9
        assert s.mae_by_month_w[2] == pytest.approx(s.mae_by_horizon_w)
        assert s.coverage_by_month[2] == pytest.approx(s.coverage_by_horizon)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["models"][0]["mae_by_month_w"][0] == []
    assert [m["name"] for m in doc["models"]] == ["seasonal-naive-day", "seasonal-naive-week"]
    assert len(doc["models"][1]["mae_by_horizon_w"]) == 24
    assert "seasonal-naive-week" in format_table(report)


def test_day_ahead_net_surplus_meets_the_issue_targets_on_real_2009(
    shipped_hourly: MeterHistory,
) -> None:
    """Issue 5: ≥ 25 % MAE skill over seasonal naive, P10–P90 coverage within 70–90 %,
    on the real household's hourly net surplus, daily origins through 2009."""
    report = backtest(
        shipped_hourly,
        [QuantileRegression(horizon=24)],
        start_s=local_midnight_utc(2009, 1, 1),
        end_s=local_midnight_utc(2010, 1, 1),
        horizon=24,
    )
    base, qr = report.scores
    assert report.origins == 365
    assert 700 < base.mae_w < 760  # the measured starting point: naive ≈ 0.73 kW
    assert qr.skill_mae >= 0.25
    assert 0.70 <= qr.coverage_p10_p90 <= 0.90
    assert qr.pinball_w < base.pinball_w


def test_backtests_never_look_past_each_origin(shipped_hourly: MeterHistory) -> None:
    start, end = local_midnight_utc(2009, 3, 1), local_midnight_utc(2009, 3, 8)
    h = shipped_hourly.until(end)
    assert h.pv_w is not None and h.load_w is not None
    # the same past, but everything after the last evaluated day replaced by nonsense
    cut = h.index_at(end - 86400)
    pv, load = h.pv_w.copy(), h.load_w.copy()
    pv[:, cut:], load[:, cut:] = 0.0, 99_999.0
    tampered = MeterHistory.from_components(
        pv, load, start_s=h.start_s, step_s=h.step_s, utc_offset_s=h.utc_offset_s
    )
    models = [QuantileRegression(horizon=24, train_days=200)]
    kw = {"start_s": start, "end_s": end - 86400, "horizon": 24}
    a = backtest(h, models, **kw)
    b = backtest(tampered, models, **kw)
    assert a == b
    c = backtest(tampered, models, start_s=start, end_s=end, horizon=24)
    assert c.scores[1].mae_w > 10 * a.scores[1].mae_w  # the nonsense does show once scored
