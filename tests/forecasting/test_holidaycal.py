"""Holiday calendars as day numbers: the in-process build is the forecasters' calendar as it always
was, and year by year it is the same (what the daemon's file cache relies on)."""

from __future__ import annotations

import holidays
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting import holidaycal
from forecasting.profile_qr import _holiday_days
from market.errors import UsageError

#: calendars with observed days across the new year (US, GB), regional ones and moving feasts
CALENDARS = [("US", None), ("US", "CA"), ("DE", "BY"), ("FR", None), ("GB", "ENG"), ("JP", None)]


def oracle(country: str, subdiv: str | None, years: range) -> frozenset[int]:
    """The forecasters' calendar before the cache (the code it replaced, verbatim)."""
    cal = holidays.country_holidays(country, subdiv=subdiv, years=list(years))
    epoch = np.datetime64("1970-01-01", "D")
    return frozenset(int((np.datetime64(d, "D") - epoch).astype(np.int64)) for d in cal)


@pytest.mark.parametrize(("country", "subdiv"), CALENDARS)
def test_the_build_is_the_forecasters_calendar(country: str, subdiv: str | None) -> None:
    for years in (range(2009, 2011), range(2016, 2018), range(2021, 2030), range(2024, 2024)):
        assert holidaycal.build(country, subdiv, years) == oracle(country, subdiv, years)
        _holiday_days.cache_clear()
        assert _holiday_days(country, subdiv, years) == oracle(country, subdiv, years)


@settings(max_examples=40, deadline=None)
@given(
    calendar=st.sampled_from(CALENDARS),
    first=st.integers(1975, 2070),
    count=st.integers(0, 6),
)
def test_year_by_year_is_the_same_calendar(
    calendar: tuple[str, str | None], first: int, count: int
) -> None:
    country, subdiv = calendar
    years = range(first, first + count)
    per_year = holidaycal.year_days(country, subdiv, years)
    assert sorted(per_year) == list(years)
    assert all(v == sorted(v) for v in per_year.values())
    union = frozenset(d for days in per_year.values() for d in days)
    assert union == oracle(country, subdiv, years)


@pytest.mark.filterwarnings("ignore:Requested Holidays are available only")
def test_every_calendar_the_package_knows_is_additive_over_years() -> None:
    """The property the file cache stands on, for every country and its first subdivisions."""
    years = range(2021, 2025)
    for country, subdivs in holidays.list_supported_countries().items():
        for subdiv in [None, *list(subdivs)[:2]]:
            per_year = holidaycal.year_days(country, subdiv, years)
            union = frozenset(d for days in per_year.values() for d in days)
            assert union == holidaycal.build(country, subdiv, years), (country, subdiv)


@pytest.mark.parametrize(("country", "subdiv"), [("XX", None), ("US", "XX"), ("us", None)])
def test_an_unknown_calendar_is_one_line(country: str, subdiv: str | None) -> None:
    for call in (holidaycal.build, holidaycal.year_days):
        with pytest.raises(UsageError) as info:
            call(country, subdiv, range(2024, 2026))
        assert str(info.value) == f"no holiday calendar for country {country!r} / {subdiv!r}"


def test_an_installed_source_answers_instead() -> None:
    asked: list[tuple[str, str | None, range]] = []

    def from_a_table(country: str, subdiv: str | None, years: range) -> frozenset[int]:
        asked.append((country, subdiv, years))
        return oracle(country, subdiv, years)

    old = holidaycal.use_source(from_a_table)
    try:
        assert holidaycal.holiday_days("FR", None, range(2020, 2022)) == oracle(
            "FR", None, range(2020, 2022)
        )
        assert asked == [("FR", None, range(2020, 2022))]
    finally:
        assert holidaycal.use_source(old) is from_a_table
