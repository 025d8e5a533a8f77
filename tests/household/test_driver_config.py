"""The daemon's bidding forecaster comes from its config: ``bidding.model`` (the registry's names,
profile-qr by default) and the household's site; mistakes are one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecasting.profile_qr import ProfileQR
from forecasting.registry import DEFAULT_MODEL
from gridnode.config import create_data_dir, load_config, update_config
from gridnode.household_driver import forecaster_of
from market.errors import UsageError


def test_the_daemon_bids_with_the_default_model_for_its_site(tmp_path: Path) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    config = load_config(d)
    assert config.bidding_model == DEFAULT_MODEL == "profile-qr"
    f = forecaster_of(config)
    assert isinstance(f.model, ProfileQR) and f.model.latitude is None
    assert f.history_days == 366  # a year before the day's fit, and the day
    update_config(
        d,
        {
            "household.latitude": 34.09,
            "household.longitude": -117.43,
            "household.holiday_country": "US",
            "household.holiday_subdiv": "CA",
        },
    )
    model = forecaster_of(load_config(d)).model
    assert isinstance(model, ProfileQR)
    assert (model.latitude, model.longitude, model.holiday_country, model.holiday_subdiv) == (
        34.09, -117.43, "US", "CA",
    )  # fmt: skip
    update_config(d, {"bidding.model": "seasonal-naive-day"})
    assert forecaster_of(load_config(d)).model.name == "seasonal-naive-day"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bidding.model": "psychic"}, "bidding.model must be one of profile-qr, "),
        ({"household.latitude": 52.0}, "household.latitude and household.longitude go together"),
        ({"household.latitude": 95, "household.longitude": 0}, "latitude must lie in [-90, 90]"),
        ({"household.holiday_subdiv": "CA"}, "holiday_subdiv needs household.holiday_country"),
        ({"household.holiday_country": "XX"}, "no public-holiday calendar for 'XX'/None"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    with pytest.raises(UsageError) as info:
        update_config(d, changes)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(d / "gridnode.toml"))
