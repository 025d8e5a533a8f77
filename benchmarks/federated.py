"""Federated forecasting benchmark: cold-start and established households on real homes, what
differential privacy costs, and what a round costs.

Run from the repo root (≈ 4 CPU minutes per home set, rolling; ``--dp`` adds ≈ 10)::

    python benchmarks/federated.py [--homes test|tuning|both] [--frozen] [--dp] [--members 1000]
        [--json FILE] [--skip-accuracy] [--skip-cost] [--dp-sizes N…] [--dp-epsilons ε…]
        [--dp-homes test|tuning] [--no-profile-mix]

**Data and split.** The 13 clean CityLearn homes (``CITYLEARN_CLEAN_HOMES``, hourly, real load and
PV, 2016-08-01 → 2017-07-31) are the community. The community model is trained in :data:`ROUNDS`
**daily** rounds on data **before 2017-04-01** (the last at 2017-04-01 00:00 local, each on the
history known then; round 1 is least squares, the others IRLS steps warm-started from the previous
model, each summing the previous model's held-back error on the day since it was committed: the
daemon's default cadence); every figure is on origins from **2017-04-01 to 2017-07-30**, each
forecast by models fitted on data before its day only. **By default the evaluation runs the way the
daemon does** (*rolling*): the rounds go on at every local midnight of the evaluation (one round a
day, each on everything known by then; a household forecasts a day with that day's model) and every
household's own models are refitted every midnight too (the daemon's ``REFIT_EVERY_S``), so both
groups compare what a household actually gets, like for like. ``--frozen``: the benchmark before
that — the community model of 2017-04-01 and, for established households, local models fitted
once on the history before it, used unchanged through July. Households evaluated: the TEST homes
of ``docs/forecasting.md`` (2, 4, 6, 9, 11, 13, 16, 17), never used to choose a constant, and —
reported apart — the TUNING homes (1, 3, 5, 8, 10) on which the constants of this benchmark and of
the personal blend were chosen (``--homes``).

**Groups.** *Established*: the home's whole history before the origin's day (8–12 months: the data
set holds one year); local = ``profile-qr`` fitted on it; federated = the community model of all 13
homes blended with that local model. *Cold start*: the home has only the **14 days** before each
day's midnight, every day; local = what such a household has (``profile-qr`` needs 30 days, so its
fallback, seasonal naive on those 14 days); federated = the community model of the **other 12
homes** (leave-one-out: the home contributed nothing) blended with that fallback, refitted every
midnight. In both groups the household first corrects the community model on its own last days
(the MAP correction, :func:`forecasting.federated.personal_coefs`: on those 14 days for a
cold-start home, on its last 28 for an established one); the "community alone" column is the model
*without* that correction (a diagnostic), and "own profile alone" the household's median profile
of its last 14 days, which a cold-start household mixes into the community side
(:func:`forecasting.federated.profile_forecast`; local data only, a diagnostic). Horizons: *day-ahead* (origins at local midnight, the
next 24 h) and *next hour* (origins every hour, lead 0; blend weights fitted at midnight). MAE is
of the P50 of the net surplus in W over the homes, origins and leads.

**Differential privacy** (``--dp``; day-ahead only; frozen: the :data:`ROUNDS` rounds before the
cutoff are what the budget pays for): the same rounds with every member's update
clipped to L2 norm :data:`DP_CLIP` and Gaussian noise calibrated so that the :data:`ROUNDS` rounds
*together* are (ε, δ = 10⁻⁵)-DP for each household (:class:`forecasting.secagg.DpConfig` with
``rounds = ROUNDS``, composed exactly: :mod:`forecasting.dp`), for several total ε, in community
sizes: the real 13 homes
(12 for a cold-start home; through :func:`forecasting.federated_round.run_round`, masks and all),
and a community of ``N`` households *like these* (each real home's clipped update counted
``N / 13`` times; the noise of ``N`` members' shares, ``N(0, σ² N / t)``), because the noise of
user-level DP does not shrink with the community while the signal grows with it.

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
from forecasting.dp import gdp_epsilon
from forecasting.federated import (
    NO_MODEL,
    PROFILE_DAYS,
    CommunityModel,
    FederatedForecaster,
    Layout,
    SumNoise,
    community_forecast,
    dp_scale,
    dp_unscale,
    local_update,
    profile_forecast,
)
from forecasting.federated_round import run_round
from forecasting.models import FittedForecaster, Forecaster, QuantileForecast
from forecasting.profile_qr import ProfileQR
from forecasting.secagg import DpConfig, clip_l2, default_threshold, keypair_from_seed
from forecasting.series import SECONDS_PER_DAY, MeterHistory

TEST_HOMES = (2, 4, 6, 9, 11, 13, 16, 17)
TUNING_HOMES = (1, 3, 5, 8, 10)
SITE = {"latitude": CITYLEARN_LATITUDE, "longitude": CITYLEARN_LONGITUDE}
COLD_DAYS = 14


def local_midnight(y: int, m: int, d: int) -> int:
    return calendar.timegm((y, m, d, 0, 0, 0)) - CITYLEARN_UTC_OFFSET_S


CUTOFF_S = local_midnight(2017, 4, 1)
EVAL_END_S = local_midnight(2017, 7, 30)
#: daily rounds before the cutoff. Chosen on the tuning homes (cold start, day-ahead, community
#: model alone): 3 weekly rounds 603.1 W, 10 daily 587.9 W, 20 daily 587.0 W (the IRLS P50 has
#: settled after ~10 steps); the benchmark before this change held the 3 weekly rounds.
ROUNDS = 14
ROUNDS_S = tuple(CUTOFF_S - k * SECONDS_PER_DAY for k in range(ROUNDS - 1, -1, -1))
#: the evaluation's days (local midnights): day-ahead origins, and the daily refits
EVAL_DAYS_S = tuple(range(CUTOFF_S, EVAL_END_S, SECONDS_PER_DAY))
#: DP clip norm (update units, after :func:`forecasting.federated.dp_scale`): the scenarios'
#: default (``sims.scenario.DP_CLIP_NORM``). A member's pre-scaled update has a norm of 3–4·10⁹
#: (≈ 57 entries' worth of DP_UNIT = 2²⁵), the first round's unscaled one 10⁹–10¹⁰ (tuning homes),
#: so every update is scaled down to exactly this norm (which weighs members equally)
DP_CLIP = 1e9
DP_DELTA = 1e-5
#: the DP sweep: (community size, total ε over the ROUNDS rounds). Size 0 is the real homes; others
#: emulate N households like them. Without DP an emulated community gives the real homes' model
#: (the same pooled fit). The doc's table before the accounting stated ε per round: 14 rounds at
#: ε = 2 each are ε ≈ 9.3 in total (σ/C = 1.99), at ε = 1 each ε ≈ 4.4 (σ/C = 3.73).
DP_SETTINGS = (
    (0, 9.3),
    (1000, 2.0), (1000, 4.0), (1000, 9.3),
    (10000, 1.0), (10000, 2.0), (10000, 4.0), (10000, 9.3),
    (100000, 1.0), (100000, 2.0),
)  # fmt: skip


def keys_for(n: int, salt: int) -> list[tuple[bytes, bytes]]:
    return [keypair_from_seed((salt << 32 | k).to_bytes(32, "big")) for k in range(n)]


def round_times(rolling: bool) -> tuple[int, ...]:
    """When the rounds are held: :data:`ROUNDS_S` before the cutoff, then (``rolling``) one more at
    every local midnight of the evaluation, the daemon's daily cadence (module docstring)."""
    return ROUNDS_S + (EVAL_DAYS_S[1:] if rolling else ())


