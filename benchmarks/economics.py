"""What bidding is worth: every policy on the shipped real-home scenarios, in the in-process engine.

    python benchmarks/economics.py                        # homes-winter, -spring, -summer (~15 min)
    python benchmarks/economics.py --scenarios small      # or any shipped scenario names / paths
    python benchmarks/economics.py --days 7 --json out.json

For each scenario it runs ``forecast``, ``naive-fixed-price`` and ``perfect-foresight`` (the same
households, data and seed; the whole engine and ledger each time, as ``gridnode sim SCENARIO
--policies …`` does) and prints :func:`sims.economics.table`: savings against grid-only, the share
of perfect foresight's savings, P2P volume, the traders' imbalance energy and cost against the
market price, the P2P gains (savings + imbalance cost) and the imbalance cost's share of them,
what was over-contracted (sellers short, buyers long) and its cost, and the household-weeks worse
off than grid-only. The targets of issue 12 are checked at the end (measured, not tuned: the
figures are what they are). Definitions: ``docs/sims.md``, *Economics*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sims.economics import comparison, table  # noqa: E402 - after the path fix
from sims.inproc import run_inproc  # noqa: E402
from sims.scenario import load_scenario  # noqa: E402

POLICIES = ("forecast", "naive-fixed-price", "perfect-foresight")
SEASONS = ("homes-winter", "homes-spring", "homes-summer")
#: ``--tune``: the weeks (and seed: which homes keep their PV) the policy's parameters were chosen
#: on — none of them overlaps the shipped scenarios' reported weeks (9-22 Jan, 3-16 Apr, 3-16 Jul)
TUNING: dict[str, str] = {
    "homes-winter": "2017-02-06",
    "homes-spring": "2017-04-24",
    "homes-summer": "2017-06-19",
}
TUNING_SEED = 99


def _path(name: str) -> Path:
    p = Path(name)
    return p if p.suffix == ".toml" else ROOT / "sims" / "scenarios" / f"{name}.toml"


def _targets(row: dict[str, Any], naive: dict[str, Any]) -> list[str]:
    share = row["share_of_perfect_foresight"]
    imb = row["imbalance_share_of_gains"]
    worse = row["household_weeks_worse_off_share"]
    checks = [
        ("captures >= 75 % of perfect foresight's savings", share is not None and share >= 0.75,
         f"{100 * share:.1f} %" if share is not None else "–"),
        ("imbalance cost <= 25 % of the P2P gains", imb is not None and imb <= 0.25,
         f"{100 * imb:.1f} %" if imb is not None else "–"),
        ("<= 5 % of household-weeks worse off than grid-only", worse is not None and worse <= 0.05,
         f"{row['household_weeks_worse_off']}/{row['household_weeks']}"),
        ("beats the naive fixed-price policy", row["savings_micro"] > naive["savings_micro"],
         f"{row['savings_micro'] / 1e6:.2f} vs {naive['savings_micro'] / 1e6:.2f} ¤"),
    ]  # fmt: skip
    return [f"  {'met ' if ok else 'MISS'}  {label}: {value}" for label, ok, value in checks]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default=",".join(SEASONS), help="comma-separated names or paths")
    ap.add_argument("--days", type=float, help="override the scenarios' days")
    ap.add_argument("--json", type=Path, help="write every comparison here")
    ap.add_argument(
        "--tune",
        action="store_true",
        help="run the tuning weeks instead (7 days each, another seed; not the reported weeks)",
    )
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    out: dict[str, Any] = {}
    for name in [n.strip() for n in args.scenarios.split(",") if n.strip()]:
        sc = load_scenario(_path(name), days=args.days)
        if args.tune:
            sc = dataclasses.replace(
                sc, start_day=TUNING[sc.name], seed=TUNING_SEED, days=args.days or 7
            )
        results = {}
        t0 = time.perf_counter()
        for policy in policies:
            results[policy] = run_inproc(dataclasses.replace(sc, policy=policy))
        comp = comparison(results)
        homes = next(iter(comp.values()))["homes"]
        print(f"\n{sc.name}: {sc.households} households ({homes} distinct homes), {sc.days:g} days "
              f"from {sc.start_day}, {sc.slot_seconds // 60}-min slots, model {sc.model}, "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        print(table(comp))
        if "forecast" in comp and "naive-fixed-price" in comp:
            print("\n".join(_targets(comp["forecast"], comp["naive-fixed-price"])))
        out[sc.name] = comp
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
