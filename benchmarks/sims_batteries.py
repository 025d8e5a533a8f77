"""What home batteries change: the same community with and without them, same seed, in process.

Runs ``sims/scenarios/batteries.toml`` (or ``--scenario``) once as shipped and once with every
battery removed (same households, same days, same keys), and prints per run: the community bill,
savings vs grid-only, self-consumption, self-sufficiency, grid import/export, P2P volume, battery
throughput and losses, the battery households' bill and their batteries' state of charge at the
start and end (energy taken out of the initial charge flatters the battery run: value it when
comparing bills), ledger agreement and conservation.

    python benchmarks/sims_batteries.py [--days 1] [--policy forecast] [--scenario PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

# this file's folder must not shadow the ``sims`` package when run as a script
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from sims.inproc import run_inproc  # noqa: E402  (after the path fix above)
from sims.scenario import POLICIES, load_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", type=Path, default=_HERE.parent / "sims/scenarios/batteries.toml")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--policy", choices=POLICIES, default="forecast")
    args = ap.parse_args()
    sc = dataclasses.replace(load_scenario(args.scenario, days=args.days), policy=args.policy)
    groups = tuple(dataclasses.replace(g, battery_kwh=0.0, battery_kw=0.0) for g in sc.groups)
    owners = {s.name for s in sc.household_specs() if s.battery_kwh > 0}
    print(f"{sc.name}: {sc.households} households ({len(owners)} with a battery), "
          f"{args.days:g} days, policy {args.policy}, seed {sc.seed}")  # fmt: skip
    for label, run in (("with batteries", sc), ("without", dataclasses.replace(sc, groups=groups))):
        t0 = time.perf_counter()
        r = run_inproc(run)
        c = r.community()
        mine = [h for h in r.households if h.name in owners]
        print(
            f"{label:15} bill {c['bill_micro'] / 1e6:8.2f} ¤  savings vs grid-only "
            f"{c['savings_micro'] / 1e6:6.2f} ¤ ({c['savings_pct']:4.1f} %)  self-consumption "
            f"{100 * c['self_consumption']:4.1f} %  self-sufficiency {100 * c['self_sufficiency']:4.1f} %"
            f"  import/export {c['grid_import_wh'] / 1e3:.1f}/{c['grid_export_wh'] / 1e3:.1f} kWh"
            f"  P2P {c['p2p_volume_wh'] / 1e3:.1f} kWh  battery in/out/loss "
            f"{c['battery_charged_wh'] / 1e3:.1f}/{c['battery_discharged_wh'] / 1e3:.1f}/"
            f"{c['battery_loss_wh'] / 1e3:.1f} kWh  owners' bill "
            f"{sum(h.bill_micro for h in mine) / 1e6:.2f} ¤  SoC "
            f"{sum(h.battery_soc_start_wh for h in mine) / 1e3:.1f}→"
            f"{sum(h.battery_soc_end_wh for h in mine) / 1e3:.1f} kWh  agreement "
            f"{r.ledger_agreement} conservation {r.conservation_ok}  {time.perf_counter() - t0:.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