def in_force(models: dict[int, CommunityModel], day_s: int) -> CommunityModel:
    """The model a household forecasts with on ``day_s``: the last one committed by then."""
    return models[max(t for t in models if t <= day_s)]


def train_community(
    homes: MeterHistory,
    *,
    dp: DpConfig | None = None,
    size: int = 0,
    seed: int = 0,
    rolling: bool = False,
) -> tuple[dict[int, CommunityModel], list[dict[str, Any]]]:
    """The rounds of :func:`round_times` on what each home knew then (each round warm-started from
    the last, its held-back validation on the data since): secure rounds of the real homes
    (``size`` 0), or a community of ``size`` households like them (module docstring). Returns the
    model of every round by its time, and a log line per round."""
    model: CommunityModel | None = None
    models: dict[int, CommunityModel] = {}
    log = []
    keys = keys_for(homes.households, 1)
    times = round_times(rolling)
    for r, at in enumerate(times, start=1):
        since = None if model is None else times[r - 2]
        rng = None if dp is None else np.random.default_rng([seed, r])
        if size:
            model = _emulated_round(
                homes.until(at), r, previous=model, since=since, dp=dp, size=size, rng=rng
            )
        else:
            model, _stats, _ = run_round(
                [homes.until(at)], keys, r, model, since_s=since, dp=dp, rng=rng,
                **SITE,  # type: ignore[arg-type]
            )  # fmt: skip
        assert model is not None
        models[at] = model
        v = model.validation
        log.append(
            {"round": r, "contributors": model.contributors, "val_samples": v.samples,
             "val_mae_scale": round(v.mae, 4), "val_skill": round(v.skill, 4),
             "val_coverage": round(v.coverage, 3), "hash": model.hash.hex()[:16]}
        )  # fmt: skip
    return models, log


