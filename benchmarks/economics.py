"""What bidding is worth: every policy on the shipped real-home scenarios, in the in-process engine.

    python benchmarks/economics.py                        # homes-winter, -spring, -summer (~15 min)
    python benchmarks/economics.py --scenarios small      # or any shipped scenario names / paths
    python benchmarks/economics.py --days 7 --json out.json
    python benchmarks/economics.py --tune                 # the weeks the policy was tuned on
    python benchmarks/economics.py --daemons              # homes-small in real daemons (~35 min)

For each scenario it runs ``forecast``, ``naive-fixed-price`` and ``perfect-foresight`` (the same
households, data and seed; the whole engine and ledger each time, as ``gridnode sim SCENARIO
--policies …`` does) and prints :func:`sims.economics.table`: savings against grid-only, the share
of perfect foresight's savings, P2P volume, the traders' imbalance energy and cost against the
market price, the P2P gains (savings + imbalance cost) and the imbalance cost's share of them,
what was over-contracted (sellers short, buyers long) and its cost, and the household-weeks worse
off than grid-only. The targets of issue 12 are checked at the end (measured, not tuned: the
figures are what they are). Definitions: ``docs/sims.md``, *Economics*.

``--daemons`` runs the scenarios (default ``homes-small``) in the **real-daemon engine** instead:
one community of ``gridnode run`` processes per policy (:func:`sims.daemon_engine.run_daemons`,
clock ``--speedup`` times faster). Every run measures the same data hours — the scenario's own,
``start_day`` at ``start_hour`` for ``days`` (:func:`sims.daemon_engine.warmup_s`) — so the share
of perfect foresight is the daemons' forecast run over the daemons' perfect-foresight run of the
same hours. The in-process engine's runs of the same scenario are printed next to them, and the
daemon forecast run's savings over the in-process perfect-foresight run as a cross-check.
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
    ap.add_argument(
        "--daemons",
        action="store_true",
        help="the real-daemon engine (default scenario: homes-small)",
    )
    ap.add_argument("--speedup", type=float, default=360.0, help="--daemons: clock speed-up")
    ap.add_argument("--out", type=Path, help="--daemons: keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    if args.daemons:
        return _daemons(args)
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


def _daemons(args: argparse.Namespace) -> int:
    """Every policy in real daemons, then in process, on the same scenario and hours."""
    import tempfile  # noqa: PLC0415 - only this mode

    from sims.daemon_engine import run_daemons  # noqa: PLC0415 - only this mode
    from sims.report import write_outputs  # noqa: PLC0415

    names = "homes-small" if args.scenarios == ",".join(SEASONS) else args.scenarios
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    root = args.out or Path(tempfile.mkdtemp(prefix="economics-daemons-"))
    out: dict[str, Any] = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        sc = load_scenario(_path(name), days=args.days)
        engines: dict[str, dict[str, Any]] = {}
        for engine in ("daemons", "inproc"):
            t0 = time.perf_counter()
            results = {}
            runs = {}
            for policy in policies:
                one = dataclasses.replace(sc, policy=policy)
                if engine == "inproc":
                    results[policy] = run_inproc(one)
                    continue
                run = run_daemons(one, root / sc.name / policy / "daemons", speedup=args.speedup)
                results[policy] = run.result
                runs[policy] = run
                for note in run.result.notes:
                    print(f"  [{policy}] {note}")
            comp = comparison(results)
            engines[engine] = comp
            for policy, run in runs.items():  # each run's results.json and report carry the table
                run.result.policies = comp
                extra = {} if run.local_offset_s is None else {"utc_offset_s": run.local_offset_s}
                write_outputs(run.result, root / sc.name / policy, trades=run.trades, **extra)
            homes = next(iter(comp.values()))["homes"]
            print(f"\n{sc.name}, {engine} engine: {sc.households} households ({homes} distinct "
                  f"homes), {sc.days:g} days from {sc.start_day} {sc.start_hour:g}:00, "
                  f"{sc.slot_seconds // 60}-min slots, model {sc.model}, "
                  f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
            print(table(comp))
            if "forecast" in comp and "naive-fixed-price" in comp:
                print("\n".join(_targets(comp["forecast"], comp["naive-fixed-price"])))
        d, i = engines["daemons"], engines["inproc"]
        if "forecast" in d and "perfect-foresight" in i and i["perfect-foresight"]["savings_micro"]:
            share = d["forecast"]["savings_micro"] / i["perfect-foresight"]["savings_micro"]
            print(
                f"  cross-check: the daemons' forecast run saved {100 * share:.1f} % of the "
                "in-process perfect-foresight run's savings (same scenario and hours)"
            )
        out[sc.name] = engines
    print(f"\ndaemon runs (results.json, report.html, logs): {root}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
