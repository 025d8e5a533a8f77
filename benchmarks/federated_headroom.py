"""How much day-ahead accuracy is left for cold-start households, and what clustered community
models (Briggs et al. 2021; IFCA, Ghosh et al. 2020) give them: issue 13's cold-start bar.

Run from the repo root (≈ 2 CPU minutes for the tuning homes, 1 more per ``--clusters`` value)::

    python benchmarks/federated_headroom.py [--homes tuning|test] [--clusters K…] [--json FILE]

The setting is ``benchmarks/federated.py``'s cold-start group, day-ahead, rolling (the 13 clean
CityLearn homes; a cold home has the 14 days before each evaluation day's midnight; the community
is the other 12 homes, trained in daily rounds before and through the evaluation, 2017-04-01 →
07-30; the personal blend refitted every midnight), so the blend's figure here is that benchmark's
``cold_start_14d`` day-ahead federated MAE (tuning homes: 564.4 W, local 699.7 W).

**Headroom** (always). Every day, for every cold home, the day-ahead P50 of each *ingredient* a
two-week-old household has — the MAP-corrected community model, the uncorrected one, its own
14-day median profile of the net, the fallback (seasonal naive) — and of the blend
(:class:`forecasting.federated.FederatedForecaster`, the default). Then the **hindsight bound**:
per lead (0–23 h) the fixed convex weights of (corrected community, profile, fallback) that give
the lowest MAE *on the same homes and days* (a simplex grid, step :data:`GRID`). No blending rule
that sees only these three forecasts with one weight per lead can beat it on these homes; a rule
has to estimate its weights from the household's own few days, so it ends above it.

**Clusters** (``--clusters K``): the community trains ``K`` models (pooled IRLS rounds as in
``forecasting.federated``; a cluster's model is the exact sum of its members' updates, which
secure aggregation of that cluster would give). Before the first round members are split by
k-means of their normalised mean daily load shape (a stand-in for a federated k-means); from
the second round on each member joins the cluster whose previous model has the lowest P50 error
on its own last 14 days (computed locally: IFCA). A cold-start household picks the cluster whose
model fits its own 14 days best (``fit``), or mixes the blends of all ``K`` models with odds
``(1/e)^4`` (``soft``); either way it then runs the default personal blend on that model. Also
printed: how many members each cluster had (every 20th round) — a cluster of one member would
show that member's update to the aggregator in the clear (``docs/federated.md``, threat model).

Prints figures; asserts nothing. Nothing here changes what a household does: it measures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.federated import (
    COLD_DAYS,
    EVAL_DAYS_S,
    SITE,
    TEST_HOMES,
    TUNING_HOMES,
    in_force,
    round_times,
    train_community,
)
from forecasting import federated as fed
from forecasting.data import CITYLEARN_CLEAN_HOMES, load_citylearn_homes
from forecasting.federated import (
    PROFILE_DAYS,
    CommunityModel,
    FederatedForecaster,
    community_forecast,
    local_update,
    pooled_model,
    profile_forecast,
)
from forecasting.profile_qr import ProfileQR
from forecasting.series import SECONDS_PER_DAY, FloatArray, MeterHistory

#: the hindsight bound's simplex grid step
GRID = 0.02
#: IFCA: a member's (and a cold household's) fit of each cluster model is on its last days
ASSIGN_DAYS = 14
INGREDIENTS = ("blend", "corrected", "uncorrected", "profile", "fallback")


def _site() -> tuple[float, float, None, None]:
    return (SITE["latitude"], SITE["longitude"], None, None)


def _samples(history: MeterHistory, days: int) -> tuple[FloatArray, FloatArray]:
    """Every row's training samples of its last ``days`` days: ``x (n, B, N, F)``, ``y (n, B,
    N)`` in scale units (what :func:`forecasting.federated.local_update` would sum)."""
    s = history.steps_per_day
    span = min(history.steps, (days + fed.LAG_DAYS + 2) * s)
    tail = history.window(history.end_s - span * history.step_s, history.end_s)
    lat, lon, _, _ = _site()
    series = fed._series(
        tail, 0, latitude=lat, longitude=lon, holiday_country=None, holiday_subdiv=None
    )
    x, y, _ = fed._training_rows(tail, series, max_origins=fed.MAX_ORIGINS, train_days=days)
    return x, y


def _fit_errors(history: MeterHistory, models: list[CommunityModel]) -> FloatArray:
    """``(n, K)``: each row's mean |P50 error| (scale units) of each model on its last days."""
    x, y = _samples(history, ASSIGN_DAYS)
    return np.stack(
        [np.abs(y - np.einsum("nbsf,bf->nbs", x, m.coefs[:, 1])).mean(axis=(1, 2)) for m in models],
        axis=1,
    )


