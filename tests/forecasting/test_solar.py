"""forecasting.solar written out without pvlib: bit for bit what pvlib's functions give."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvlib import solarposition

from forecasting import solar
from forecasting.solar import clear_sky_ghi_w_m2


def _pvlib_ghi(times_s: np.ndarray, *, latitude: float, longitude: float) -> np.ndarray:
    """The module's function as it was, on pvlib's own solar-position functions (the reference)."""
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
    out: np.ndarray = np.where(up, 1098.0 * safe * np.exp(-0.059 / safe), 0.0)
    return out


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [(48.8, 2.3), (35.9, -79.8), (-33.9, 151.2), (64.1, -21.9), (0.0, 0.0)],
)
def test_two_years_of_slots_equal_pvlib_bit_for_bit(latitude: float, longitude: float) -> None:
    start = 1_199_145_600 + 450  # 2008-01-01 (a leap year), interval midpoints
    for step in (900, 3600):
        t = start + np.arange(2 * 366 * 86_400 // step, dtype=np.int64) * step
        got = clear_sky_ghi_w_m2(t, latitude=latitude, longitude=longitude)
        assert _bits(got) == _bits(_pvlib_ghi(t, latitude=latitude, longitude=longitude))
        assert got.max() > 0 and got.min() == 0.0


def test_each_term_equals_pvlib_bit_for_bit() -> None:
    doy = np.arange(1, 367, dtype=np.int64)
    assert _bits(solar.declination_spencer71(doy)) == _bits(
        solarposition.declination_spencer71(doy)
    )
    assert _bits(solar.equation_of_time_spencer71(doy)) == _bits(
        solarposition.equation_of_time_spencer71(doy)
    )
    hour = np.radians(np.linspace(-180.0, 180.0, 997))
    dec = np.resize(solarposition.declination_spencer71(doy), hour.shape)
    lat = np.radians(51.5)
    assert _bits(solar.solar_zenith_analytical(lat, hour, dec)) == _bits(
        solarposition.solar_zenith_analytical(lat, hour, dec)
    )


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 4_102_444_800), min_size=1, max_size=300),
    latitude=st.floats(-89.9, 89.9),
    longitude=st.floats(-180.0, 180.0),
)
def test_any_times_and_site_equal_pvlib_bit_for_bit(
    times: list[int], latitude: float, longitude: float
) -> None:
    t = np.asarray(times, dtype=np.int64)
    got = clear_sky_ghi_w_m2(t, latitude=latitude, longitude=longitude)
    assert _bits(got) == _bits(_pvlib_ghi(t, latitude=latitude, longitude=longitude))


def test_clear_sky_does_not_import_pvlib() -> None:
    code = (
        "import sys, numpy as np; from forecasting.solar import clear_sky_ghi_w_m2; "
        "clear_sky_ghi_w_m2(np.arange(0, 86400, 900), latitude=48.8, longitude=2.3); "
        "print('pvlib' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
