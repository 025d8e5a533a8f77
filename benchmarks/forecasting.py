"""Forecasting benchmark: skill and cost per model on the real household, cost for 1,000
households, and the bidding policies' money on a real-data community.

Run from the repo root (about 7 minutes on 2 shared cores with --prophet, most of it fitting
1,000 households; --quick takes under a minute)::

    python benchmarks/forecasting.py [--quick] [--prophet] [--json out.json]

Prints figures; asserts nothing (targets are checked in tests/forecasting/test_backtest.py).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "OPENBLAS_NUM_THREADS", "1"
)  # statsmodels/numpy: threads cost more than they give

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forecasting.backtest import backtest, format_table
from forecasting.data import (
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    SHIPPED_UTC_OFFSET_S,
    load_shipped,
)
from forecasting.evaluate import community_from, evaluate_policies
from forecasting.models import QuantileRegression
from forecasting.prophet_model import prophet_available
from forecasting.registry import DEFAULT_MODELS, build_model
from market.settlement import Netting, Tariff


def local(y: int, m: int, d: int) -> int:
    return calendar.timegm((y, m, d, 0, 0, 0)) - SHIPPED_UTC_OFFSET_S


def skill(quick: bool, with_prophet: bool) -> dict[str, Any]:
    hourly = load_shipped(step_s=3600)
    names = list(DEFAULT_MODELS)
    end = local(2009, 3, 1) if quick else local(2010, 1, 1)
    models = [
        build_model(n, horizon=24, latitude=SHIPPED_LATITUDE, longitude=SHIPPED_LONGITUDE)
        for n in names
    ]
    report = backtest(
        hourly, models, start_s=local(2009, 1, 1), end_s=end, horizon=24, clock=time.perf_counter
    )
    print("== day-ahead net surplus, real household, hourly, daily origins at local midnight")
    print(format_table(report))
    out = {"backtest": report.to_json()}
    if with_prophet:
        if not prophet_available():
            print("(prophet not installed: skipped)")
        else:
            pr = backtest(
                hourly,
                [build_model("prophet", horizon=24)],
                start_s=local(2009, 1, 1),
                end_s=end,
                horizon=24,
                refit_every_days=1,
                clock=time.perf_counter,
            )
            print("== prophet, refit daily on the last 30 days")
            print(format_table(pr))
            out["prophet"] = pr.to_json()
    return out


def scale(n: int) -> dict[str, float]:
    hourly = load_shipped(step_s=3600)
    community = community_from(hourly, [1.0 if i % 2 == 0 else 0.0 for i in range(n)])
    past = community.until(local(2009, 6, 1))
    figures: dict[str, float] = {}
    print(f"== cost for {n} households (one forecast of 24 h each; fit is per refit)")
    for name in ("seasonal-naive-day", "quantile-regression", "components"):
        model = build_model(
            name, horizon=24, latitude=SHIPPED_LATITUDE, longitude=SHIPPED_LONGITUDE
        )
        t0 = time.perf_counter()
        fitted = model.fit(past)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fitted.predict(past, 24)
        pred_s = time.perf_counter() - t0
        figures[f"{name}.fit_ms_per_household"] = 1000 * fit_s / n
        figures[f"{name}.predict_ms_per_household"] = 1000 * pred_s / n
        print(f"{name:<22} fit {1000 * fit_s / n:8.3f} ms/household   "
              f"predict {1000 * pred_s / n:8.4f} ms/household ({pred_s:.3f} s for all)")  # fmt: skip
    sample = community.select(list(range(10))).until(local(2009, 6, 1))
    all_phases = QuantileRegression(horizon=24, origin_steps_of_day=tuple(range(24)))
    t0 = time.perf_counter()
    all_phases.fit(sample.select([0]))
    figures["quantile-regression.fit_24_origin_hours_s_per_household"] = time.perf_counter() - t0
    print(f"quantile-regression, all 24 origin hours (daemon re-forecasting hourly): fit "
          f"{figures['quantile-regression.fit_24_origin_hours_s_per_household']:.2f} s/household")  # fmt: skip
    autoreg = build_model("autoreg", horizon=24)
    t0 = time.perf_counter()
    autoreg.fit(sample).predict(sample, 24)
    figures["autoreg.predict_ms_per_household"] = 1000 * (time.perf_counter() - t0) / 10
    print(f"{'autoreg':<22} fit+predict {figures['autoreg.predict_ms_per_household']:8.2f} "
          "ms/household (measured on 10)")  # fmt: skip
    return figures


def policies(quick: bool) -> dict[str, Any]:
    hourly = load_shipped(step_s=3600)
    scales = [1.0, 0.0, 1.5, 0.0, 0.7, 0.0, 1.2, 0.0, 2.0, 0.0]
    community = community_from(hourly, scales)
    tariff = Tariff(retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000)
    out: dict[str, Any] = {}
    days = 28 if quick else 365
    for netting in (Netting.NONE, Netting.COMMUNITY):
        results = evaluate_policies(
            community, start_s=local(2009, 1, 1), days=days, tariff=tariff, netting=netting
        )
        grid = results[0].grid_only_bill_micro
        perfect = results[-1].savings_micro
        print(f"== policies: {len(scales)} households (5 with PV), {days} days from 2009-01-01, "
              f"hourly slots, retail 0.30 / feed-in 0.08 ¤/kWh, netting {netting.value}")  # fmt: skip
        print(
            f"{'policy':<20}{'cost ¤':>10}{'saved ¤':>10}{'saved':>8}{'of perfect':>11}{'traded kWh':>12}"
        )
        for r in results:
            share = 100 * r.savings_micro / perfect if perfect else 0.0
            print(f"{r.policy:<20}{r.community_bill_micro / 1e6:>10.2f}{r.savings_micro / 1e6:>10.2f}"
                  f"{100 * r.savings_micro / grid:>7.2f}%{share:>10.1f}%{r.traded_wh / 1000:>12.1f}")  # fmt: skip
        out[netting.value] = [r.to_json() for r in results]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 months, 100 households, 28 days")
    parser.add_argument("--prophet", action="store_true", help="also backtest prophet (slow)")
    parser.add_argument("--json", type=Path, help="write all figures as JSON")
    args = parser.parse_args()
    t0 = time.perf_counter()
    doc = {
        "skill": skill(args.quick, args.prophet),
        "scale": scale(100 if args.quick else 1000),
        "policies": policies(args.quick),
    }
    print(f"(benchmark took {time.perf_counter() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