def _kmeans(z: FloatArray, k: int, iters: int = 50) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Deterministic k-means (farthest-point start) of the rows of ``z``."""
    centres = [z[int(np.argmax(np.linalg.norm(z - z.mean(axis=0), axis=1)))]]
    while len(centres) < k:
        near = np.min([np.linalg.norm(z - c, axis=1) for c in centres], axis=0)
        centres.append(z[int(np.argmax(near))])
    c = np.array(centres)
    a = np.zeros(len(z), dtype=np.int64)
    for _ in range(iters):
        a = np.argmin(((z[:, None] - c[None]) ** 2).sum(axis=-1), axis=1)
        c = np.array([z[a == j].mean(axis=0) if (a == j).any() else c[j] for j in range(k)])
    return a


def train_clusters(
    community: MeterHistory, k: int
) -> tuple[dict[int, list[CommunityModel]], list[list[int]]]:
    """IFCA rounds at :func:`benchmarks.federated.round_times` (rolling): the ``k`` models of
    every round by its time, and each round's cluster sizes (module docstring)."""
    s = community.steps_per_day
    lat, lon, _, _ = _site()
    times = round_times(True)
    first = community.until(times[0])
    assert first.load_w is not None
    days = first.steps // s
    shape = first.load_w[:, : days * s].reshape(first.households, days, s).mean(axis=1)
    assign = _kmeans(shape / shape.mean(axis=1, keepdims=True), k)
    previous: list[CommunityModel | None] = [None] * k
    models: dict[int, list[CommunityModel]] = {}
    sizes = []
    for r, at in enumerate(times, start=1):
        past = community.until(at)
        if all(m is not None for m in previous):
            assign = np.argmin(_fit_errors(past, [m for m in previous if m is not None]), axis=1)
        now: list[CommunityModel | None] = []
        for j in range(k):
            rows = [int(i) for i in np.flatnonzero(assign == j)]
            if not rows:  # an empty cluster keeps its last model
                now.append(previous[j])
                continue
            update = local_update(
                past.select(rows), previous=previous[j], latitude=lat, longitude=lon
            )
            now.append(pooled_model(update, round=r, step_s=past.step_s, previous=previous[j]))
        fallback = next(m for m in now if m is not None)
        previous = [fallback if m is None else m for m in now]
        models[at] = [m for m in previous if m is not None]
        sizes.append(np.bincount(assign, minlength=k).tolist())
    return models, sizes


def _blend(model: CommunityModel, past: MeterHistory) -> Any:
    return FederatedForecaster(model, ProfileQR(**SITE), **SITE).fit(past)  # type: ignore[arg-type]


def ingredients(home: MeterHistory, models: dict[int, CommunityModel]) -> dict[str, FloatArray]:
    """``(days, 24)`` day-ahead P50 of each of :data:`INGREDIENTS`, and ``actual``."""
    s = home.steps_per_day
    out: dict[str, list[FloatArray]] = {name: [] for name in (*INGREDIENTS, "actual")}
    for day in EVAL_DAYS_S:
        model = in_force(models, day)
        past = home.window(day - COLD_DAYS * SECONDS_PER_DAY, day)
        fitted = _blend(model, past)
        assert fitted.coefs is not None
        out["blend"].append(fitted.predict(past, s).median_w[0])
        out["corrected"].append(fed._forecast(fitted.coefs, past, s, _site()).median_w[0])
        out["uncorrected"].append(community_forecast(model, past, s, **SITE).median_w[0])  # type: ignore[arg-type]
        out["profile"].append(profile_forecast(past, s, PROFILE_DAYS).median_w[0])
        out["fallback"].append(fitted.local.predict(past, s).median_w[0])
        out["actual"].append(home.window(day, day + SECONDS_PER_DAY).net_w[0])
    return {name: np.stack(rows) for name, rows in out.items()}


def hindsight_bound(parts: dict[str, FloatArray]) -> tuple[float, list[list[float]]]:
    """The lowest MAE of fixed per-lead convex weights of (corrected, profile, fallback), chosen on
    these very forecasts (``parts``: ``(homes·days, 24)`` each), and the weights per lead."""
    steps = round(1 / GRID)
    grid = np.array(
        [(a, b, steps - a - b) for a, b in itertools.product(range(steps + 1), repeat=2)
         if a + b <= steps],
        dtype=np.float64,
    ) / steps  # fmt: skip
    stack = np.stack([parts["corrected"], parts["profile"], parts["fallback"]])  # (3, N, L)
    errors = np.abs(np.einsum("gi,inl->gnl", grid, stack) - parts["actual"][None]).mean(axis=1)
    best = errors.argmin(axis=0)  # per lead
    mae = float(errors[best, np.arange(errors.shape[1])].mean())
    return mae, grid[best].round(2).tolist()