def _emulated_round(
    past: MeterHistory,
    r: int,
    *,
    previous: CommunityModel | None,
    since: int | None,
    dp: DpConfig | None,
    size: int,
    rng: np.random.Generator | None,
) -> CommunityModel:
    """The sum a round of ``size`` households like the rows of ``past`` would give: each row's
    (clipped) update counted ``size / rows`` times, plus the noise of ``size`` members' shares
    (each ``N(0, σ²/t)``, ``t`` the threshold): secure aggregation itself is exact, so it is left
    out here."""
    updates = local_update(past, previous=previous, since_s=since, **SITE)  # type: ignore[arg-type]
    scale = None if dp is None else dp_scale(previous, past.step_s)
    if dp is not None and scale is not None:  # as run_round does
        updates = np.stack([clip_l2(np.rint(row * scale).astype(np.int64), dp.clip_norm)
                            for row in updates])  # fmt: skip
    total = np.rint(updates.astype(np.float64).sum(axis=0) * (size / past.households))
    noise = None
    if dp is not None and scale is not None:
        assert rng is not None
        spread = dp.sigma * np.sqrt(size / default_threshold(size))
        total = np.rint(total + rng.normal(0.0, spread, total.shape))
        noise = SumNoise.of(spread, scale, Layout(past.step_s))
    summed = total.astype(np.int64)
    return CommunityModel.of(
        summed if scale is None else dp_unscale(summed, scale), round=r, step_s=past.step_s,
        contributors=size, previous=NO_MODEL if previous is None else previous.hash, noise=noise,
    )  # fmt: skip


def evaluate(
    homes: MeterHistory,
    make: Any,
    *,
    cold: bool,
    refit_daily: bool,
    horizons: tuple[str, ...] = ("da", "nh"),
) -> dict[str, float]:
    """Mean |P50 − actual| of local, federated and community-alone forecasts, per horizon.
    ``make(past, day_s)`` fits them on ``past`` for ``day_s``; a cold-start household (the last
    :data:`COLD_DAYS` days) refits every day, an established one (its whole history) every day when
    ``refit_daily`` (the daemon's cadence), else once on the history before the cutoff."""
    s = homes.steps_per_day
    names = ("local", "fed", "com", "prof")
    err = {f"{h}_{m}": 0.0 for h in horizons for m in names}
    count = dict.fromkeys(horizons, 0)
    fitted = None
    for day in EVAL_DAYS_S:
        start = day - COLD_DAYS * SECONDS_PER_DAY if cold else homes.start_s
        if fitted is None or cold or refit_daily:
            fitted = make(homes.window(start, day), day)
        assert fitted is not None
        actual = homes.window(day, day + SECONDS_PER_DAY).net_w
        if "da" in horizons:
            for k, model in enumerate(fitted):
                p = model.predict(homes.window(start, day), s).median_w
                err[f"da_{names[k]}"] += float(np.abs(p - actual).sum())
            count["da"] += actual.size
        if "nh" in horizons:
            for h in range(s):
                past = homes.window(start, day + h * homes.step_s)
                for k, model in enumerate(fitted):
                    p = model.predict(past, 1).median_w[:, 0]
                    err[f"nh_{names[k]}"] += float(np.abs(p - actual[:, h]).sum())
                count["nh"] += actual.shape[0]
    return {
        **{k: v / count[k[:2]] for k, v in err.items()},
        **{f"samples_{h}": count[h] for h in horizons},
    }


