"""What a weather forecast could bring the CityLearn homes' day-ahead forecasts: an upper bound.

Earlier stops named "a weather-forecast input" as the missing ingredient for issue 12's and 13's
day-ahead bars (``docs/forecasting.md``, ``docs/federated.md``). The ``citylearn==2.0.0`` wheel our
homes come from ships ``weather.csv`` for the same year and place, with "6h / 12h / 24h
Prediction" columns. This script measures, from the wheel itself, how much any weather input can
do here::

    python benchmarks/weather_headroom.py                 # downloads the wheel with pip (16 MB)
    python benchmarks/weather_headroom.py --wheel FILE    # a wheel you already have

It prints three things:

1. **The "Prediction" columns are the measured values shifted**: the largest difference between
   the ``h``-hour prediction made at hour ``i`` and the measurement at ``i + h``. Zero means they
   are not forecasts but the future itself: using them would be an oracle, not a feature.
2. **The load, an oracle bound.** A day-ahead reference forecast of each home's hourly load (the
   median of the same hour over the 14 days before the forecast day), then the same plus a
   linear correction from the *measured* weather of the target hour and day (temperature,
   its square, the day's mean and maximum, humidity, irradiance), fitted on the first half of the
   year and scored on the second. Measured weather is what a perfect forecast would give, so the
   gain is an upper bound for any weather forecast used this way.
3. **The PV, an oracle bound.** The net (load − PV) error of the reference, and the same with the
   PV replaced by the measured PV: what a perfect PV forecast (perfect irradiance and a perfect
   model) would take off the net's day-ahead error.

Only numpy and the wheel's CSVs; no gridnode model is involved (the reference is a plain profile,
so gains measured against it are larger than they would be against the shipped forecasters).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# the repo's root before this folder, whose ``forecasting.py`` would shadow the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forecasting.data.build_citylearn import FOLDER, HOMES, download_wheel

HISTORY_DAYS = 14
_VARIABLES = (
    "Outdoor Drybulb Temperature [C]",
    "Relative Humidity [%]",
    "Diffuse Solar Radiation [W/m2]",
    "Direct Solar Radiation [W/m2]",
)


def _columns(raw: bytes) -> dict[str, np.ndarray]:
    rows = list(csv.reader(io.StringIO(raw.decode())))
    head = rows[0]
    body = np.array([[float(v) if v else np.nan for v in r] for r in rows[1:]])
    return {name: body[:, i] for i, name in enumerate(head)}


def prediction_gaps(weather: dict[str, np.ndarray]) -> list[tuple[str, int, float]]:
    """(variable, hours ahead, the largest |prediction at i − measurement at i + h|)."""
    out = []
    for name in _VARIABLES:
        measured = weather[name]
        for h in (6, 12, 24):
            pred = weather[f"{h}h Prediction {name}"]
            out.append((name, h, float(np.max(np.abs(pred[:-h] - measured[h:])))))
    return out


def profile_forecast(series: np.ndarray) -> np.ndarray:
    """Day-ahead reference: each hour of day ``d`` = the median of that hour over days
    ``d - 14 … d - 1`` (NaN for the first 14 days)."""
    days = series.reshape(-1, 24)
    out = np.full_like(days, np.nan)
    for d in range(HISTORY_DAYS, len(days)):
        out[d] = np.median(days[d - HISTORY_DAYS : d], axis=0)
    return out.ravel()


def _weather_features(weather: dict[str, np.ndarray]) -> np.ndarray:
    t = weather[_VARIABLES[0]]
    t_day = t.reshape(-1, 24)
    return np.column_stack(
        [
            np.ones_like(t),
            t,
            t * t,
            np.repeat(t_day.mean(axis=1), 24),
            np.repeat(t_day.max(axis=1), 24),
            weather[_VARIABLES[1]],
            weather[_VARIABLES[2]] + weather[_VARIABLES[3]],
        ]
    )


def load_bound(load: np.ndarray, features: np.ndarray) -> tuple[float, float, float]:
    """MAE on the second half of the year, Wh: the reference; the reference plus a median
    regression of its error on the measured weather fitted on the first half; the same fitted on
    the second half itself (in sample: the most any linear use of these inputs could give)."""
    from statsmodels.regression.quantile_regression import QuantReg  # noqa: PLC0415 - slow import

    ref = profile_forecast(load)
    ok = ~np.isnan(ref)
    half = len(load) // 2
    train = ok & (np.arange(len(load)) < half)
    test = ok & (np.arange(len(load)) >= half)
    x = np.column_stack([features, ref])
    x = x / np.maximum(np.abs(x[ok]).max(axis=0), 1e-9)  # columns on one scale for the solver

    def corrected_mae(fit_on: np.ndarray) -> float:
        coef = QuantReg(load[fit_on] - ref[fit_on], x[fit_on]).fit(q=0.5, max_iter=5000).params
        return float(np.mean(np.abs(load[test] - ref[test] - x[test] @ coef)))

    return (
        float(np.mean(np.abs(load[test] - ref[test]))),
        corrected_mae(train),
        corrected_mae(test),
    )


def pv_bound(load: np.ndarray, pv: np.ndarray) -> tuple[float, float]:
    """(net MAE of the reference, net MAE with the PV known exactly), whole year after day 14, Wh."""
    ref_net = profile_forecast(load) - profile_forecast(pv)
    perfect_pv = profile_forecast(load) - pv
    net = load - pv
    ok = ~np.isnan(ref_net)
    return (
        float(np.mean(np.abs(net[ok] - ref_net[ok]))),
        float(np.mean(np.abs(net[ok] - perfect_pv[ok]))),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", type=Path, help="a citylearn==2.0.0 wheel (default: pip download)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        if not wheel.is_file():
            ap.error(f"--wheel {wheel}: no such file")
        with zipfile.ZipFile(wheel) as z:
            weather = _columns(z.read(f"{FOLDER}/weather.csv"))
            schema = json.loads(z.read(f"{FOLDER}/schema.json"))
            homes = {k: _columns(z.read(f"{FOLDER}/Building_{k}.csv")) for k in HOMES}

    print("1. 'Prediction' columns vs the measurement h hours later (largest |difference|):")
    for name, h, gap in prediction_gaps(weather):
        print(f"   {name:34s} {h:2d} h  {gap:g}")

    features = _weather_features(weather)
    print("\n2. load, day-ahead, second half of the year (Wh per hour):")
    print(
        "   home  reference  +weather (fit 1st half)  +weather (in sample)"
        "  corr of daily changes (load, temp)"
    )
    t_day = weather[_VARIABLES[0]].reshape(-1, 24).mean(axis=1)
    gains = []
    for k, cols in homes.items():
        load = cols["Equipment Electric Power [kWh]"] * 1000.0
        ref, fixed, best = load_bound(load, features)
        day = load.reshape(-1, 24).mean(axis=1)
        corr = float(np.corrcoef(np.diff(day), np.diff(t_day))[0, 1])
        gains.append((fixed / ref - 1, best / ref - 1))
        print(
            f"   {k:4d}  {ref:9.1f}  {fixed:12.1f} {100 * (fixed / ref - 1):+6.1f} %"
            f"  {best:11.1f} {100 * (best / ref - 1):+6.1f} %  {corr:+.2f}"
        )
    med = 100 * np.median(np.array(gains), axis=0)
    print(f"   median change: fitted on the first half {med[0]:+.1f} %, in sample {med[1]:+.1f} %")

    print("\n3. net (load − PV), day-ahead, days 15–365 (Wh per hour):")
    print("   home  reference  PV known exactly  change")
    pv_gains = []
    for k, cols in homes.items():
        kw = float(schema["buildings"][f"Building_{k}"]["pv"]["attributes"]["nominal_power"])
        load = cols["Equipment Electric Power [kWh]"] * 1000.0
        pv = cols["Solar Generation [W/kW]"] * kw
        ref, exact = pv_bound(load, pv)
        pv_gains.append(1 - exact / ref)
        print(f"   {k:4d}  {ref:9.1f}  {exact:16.1f}  {100 * (exact / ref - 1):+6.1f} %")
    print(f"   median change {-100 * float(np.median(pv_gains)):+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
