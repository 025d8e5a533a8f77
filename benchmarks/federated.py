"""Federated forecasting benchmark: cold-start and established households on real homes, and what a
round costs.

Run from the repo root (a few minutes on 2 shared cores)::

    python benchmarks/federated.py [--members 1000] [--json FILE]

**Data and split.** The 13 clean CityLearn homes (``CITYLEARN_CLEAN_HOMES``, hourly, real load and
PV, 2016-08-01 → 2017-07-31) are the community. Training and evaluation periods are disjoint:
the community model is trained in three weekly-spaced rounds on data **before 2017-04-01**
(rounds at 2017-03-18, 03-25 and 04-01, each on the history known then; round 1 is least
squares, rounds 2 and 3 are IRLS steps, and each round sums the previous model's held-back error
on the week since it was committed); local models are fitted on the same past; every figure is
on origins from **2017-04-01 to 2017-07-30** that no model saw. Households evaluated are the TEST
homes of ``docs/forecasting.md`` (2, 4, 6, 9, 11, 13, 16, 17), never used to choose a constant.

**Groups.** *Established*: the home's whole history before the origin (8–12 months: the data set
holds one year); local = ``profile-qr`` fitted on everything before 2017-04-01; federated = the
community model of all 13 homes blended with that local model. *Cold start*: the home has only the
**14 days** before each day's midnight; local = what such a household has (``profile-qr`` needs
30 days, so its fallback, seasonal naive on those 14 days); federated = the community model of the
**other 12 homes** (leave-one-out: the home contributed nothing) blended with that fallback,
refitted every midnight. Horizons: *day-ahead* (origins at local midnight, the next 24 h) and
*next hour* (origins every hour, lead 0; blend weights fitted at midnight). MAE is of the P50 of
the net surplus in W over all test homes, origins and leads.

**Round cost.** ``--members`` households (default 1,000) synthesised from the 13 homes (each a
random home, shifted by −3…+3 days, scaled by 0.8–1.25), one in-process round
(:func:`forecasting.federated_round.run_round`: every member's update on a year of hourly history,
masking, two dropped members, their neighbours' seed reveals, the exact sum, the model): CPU
seconds (``time.process_time``, one BLAS thread) and bytes each member sent.

Prints figures; asserts nothing (what the tests check: ``tests/forecasting/test_federated*.py``).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from forecasting.data import (
    CITYLEARN_CLEAN_HOMES,
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    CITYLEARN_UTC_OFFSET_S,
    load_citylearn_homes,
)
from forecasting.federated import CommunityModel, FederatedForecaster, community_forecast
from forecasting.federated_round import run_round
from forecasting.models import FittedForecaster, Forecaster, QuantileForecast
from forecasting.profile_qr import ProfileQR
from forecasting.secagg import keypair_from_seed
from forecasting.series import SECONDS_PER_DAY, MeterHistory

TEST_HOMES = (2, 4, 6, 9, 11, 13, 16, 17)
SITE = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}
COLD_DAYS = 14


def local_midnight(y: int, m: int, d: int) -> int:
    return calendar.timegm((y, m, d, 0, 0, 0)) - CITYLEARN_UTC_OFFSET_S


CUTOFF_S = local_midnight(2017, 4, 1)
EVAL_END_S = local_midnight(2017, 7, 30)
ROUNDS_S = (CUTOFF_S - 14 * SECONDS_PER_DAY, CUTOFF_S - 7 * SECONDS_PER_DAY, CUTOFF_S)


def keys_for(n: int, salt: int) -> list[tuple[bytes, bytes]]:
    return [keypair_from_seed((salt << 32 | k).to_bytes(32, "big")) for k in range(n)]


def train_community(homes: MeterHistory) -> tuple[CommunityModel, list[dict[str, Any]]]:
    """Three rounds at ROUNDS_S on what each home knew then."""
    model: CommunityModel | None = None
    log = []
    keys = keys_for(homes.households, 1)
    for r, at in enumerate(ROUNDS_S, start=1):
        since = None if model is None else ROUNDS_S[r - 2]
        model, _stats, _ = run_round([homes.until(at)], keys, r, model, since_s=since, **SITE)  # type: ignore[arg-type]
        assert model is not None
        v = model.validation
        log.append(
            {"round": r, "contributors": model.contributors, "val_samples": v.samples,
             "val_mae_scale": round(v.mae, 4), "val_skill": round(v.skill, 4),
             "val_coverage": round(v.coverage, 3), "hash": model.hash.hex()[:16]}
        )  # fmt: skip
    assert model is not None
    return model, log


def evaluate(
    homes: MeterHistory,
    fit_at: dict[int, tuple[FittedForecaster, ...]] | None,
    make: Any,
    *,
    cold: bool,
) -> dict[str, float]:
    """Mean |P50 − actual| of local, federated and community-alone forecasts, per horizon."""
    s = homes.steps_per_day
    names = ("local", "fed", "com")
    err = {f"{h}_{m}": 0.0 for h in ("da", "nh") for m in names}
    count = {"da": 0, "nh": 0}
    fitted = None if fit_at is None else fit_at[0]
    for day in range(CUTOFF_S, EVAL_END_S, SECONDS_PER_DAY):
        start = day - COLD_DAYS * SECONDS_PER_DAY if cold else homes.start_s
        if fitted is None or cold:
            fitted = make(homes.window(start, day))
        assert fitted is not None
        actual = homes.window(day, day + SECONDS_PER_DAY).net_w
        for k, model in enumerate(fitted):
            p = model.predict(homes.window(start, day), s).median_w
            err[f"da_{names[k]}"] += float(np.abs(p - actual).sum())
        count["da"] += actual.size
        for h in range(s):
            past = homes.window(start, day + h * homes.step_s)
            for k, model in enumerate(fitted):
                p = model.predict(past, 1).median_w[:, 0]
                err[f"nh_{names[k]}"] += float(np.abs(p - actual[:, h]).sum())
            count["nh"] += actual.shape[0]
    return {
        **{k: v / count[k[:2]] for k, v in err.items()},
        "samples_da": count["da"],
        "samples_nh": count["nh"],
    }


@dataclass(frozen=True)
class CommunityAlone:
    """The community model without the personal blend (a diagnostic column)."""

    model: CommunityModel

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        return community_forecast(self.model, history, horizon, **SITE)  # type: ignore[arg-type]


def accuracy() -> dict[str, Any]:
    homes = load_citylearn_homes(CITYLEARN_CLEAN_HOMES)
    rows = [CITYLEARN_CLEAN_HOMES.index(h) for h in TEST_HOMES]
    t0 = time.process_time()
    community, log = train_community(homes)
    local_model: Forecaster = ProfileQR(**SITE)  # type: ignore[arg-type]

    def both(model: CommunityModel | None) -> Any:
        def make(past: MeterHistory) -> tuple[FittedForecaster, ...]:
            fed = FederatedForecaster(model, local_model, **SITE).fit(past)  # type: ignore[arg-type]
            assert model is not None
            return fed.local, fed, CommunityAlone(model)

        return make

    test = homes.select(rows)
    established = evaluate(test, None, both(community), cold=False)
    cold_sum: dict[str, float] = {}
    for row, home in zip(rows, TEST_HOMES, strict=True):
        others = [k for k in range(homes.households) if k != row]
        loo, _ = train_community(homes.select(others))
        one = evaluate(homes.select([row]), None, both(loo), cold=True)
        for k, v in one.items():
            cold_sum[k] = cold_sum.get(k, 0.0) + v
        print(f"  cold home {home}: day-ahead {one['da_local']:.0f} → {one['da_fed']:.0f} W "
              f"(community alone {one['da_com']:.0f}), next hour {one['nh_local']:.0f} → "
              f"{one['nh_fed']:.0f} W ({one['nh_com']:.0f})", flush=True)  # fmt: skip
    cold = {k: v / len(rows) for k, v in cold_sum.items()}
    out: dict[str, Any] = {"rounds": log, "cpu_s": round(time.process_time() - t0, 1)}
    for name, res in (("established", established), ("cold_start_14d", cold)):
        out[name] = {
            f"{h}_{m}_mae_w": round(res[f"{h}_{m}"], 1)
            for h in ("da", "nh")
            for m in ("local", "fed", "com")
        }
        for h in ("da", "nh"):
            out[name][f"{h}_fed_vs_local"] = round(1.0 - res[f"{h}_fed"] / res[f"{h}_local"], 4)
    return out


def synthetic(n: int, seed: int) -> MeterHistory:
    homes = load_citylearn_homes(CITYLEARN_CLEAN_HOMES)
    assert homes.pv_w is not None and homes.load_w is not None
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, homes.households, n)
    shift = rng.integers(-3, 4, n) * homes.steps_per_day
    scale = rng.uniform(0.8, 1.25, n)[:, None]
    pv = np.stack([np.roll(homes.pv_w[i], d) for i, d in zip(pick, shift, strict=True)]) * scale
    load = np.stack([np.roll(homes.load_w[i], d) for i, d in zip(pick, shift, strict=True)]) * scale
    return MeterHistory.from_components(
        pv, load, start_s=homes.start_s, step_s=homes.step_s, utc_offset_s=homes.utc_offset_s
    )


def round_cost(members: int) -> dict[str, Any]:
    big = synthetic(members, 7)
    keys = keys_for(members, 2)
    first, _, _ = run_round([big.until(ROUNDS_S[0])], keys, 1, None, **SITE)  # type: ignore[arg-type]
    model, stats, _ = run_round(
        [big.until(ROUNDS_S[1])], keys, 2, first, dropped=[0, 1], since_s=ROUNDS_S[0],
        cpu_clock=time.process_time, **SITE,  # type: ignore[arg-type]
    )  # fmt: skip
    assert model is not None
    return {
        "members": members,
        "contributors": stats.contributors,
        "attempts": stats.attempts,
        "update_entries": stats.update_entries,
        "max_bytes_per_member": stats.max_bytes_per_member,
        "mean_bytes_per_member": stats.total_bytes // stats.contributors,
        "round_cpu_s": round(stats.cpu_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if not args.skip_accuracy:
        out["accuracy"] = acc = accuracy()
        for r in acc["rounds"]:
            print(f"round {r['round']}: {r}")
        for name in ("established", "cold_start_14d"):
            g = acc[name]
            print(
                f"{name:>15}: day-ahead MAE local {g['da_local_mae_w']} W, federated "
                f"{g['da_fed_mae_w']} W ({100 * g['da_fed_vs_local']:+.1f} % lower); next hour "
                f"local {g['nh_local_mae_w']} W, federated {g['nh_fed_mae_w']} W "
                f"({100 * g['nh_fed_vs_local']:+.1f} % lower); community alone "
                f"{g['da_com_mae_w']} / {g['nh_com_mae_w']} W"
            )
    out["round"] = cost = round_cost(args.members)
    print(
        f"round of {cost['members']} households ({cost['contributors']} contributed, 2 dropped): "
        f"{cost['round_cpu_s']} s CPU; {cost['max_bytes_per_member']} bytes sent per member at "
        f"most ({cost['update_entries']} int64 entries)"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