@dataclass(frozen=True)
class CommunityAlone:
    """The community model without the personal blend (a diagnostic column)."""

    model: CommunityModel

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        return community_forecast(self.model, history, horizon, **SITE)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProfileAlone:
    """The household's own median profile of its last :data:`PROFILE_DAYS` days, which a
    cold-start household mixes into the community side (a diagnostic column: local data only)."""

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        return profile_forecast(history, horizon, PROFILE_DAYS)


def _forecasters(models: dict[int, CommunityModel], profile_days: int = PROFILE_DAYS) -> Any:
    local_model: Forecaster = ProfileQR(**SITE)  # type: ignore[arg-type]

    def make(past: MeterHistory, day_s: int) -> tuple[FittedForecaster, ...]:
        model = in_force(models, day_s)
        fed = FederatedForecaster(model, local_model, profile_days=profile_days, **SITE).fit(  # type: ignore[arg-type]
            past
        )
        return fed.local, fed, CommunityAlone(model), ProfileAlone()

    return make


def accuracy(
    which: tuple[int, ...],
    *,
    dp: DpConfig | None = None,
    size: int = 0,
    horizons: tuple[str, ...] = ("da", "nh"),
    rolling: bool = True,
    verbose: bool = True,
    profile_days: int = PROFILE_DAYS,
) -> dict[str, Any]:
    """Both groups on the homes ``which`` (module docstring); ``dp``/``size``: the DP sweep;
    ``rolling``: rounds and local refits continue daily through the evaluation (the daemon's
    cadence), else the models are frozen at the cutoff; ``profile_days``: the cold-start profile
    mix (on by default, as in the daemon; 0: off, ``--no-profile-mix``)."""
    homes = load_citylearn_homes(CITYLEARN_CLEAN_HOMES)
    rows = [CITYLEARN_CLEAN_HOMES.index(h) for h in which]
    t0 = time.process_time()
    community, log = train_community(homes, dp=dp, size=size, seed=0, rolling=rolling)
    established = evaluate(homes.select(rows), _forecasters(community, profile_days), cold=False,
                           refit_daily=rolling, horizons=horizons)  # fmt: skip
    cold_sum: dict[str, float] = {}
    for row, home in zip(rows, which, strict=True):
        others = [k for k in range(homes.households) if k != row]
        loo, _ = train_community(homes.select(others), dp=dp, size=size, seed=home, rolling=rolling)
        one = evaluate(homes.select([row]), _forecasters(loo, profile_days), cold=True, refit_daily=rolling,
                       horizons=horizons)  # fmt: skip
        for k, v in one.items():
            cold_sum[k] = cold_sum.get(k, 0.0) + v
        if verbose:
            print(f"  cold home {home}: " + ", ".join(
                f"{h} {one[f'{h}_local']:.0f} → {one[f'{h}_fed']:.0f} W (community alone "
                f"{one[f'{h}_com']:.0f}, own profile alone {one[f'{h}_prof']:.0f})"
                for h in horizons), flush=True)  # fmt: skip
    cold = {k: v / len(rows) for k, v in cold_sum.items()}
    out: dict[str, Any] = {"homes": list(which), "rolling": rolling, "rounds": log,
                           "cpu_s": round(time.process_time() - t0, 1)}  # fmt: skip
    for name, res in (("established", established), ("cold_start_14d", cold)):
        out[name] = {
            f"{h}_{m}_mae_w": round(res[f"{h}_{m}"], 1)
            for h in horizons
            for m in ("local", "fed", "com", "prof")
        }
        for h in horizons:
            out[name][f"{h}_fed_vs_local"] = round(1.0 - res[f"{h}_fed"] / res[f"{h}_local"], 4)
    return out


