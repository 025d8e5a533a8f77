"""CPU of the in-process engine's per-slot forecasts, this tree against another, in one process.

Builds ``sims/scenarios/year.toml``'s engine (its history and forecasters, no run), fits the
forecaster once (on this tree; not timed), then forecasts ``--slots`` consecutive slot boundaries
of its 100 households as the engine does (``SlotForecaster.forecast`` over the community's history:
profile-qr's prediction, the plausibility clip, the slot quantiles). With ``--other DIR`` (a copy
of another tree, e.g. ``git -C /work/main archive HEAD | tar -x -C DIR``) it loads that tree's
``forecasting/profile_qr.py`` and ``gridnode/household/forecast.py`` under other module names,
gives both the same fitted coefficients and alternates the two slot by slot (which goes first
alternates too), asserting that their forecasts are equal at every slot (``np.array_equal`` of the
predicted quantiles, ``==`` of the slot quantiles). Prints CPU ms per slot of each (forecast, and
``FittedProfileQR.predict`` alone).

    OPENBLAS_NUM_THREADS=1 python benchmarks/forecast_slots.py [--slots 288] [--other DIR]
        [--first-day 0]

The slots stay in the forecaster's first refit period (the first 5 simulated days): no refit is
timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from pathlib import Path
from typing import Any

# this folder holds a file named like the ``sims`` package: it must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402 - after the path fix above

import forecasting.profile_qr as pq_here  # noqa: E402
import gridnode.household.forecast as fc_here  # noqa: E402
from sims.inproc import _Engine  # noqa: E402
from sims.scenario import load_scenario  # noqa: E402

YEAR = _HERE.parent / "sims" / "scenarios" / "year.toml"


def _other_modules(root: Path) -> tuple[Any, Any]:
    """``root``'s profile-qr and forecast modules, loaded beside this tree's."""
    spec = importlib.util.spec_from_file_location(
        "other_profile_qr", root / "forecasting" / "profile_qr.py"
    )
    assert spec is not None and spec.loader is not None
    pq = importlib.util.module_from_spec(spec)
    sys.modules["other_profile_qr"] = pq
    spec.loader.exec_module(pq)
    src = (root / "gridnode" / "household" / "forecast.py").read_text()
    src = src.replace(
        "from forecasting.profile_qr import FittedProfileQR",
        "from other_profile_qr import FittedProfileQR",
    )
    fc = types.ModuleType("other_forecast")
    sys.modules["other_forecast"] = fc
    exec(compile(src, str(root / "gridnode/household/forecast.py"), "exec"), fc.__dict__)
    return pq, fc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=288)
    ap.add_argument("--first-day", type=int, default=0)
    ap.add_argument("--other", type=Path, default=None)
    args = ap.parse_args()
    if not 1 <= args.slots <= 4 * 96 - args.first_day * 96:
        print("--slots must be 1 .. 384 - 96 x --first-day (the first refit period)")
        raise SystemExit(2)
    sc = load_scenario(YEAR, days=args.first_day + args.slots / 96 + 1)
    eng = _Engine(sc)
    tr, clock = eng.training, eng.clock
    first = eng.first_slot + args.first_day * 96

    def quoted(now: int) -> list[int]:
        return sorted({s for a in eng.agents for s in a.needs(now).quote})

    now = clock.start(first)
    tr.forecast(now, quoted(now), clock)  # the fit, not timed
    sf = tr._forecasters[0][1]
    fitted = sf._fitted
    assert isinstance(fitted, pq_here.FittedProfileQR)
    trees = {"this": (pq_here, fc_here)}
    if args.other is not None:
        trees["other"] = _other_modules(args.other)
    sides: dict[str, Any] = {}
    cpu = dict.fromkeys(trees, 0.0)
    pcpu = dict.fromkeys(trees, 0.0)
    last: dict[str, Any] = {}
    for name, (pq, fc) in trees.items():
        m = fitted.model
        model = pq.ProfileQR(**{f: getattr(m, f) for f in m.__dataclass_fields__})
        f = fc.SlotForecaster(model, refit_every_s=sf.refit_every_s, fallback=sf.fallback)
        f._fitted = pq.FittedProfileQR(model, fitted.coefs, fitted.step_s, fitted.band_scales)
        f._rows, f._period, f._fitted_name = sf._rows, sf._period, sf._fitted_name
        sides[name] = f
        predict = pq.FittedProfileQR.predict

        def timed(self: Any, h: Any, horizon: int, _p: Any = predict, _n: str = name) -> Any:
            c = time.process_time()
            out = _p(self, h, horizon)
            pcpu[_n] += time.process_time() - c
            last[_n] = out.values_w
            return out

        pq.FittedProfileQR.predict = timed
    for k in range(args.slots):
        now = clock.start(first + k)
        slots = quoted(now)
        h = tr.history_of(tr.cohorts[0], now)
        assert h is not None
        out = {}
        for name in list(trees) if k % 2 == 0 else list(trees)[::-1]:
            c = time.process_time()
            out[name] = sides[name].forecast(h, now_s=now, slots=slots, clock=clock)
            cpu[name] += time.process_time() - c
        if "other" in trees:
            a, b = out["this"], out["other"]
            assert [(x.model, x.quantiles) for x in a] == [(x.model, x.quantiles) for x in b], k
            assert np.array_equal(last["this"], last["other"]), k
    n = args.slots
    print(f"{n} slots from day {args.first_day}, 100 households"
          + (": forecasts equal at every slot" if "other" in trees else ""))  # fmt: skip
    for name in trees:
        print(f"  {name:5s} forecast {1000 * cpu[name] / n:.3f} ms/slot CPU, "
              f"predict {1000 * pcpu[name] / n:.3f} ms/slot CPU")  # fmt: skip


if __name__ == "__main__":
    main()
