"""Federated vs local training in a whole simulated community: cold-start and established
households on real homes, forecast error and savings, and what the rounds cost.

Run from the repo root (≈ 5 minutes on 2 shared cores)::

    python benchmarks/federated_sim.py [--days 14] [--out DIR] [--json FILE]

It runs the scenario pair ``sims/scenarios/homes-fed-local.toml`` and
``homes-fed-federated.toml`` with the in-process engine (``sims.inproc``): 17 real CityLearn homes,
8–21 May 2017 (a period no constant was tuned on), hourly slots, pay-as-clear, profile-qr bidding;
six households (drawn by the seed) are **cold-start** (their meter history begins 14 days before
the first slot), eleven have all the data (8–9 months). The two files differ only in
``[training] mode``: under ``federated`` the households train one community forecaster in daily
rounds (four before the run) and each bids with its personal blend of the community model and its
own local model (``docs/federated.md``); under ``local`` each fits alone (a cold-start household:
seasonal naive, as profile-qr needs 30 days).

Figures per group: forecast MAE (the P50 of each quoted slot vs the household's natural net, Wh
per household-slot — the next-slot forecast the households bid with) and savings vs grid-only;
the change federated vs local; and per round: bytes each member sent, bytes in all, round CPU
seconds (``time.process_time`` of the whole in-process round: every member's update, masking,
aggregation). Issue 13's targets: cold-start MAE ≥ 20 % lower with federated training,
established no worse than 1 %. Prints figures; asserts nothing (the tests are
``tests/sims/test_training.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sims.inproc import run_inproc
from sims.report import write_outputs
from sims.results import SimResult
from sims.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "sims" / "scenarios"


def run(mode: str, days: float | None, out: Path | None) -> SimResult:
    scenario = load_scenario(SCENARIOS / f"homes-fed-{mode}.toml", days=days)
    result = run_inproc(scenario)
    if out is not None:
        write_outputs(result, out / mode)
    print(f"{mode}: {result.slots_done} slots, {result.wall_seconds:.0f} s wall", flush=True)
    return result


def _change(local: float | None, federated: float | None) -> float | None:
    if local is None or federated is None or not local:
        return None
    return 100.0 * (federated - local) / abs(local)


def figures(local: SimResult, federated: SimResult) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for label, lg in local.groups().items():
        fg = federated.groups()[label]
        groups[label] = {
            "households": lg["households"],
            "mae_wh_local": lg["forecast_mae_wh"],
            "mae_wh_federated": fg["forecast_mae_wh"],
            "mae_change_pct": _change(lg["forecast_mae_wh"], fg["forecast_mae_wh"]),
            "savings_micro_local": lg["savings_micro"],
            "savings_micro_federated": fg["savings_micro"],
            "savings_change_pct": _change(lg["savings_micro"], fg["savings_micro"]),
        }
    community = {
        "savings_micro_local": local.community()["savings_micro"],
        "savings_micro_federated": federated.community()["savings_micro"],
        "mae_wh_local": local.community()["forecast_mae_wh_per_household_slot"],
        "mae_wh_federated": federated.community()["forecast_mae_wh_per_household_slot"],
    }
    return {
        "groups": groups,
        "community": community,
        "training": federated.training_summary(),
        "rounds": [
            {
                "round": r.round,
                "contributors": r.contributors,
                "bytes_per_member": r.bytes_per_member,
                "cpu_s": r.cpu_s,
                "validation_skill": r.validation_skill,
                "model_hash": r.model_hash,
            }
            for r in federated.rounds
        ],
        "ledger_agreement": [local.ledger_agreement, federated.ledger_agreement],
    }


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def show(fig: dict[str, Any]) -> None:
    print()
    print(f"{'group':<18} {'hh':>3} {'MAE local':>10} {'MAE fed':>10} {'change':>8}   "
          f"{'savings local':>14} {'savings fed':>12} {'change':>8}")  # fmt: skip
    for label, g in fig["groups"].items():
        print(
            f"{label:<18} {g['households']:>3} {_fmt(g['mae_wh_local'], '.1f'):>10} "
            f"{_fmt(g['mae_wh_federated'], '.1f'):>10} {_fmt(g['mae_change_pct'], '+.1f'):>7}%   "
            f"{g['savings_micro_local'] / 1e6:>12.2f} ¤ {g['savings_micro_federated'] / 1e6:>10.2f} ¤"
            f" {_fmt(g['savings_change_pct'], '+.1f'):>7}%"
        )
    c = fig["community"]
    print(
        f"{'community':<18} {'':>3} {_fmt(c['mae_wh_local'], '.1f'):>10} "
        f"{_fmt(c['mae_wh_federated'], '.1f'):>10} {'':>8}   "
        f"{c['savings_micro_local'] / 1e6:>12.2f} ¤ {c['savings_micro_federated'] / 1e6:>10.2f} ¤"
    )
    t = fig["training"]
    cpu = [r["cpu_s"] for r in fig["rounds"]]
    print()
    print(
        f"rounds: {t['rounds_completed']} of {t['rounds']} completed, "
        f"{_fmt(t['contributors_mean'], '.1f')} contributors on average; bytes per member per "
        f"round {_fmt(t['bytes_per_member_per_round'], ',.0f')}, per round in all "
        f"{_fmt(t['bytes_per_round'], ',.0f')}; round CPU mean {_fmt(t['round_cpu_s_mean'], '.3f')}"
        f" s, median {sorted(cpu)[len(cpu) // 2] if cpu else 0:.3f} s, max "
        f"{_fmt(t['round_cpu_s_max'], '.3f')} s"
    )
    print(f"last model {t['last_model_hash']}, held-back skill {t['last_validation_skill']}")
    cold = [g for label, g in fig["groups"].items() if label != "established"]
    est = fig["groups"].get("established")
    for g in cold:
        ch = g["mae_change_pct"]
        met = ch is not None and ch <= -20.0
        print(f"target cold-start MAE >= 20 % lower: {_fmt(ch, '+.1f')} % -> "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
    if est is not None:
        ch = est["mae_change_pct"]
        met = ch is not None and ch <= 1.0
        print(f"target established MAE no worse than 1 %: {_fmt(ch, '+.1f')} % -> "
              f"{'met' if met else 'NOT met'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=None, help="override the scenarios' 14 days")
    ap.add_argument("--out", type=Path, default=None, help="write both runs' outputs here")
    ap.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args()
    local = run("local", args.days, args.out)
    federated = run("federated", args.days, args.out)
    fig = figures(local, federated)
    show(fig)
    if args.json is not None:
        args.json.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
