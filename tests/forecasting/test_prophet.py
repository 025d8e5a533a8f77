"""Prophet (optional): skipped cleanly when the package is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.prophet_model import ProphetForecaster, prophet_available
from forecasting.series import MeterHistory
from market.errors import UsageError
from tests.forecasting.conftest import local_midnight_utc


def test_prophet_availability_is_reported_honestly() -> None:
    try:
        import prophet  # noqa: F401
    except ImportError:
        assert not prophet_available()
    else:
        assert prophet_available()


@pytest.mark.skipif(prophet_available(), reason="only meaningful without prophet installed")
def test_without_prophet_fit_says_what_to_install(shipped_hourly: MeterHistory) -> None:
    with pytest.raises(UsageError, match="pip install prophet"):
        ProphetForecaster().fit(shipped_hourly.until(local_midnight_utc(2009, 6, 1)))


@pytest.mark.skipif(not prophet_available(), reason="prophet is an optional extra")
def test_prophet_forecasts_sorted_quantiles_deterministically(shipped_hourly: MeterHistory) -> None:
    past = shipped_hourly.until(local_midnight_utc(2009, 6, 1))
    model = ProphetForecaster(window_days=21)
    fc = model.fit(past).predict(past, 24)
    assert fc.values_w.shape == (1, 24, 3)
    assert (np.diff(fc.values_w, axis=2) >= 0).all()
    again = model.fit(past).predict(past, 24)
    np.testing.assert_allclose(fc.values_w, again.values_w)
    # the fitted daily shape follows the sun: more surplus at noon than at midnight
    assert fc.median_w[0, 12] > fc.median_w[0, 0]
