"""forecasting.solar: the sun's geometry written out must be pvlib's, bit for bit (module rules),
and computing it must not import pvlib."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from pvlib import solarposition

from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
)
from forecasting.solar import (
    clear_sky_ghi_w_m2,
    declination_spencer71,
    equation_of_time_spencer71,
    solar_zenith_analytical,
)


def _bits(a: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(a, dtype=np.float64).view(np.int64)


def _ghi_with_pvlib(times_s: npt.ArrayLike, *, latitude: float, longitude: float) -> np.ndarray:
    """The module's function as it was written on top of pvlib's (the reference)."""
    t = np.asarray(times_s, dtype=np.int64)
    days, at = np.unique(t // 86_400, return_inverse=True)
    stamps = days.astype("datetime64[D]")
    day_of_year = (stamps - stamps.astype("datetime64[Y]").astype("datetime64[D]")).astype(
        np.int64
    ) + 1
    declination = np.asarray(solarposition.declination_spencer71(day_of_year))[at]
    eot_min = np.asarray(solarposition.equation_of_time_spencer71(day_of_year))[at]
    hour_angle_deg = 15.0 * ((t % 86_400) / 3600.0 - 12.0) + longitude + eot_min / 4.0
    zenith = solarposition.solar_zenith_analytical(
        np.radians(latitude), np.radians(hour_angle_deg), declination
    )
    cos_z = np.cos(np.asarray(zenith, dtype=np.float64))
    up = cos_z > 0
    safe = np.where(up, cos_z, 1.0)
    return np.where(up, 1098.0 * safe * np.exp(-0.059 / safe), 0.0)


def test_daily_terms_are_pvlibs_bit_for_bit() -> None:
    days = np.arange(1, 367, dtype=np.int64)
    assert np.array_equal(
        _bits(declination_spencer71(days)), _bits(solarposition.declination_spencer71(days))
    )
    assert np.array_equal(
        _bits(equation_of_time_spencer71(days)),
        _bits(solarposition.equation_of_time_spencer71(days)),
    )
    rng = np.random.default_rng(7)
    ha = rng.uniform(-np.pi, np.pi, 5000)
    dec = rng.uniform(-0.41, 0.41, 5000)
    for lat in (-77.8, -33.9, 0.0, 34.1, 36.07, 51.5, 71.3):
        ours = solar_zenith_analytical(np.radians(lat), ha, dec)
        theirs = solarposition.solar_zenith_analytical(np.radians(lat), ha, dec)
        assert np.array_equal(_bits(ours), _bits(theirs))


def test_ghi_is_the_pvlib_based_value_over_years_of_15_minute_steps() -> None:
    # 2008-01-01 .. 2011-01-01 (a leap year, the years the shipped data span), every 15 minutes
    # at the midpoint, at the shipped site and the CityLearn homes' and a southern one
    t = np.arange(1_199_145_600, 1_293_840_000, 900, dtype=np.int64) + 450
    for lat, lon in ((SHIPPED_LATITUDE, SHIPPED_LONGITUDE),
                     (CITYLEARN_LATITUDE, CITYLEARN_LONGITUDE), (-33.9, 151.2)):  # fmt: skip
        ours = clear_sky_ghi_w_m2(t, latitude=lat, longitude=lon)
        assert np.array_equal(_bits(ours), _bits(_ghi_with_pvlib(t, latitude=lat, longitude=lon)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-2_000_000_000, 4_000_000_000), min_size=1, max_size=40),
    st.floats(-89.9, 89.9),
    st.floats(-180.0, 180.0),
)
def test_ghi_equals_pvlibs_at_any_times_and_site(
    times: list[int], latitude: float, longitude: float
) -> None:
    ours = clear_sky_ghi_w_m2(times, latitude=latitude, longitude=longitude)
    ref = _ghi_with_pvlib(times, latitude=latitude, longitude=longitude)
    assert np.array_equal(_bits(ours), _bits(ref))


def test_computing_ghi_does_not_import_pvlib() -> None:
    code = (
        "import sys; from forecasting.solar import clear_sky_ghi_w_m2; "
        "clear_sky_ghi_w_m2([1_243_857_600], latitude=36.0, longitude=-80.0); "
        "print('pvlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
