"""Day-ahead ideas on the TUNING set only: forecast combinations and shrinkage, scored offline.

Run from the repo root (about 5 minutes on 2 shared cores)::

    python benchmarks/forecasting_day_ahead.py

Backtests (``forecasting.backtest``, refit every 28 days on the past only) every member model
once at local-midnight origins with a day's horizon, on the tuning set of
``benchmarks/forecasting.py`` (CityLearn homes 1, 3, 5, 8, 10, origins 2016-09-15 → 2017-07-31;
the UCI/PVDAQ household, hourly, origins in 2008), keeps each model's forecasts, and prints the
day-ahead MAE skill against seasonal naive (same time yesterday) and the P10–P90 coverage of
each member and of the combinations ``docs/forecasting.md`` lists (tried and adopted or not).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from forecasting.backtest import backtest
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
from forecasting.models import (
    FittedForecaster,
    Forecaster,
    MidnightBlend,
    QuantileForecast,
    QuantileRegression,
)
from forecasting.profile_qr import ProfileQR
from forecasting.series import FloatArray, MeterHistory

TUNING_HOMES = (1, 3, 5, 8, 10)


@dataclass
class Recorded:
    """``model`` as a forecaster that keeps every forecast it makes (in origin order)."""

    label: str
    model: Forecaster
    forecasts: list[FloatArray] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.label

    def fit(self, history: MeterHistory) -> _RecordedFit:
        return _RecordedFit(self.model.fit(history), self.forecasts)


@dataclass
class _RecordedFit:
    fitted: FittedForecaster
    forecasts: list[FloatArray]

    def predict(self, history: MeterHistory, horizon: int) -> QuantileForecast:
        fc = self.fitted.predict(history, horizon)
        self.forecasts.append(fc.values_w)
        return fc


def _local(y: int, m: int, d: int, offset_s: int) -> int:
    return int(np.datetime64(f"{y:04d}-{m:02d}-{d:02d}", "s").astype(np.int64)) - offset_s


def same_time(y: FloatArray, t: np.ndarray, s: int, days: range | tuple[int, ...]) -> FloatArray:
    """``(n, O, H, len(days))``: ``y`` at ``t − d·s`` for each d."""
    return np.stack([y[:, t - s * d] for d in days], axis=-1)


def run(label: str, history: MeterHistory, site: tuple[float, float], span: tuple[int, int],
        extra: dict[str, Forecaster]) -> None:  # fmt: skip
    s = history.steps_per_day
    lat, lon = site
    members: dict[str, Forecaster] = {
        "profile-qr": ProfileQR(latitude=lat, longitude=lon),
        "quantile-regression": QuantileRegression(horizon=s),
        "day-ahead-blend": MidnightBlend(
            ProfileQR(latitude=lat, longitude=lon), QuantileRegression(horizon=s)
        ),
        **{
            f"profile-qr {d} days": ProfileQR(latitude=lat, longitude=lon, train_days=d)
            for d in (45, 90, 180)
        },
        **{
            f"profile-qr ridge {r}": ProfileQR(latitude=lat, longitude=lon, ridge=r)
            for r in (0.1, 1.0, 5.0)
        },
        **extra,
    }
    recorded = [Recorded(k, m) for k, m in members.items()]
    backtest(history, recorded, start_s=span[0], end_s=span[1], horizon=s)
    f = {r.label: np.stack(r.forecasts, axis=1) for r in recorded}  # (n, O, H, Q)
    first = history.index_at(span[0])
    origins = first + s * np.arange(f["profile-qr"].shape[1])
    t = origins[:, None] + np.arange(s)[None, :]
    y = history.net_w
    actual, naive = y[:, t], y[:, t - s]
    base = float(np.abs(naive - actual).mean())

    def show(name: str, q: FloatArray) -> None:
        q = np.sort(q, axis=-1)
        skill = 100 * (1 - float(np.abs(q[..., 1] - actual).mean()) / base)
        cover = 100 * float(((actual >= q[..., 0]) & (actual <= q[..., 2])).mean())
        print(f"{label:<30}{name:<58}{skill:>+7.1f}%{cover:>8.1f}%", flush=True)

    for k, q in f.items():
        show(k, q)
    pq, qr = f["profile-qr"], f["quantile-regression"]
    for w in (0.2, 0.3, 0.5):
        show(f"quantile average, midnight QR share {w}", (1 - w) * pq + w * qr)
    robust = {
        "7-day median": np.median(same_time(y, t, s, range(1, 8)), axis=-1),
        "14-day median": np.median(same_time(y, t, s, range(1, 15)), axis=-1),
        "28-day median": np.median(same_time(y, t, s, range(1, 29)), axis=-1),
        "median of 4 same weekdays": np.median(same_time(y, t, s, (7, 14, 21, 28)), axis=-1),
        "21-day mean": same_time(y, t, s, range(1, 22)).mean(axis=-1),
    }
    for k, m in robust.items():
        show(f"profile-qr moved 0.2 toward the {k}", pq + (0.2 * (m - pq[..., 1]))[..., None])
    m14 = robust["14-day median"][..., None]
    trio = np.stack([pq, qr, np.broadcast_to(m14, pq.shape)])
    show("median of profile-qr, QR, 14-day median", np.median(trio, axis=0))
    show("mean of profile-qr, QR, 14-day median", trio.mean(axis=0))
    for d in (45, 90, 180):
        show(
            f"profile-qr and itself on {d} days, share 0.3",
            0.7 * pq + 0.3 * f[f"profile-qr {d} days"],
        )
    # the midnight model's share learnt online per household from the previous 56 origins
    shares = np.linspace(0.0, 1.0, 11)
    online = pq.copy()
    for o in range(14, pq.shape[1]):
        lo = max(0, o - 56)
        err = np.abs((1 - shares[:, None, None, None]) * pq[None, :, lo:o, :, 1]
                     + shares[:, None, None, None] * qr[None, :, lo:o, :, 1]
                     - actual[None, :, lo:o]).mean(axis=(2, 3))  # fmt: skip  # (S, n)
        w = shares[np.argmin(err, axis=0)][:, None, None]
        online[:, o] = (1 - w) * pq[:, o] + w * qr[:, o]
    show("share learnt online (previous 56 origins, per household)", online)


def main() -> int:
    print(
        f"{'data':<30}{'model (day-ahead, origins at local midnight)':<58}{'skill':>8}{'P10-P90':>9}"
    )
    cl = CITYLEARN_UTC_OFFSET_S
    run("TUNING CityLearn 1,3,5,8,10", load_citylearn_homes(TUNING_HOMES),
        (CITYLEARN_LATITUDE, CITYLEARN_LONGITUDE), (_local(2016, 9, 15, cl), _local(2017, 7, 31, cl)),
        {})  # fmt: skip
    uci = SHIPPED_UTC_OFFSET_S
    site = (SHIPPED_LATITUDE, SHIPPED_LONGITUDE)
    run("TUNING UCI 2008, hourly", load_shipped(step_s=3600), site,
        (_local(2008, 1, 1, uci), _local(2009, 1, 1, uci)),
        {"profile-qr 730 days": ProfileQR(latitude=site[0], longitude=site[1], train_days=730)})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