def dp_sweep(
    which: tuple[int, ...],
    sizes: tuple[int, ...] | None = None,
    epsilons: tuple[float, ...] | None = None,
) -> list[dict[str, Any]]:
    """Day-ahead MAE of both groups under DP, per community size and total ε (module docstring)."""
    out = []
    settings = DP_SETTINGS
    if epsilons is not None:
        settings = tuple(
            (size, eps) for size in sorted({s for s, _ in DP_SETTINGS}) for eps in epsilons
        )
    for size, eps in settings:
        if sizes is not None and size not in sizes:
            continue
        dp = DpConfig(eps, DP_DELTA, DP_CLIP, rounds=ROUNDS)
        acc = accuracy(which, dp=dp, size=size, horizons=("da",), rolling=False, verbose=False)
        row = {"size": size or len(CITYLEARN_CLEAN_HOMES), "emulated": bool(size),
               "epsilon_total": eps, "rounds": ROUNDS,
               "epsilon_per_round": round(gdp_epsilon(1.0 / dp.noise_multiplier, DP_DELTA), 3),
               "sigma_over_clip": round(dp.noise_multiplier, 3)}  # fmt: skip
        for g in ("established", "cold_start_14d"):
            row[g] = acc[g]
        out.append(row)
        print(_dp_line(row), flush=True)
    return out


def _dp_line(row: dict[str, Any]) -> str:
    e, c = row["established"], row["cold_start_14d"]
    size = f"{row['size']}{' (emulated)' if row['emulated'] else ' real homes'}"
    eps = (f"ε = {row['epsilon_total']} over {row['rounds']} rounds (σ/C {row['sigma_over_clip']}, "
           f"ε {row['epsilon_per_round']} per round alone)")  # fmt: skip
    return (
        f"DP {size:>18}, {eps:>9}: day-ahead established fed {e['da_fed_mae_w']} W "
        f"({100 * e['da_fed_vs_local']:+.1f} % vs local {e['da_local_mae_w']}; community alone "
        f"{e['da_com_mae_w']}), cold start fed {c['da_fed_mae_w']} W "
        f"({100 * c['da_fed_vs_local']:+.1f} % vs local {c['da_local_mae_w']}; community alone "
        f"{c['da_com_mae_w']})"
    )


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
    parser.add_argument("--skip-cost", action="store_true", help="no round-cost measurement")
    parser.add_argument("--homes", choices=("test", "tuning", "both"), default="both")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--dp", action="store_true", help="also the DP sweep (test homes)")
    parser.add_argument("--dp-sizes", type=int, nargs="+", help="only these sizes (0: real homes)")
    parser.add_argument("--dp-epsilons", type=float, nargs="+", help="these total ε (every size)")
    parser.add_argument(
        "--dp-homes",
        choices=("test", "tuning"),
        default="test",
        help="homes the DP sweep evaluates (choices were made on tuning)",
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="models frozen at the cutoff (the benchmark before rolling rounds)",
    )
    parser.add_argument(
        "--no-profile-mix",
        action="store_true",
        help="cold-start households do not mix their own median profile in (stop 23's blend)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    sets = {"tuning": TUNING_HOMES, "test": TEST_HOMES}
    chosen = ("tuning", "test") if args.homes == "both" else (args.homes,)
    if not args.skip_accuracy:
        for name in chosen:
            print(f"{name} homes {sets[name]}:", flush=True)
            out[f"accuracy_{name}"] = acc = accuracy(
                sets[name],
                rolling=not args.frozen,
                profile_days=0 if args.no_profile_mix else PROFILE_DAYS,
            )
            for r in acc["rounds"][-2:]:
                print(f"  round {r['round']}: {r}")
            for group in ("established", "cold_start_14d"):
                g = acc[group]
                print(
                    f"  {name} {group:>15}: day-ahead MAE local {g['da_local_mae_w']} W, federated "
                    f"{g['da_fed_mae_w']} W ({100 * g['da_fed_vs_local']:+.1f} % lower); next hour "
                    f"local {g['nh_local_mae_w']} W, federated {g['nh_fed_mae_w']} W "
                    f"({100 * g['nh_fed_vs_local']:+.1f} % lower); community alone "
                    f"{g['da_com_mae_w']} / {g['nh_com_mae_w']} W; own {PROFILE_DAYS}-day median "
                    f"profile alone {g['da_prof_mae_w']} / {g['nh_prof_mae_w']} W",
                    flush=True,
                )
    if args.dp:
        out["dp"] = dp_sweep(
            sets[args.dp_homes],
            None if args.dp_sizes is None else tuple(args.dp_sizes),
            None if args.dp_epsilons is None else tuple(args.dp_epsilons),
        )
    if args.skip_cost:
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        return 0
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
