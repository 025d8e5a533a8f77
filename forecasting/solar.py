"""Clear-sky irradiance for PV-aware forecasts (pvlib; pure and deterministic).

Rules of this module:

* Times are unix seconds UTC (ints), typically interval midpoints; the result is global horizontal
  irradiance in W/m² under a clear sky (Haurwitz model on pvlib's NREL SPA solar position), ``0`` when
  the sun is below the horizon.
* No I/O: the Haurwitz model needs only the solar zenith (unlike Ineichen, which reads turbidity
  tables from disk).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

from forecasting.series import FloatArray

__all__ = ["clear_sky_ghi_w_m2"]


def clear_sky_ghi_w_m2(times_s: npt.ArrayLike, *, latitude: float, longitude: float) -> FloatArray:
    """Clear-sky GHI (W/m²) at each unix second in ``times_s``."""
    import pvlib  # noqa: PLC0415 - optional at import time; only PV-aware models need it

    t = np.asarray(times_s, dtype=np.int64)
    index = pd.DatetimeIndex(pd.to_datetime(t, unit="s", utc=True))
    position = pvlib.solarposition.get_solarposition(
        index, latitude, longitude, method="nrel_numpy"
    )
    ghi = pvlib.clearsky.haurwitz(position["apparent_zenith"])["ghi"]
    out: FloatArray = np.nan_to_num(np.asarray(ghi, dtype=np.float64), nan=0.0)
    return out