def cold_clusters(home: MeterHistory, models: dict[int, list[CommunityModel]]) -> dict[str, float]:
    """Day-ahead MAE of a cold household with ``K`` cluster models: ``fit`` and ``soft``."""
    s = home.steps_per_day
    err = {"fit": 0.0, "soft": 0.0}
    count = 0
    for day in EVAL_DAYS_S:
        choice = in_force(models, day)  # type: ignore[arg-type]
        past = home.window(day - COLD_DAYS * SECONDS_PER_DAY, day)
        actual = home.window(day, day + SECONDS_PER_DAY).net_w[0]
        e = _fit_errors(past, choice)[0]
        each = [_blend(m, past).predict(past, s).median_w[0] for m in choice]
        odds = (1.0 / e) ** 4
        soft = sum(w * f for w, f in zip(odds / odds.sum(), each, strict=True))
        err["fit"] += float(np.abs(each[int(np.argmin(e))] - actual).sum())
        err["soft"] += float(np.abs(soft - actual).sum())
        count += actual.size
    return {k: v / count for k, v in err.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--homes", choices=("tuning", "test"), default="tuning")
    parser.add_argument("--clusters", type=int, nargs="*", default=[], help="K ≥ 2 models each")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if any(k < 2 for k in args.clusters):
        parser.error("--clusters: every K must be at least 2")
    which = TUNING_HOMES if args.homes == "tuning" else TEST_HOMES
    homes = load_citylearn_homes(CITYLEARN_CLEAN_HOMES)
    t0 = time.process_time()
    parts: dict[str, list[FloatArray]] = {}
    clustered: dict[int, list[dict[str, float]]] = {k: [] for k in args.clusters}
    for home_id in which:
        row = CITYLEARN_CLEAN_HOMES.index(home_id)
        one = homes.select([row])
        others = homes.select([k for k in range(homes.households) if k != row])
        models, _ = train_community(others, rolling=True)
        got = ingredients(one, models)
        for name, values in got.items():
            parts.setdefault(name, []).append(values)
        line = ", ".join(f"{n} {np.abs(got[n] - got['actual']).mean():.1f}" for n in INGREDIENTS)
        print(f"  cold home {home_id}: day-ahead MAE W: {line}", flush=True)
        for k in args.clusters:
            cmodels, sizes = train_clusters(others, k)
            res = cold_clusters(one, cmodels)
            clustered[k].append(res)
            print(f"    {k} clusters: fit {res['fit']:.1f} W, soft {res['soft']:.1f} W; "
                  f"cluster sizes every 20th round {sizes[::20]}", flush=True)  # fmt: skip
    joined = {name: np.concatenate(v) for name, v in parts.items()}
    out: dict[str, Any] = {"homes": list(which)}
    for name in INGREDIENTS:
        out[f"{name}_mae_w"] = round(float(np.abs(joined[name] - joined["actual"]).mean()), 1)
    bound, weights = hindsight_bound(joined)
    out["hindsight_bound_mae_w"] = round(bound, 1)
    out["hindsight_weights_corrected_profile_fallback"] = weights
    local = out["fallback_mae_w"]
    for k, rows in clustered.items():
        for rule in ("fit", "soft"):
            out[f"clusters_{k}_{rule}_mae_w"] = round(float(np.mean([r[rule] for r in rows])), 1)
    out["cpu_s"] = round(time.process_time() - t0, 1)
    print(f"{args.homes} homes {which}, cold start (14 days), day-ahead, local (seasonal naive) "
          f"{local} W:")  # fmt: skip
    for name in INGREDIENTS[:-1]:
        mae = out[f"{name}_mae_w"]
        print(f"  {name:>11}: {mae} W ({100 * (1 - mae / local):.1f} % lower)")
    print(f"  hindsight bound (corrected, profile, fallback; per-lead weights chosen on these days): "
          f"{bound:.1f} W ({100 * (1 - bound / local):.1f} % lower); the bar, 20 % lower: "
          f"{0.8 * local:.1f} W")  # fmt: skip
    for k in clustered:
        print(f"  {k} clustered models: cold household picks by fit {out[f'clusters_{k}_fit_mae_w']} W"
              f", soft mix {out[f'clusters_{k}_soft_mae_w']} W (one model: {out['blend_mae_w']} W)")  # fmt: skip
    print(f"  CPU {out['cpu_s']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
