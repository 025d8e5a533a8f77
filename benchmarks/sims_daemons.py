"""The real-daemon engine's scaling curve: daemons × seconds per simulated slot × orders committed in time.

For each number of daemons N (4 validators + N − 4 households drawn from ``sims/scenarios/small.toml``,
midday so households both buy and sell) and each clock speed-up, runs the scenario with real
``gridnode run`` processes on loopback (:func:`sims.daemon_engine.run_daemons`) for ``--slots`` slots
and prints one row:

* ``s/slot``: wall seconds per simulated 15-minute slot the clock asks for (900 / speed-up), and the
  measured mean wall time between consecutive clearings;
* ``committed``: share of the orders households submitted for a slot that the ledger held when the slot
  cleared (the target is 100 %); ``lag``: wall seconds from a slot's gate closure to the block that
  cleared it (p50 / max);
* commit latency p50 / p99 (order submitted → block committed), ledger agreement;
* CPU: the daemons' CPU seconds per wall second (the machine has ``os.cpu_count()`` cores) and CPU
  milliseconds per daemon per slot — what bounds the curve (py-libp2p spends milliseconds of CPU per
  message on every host; ``/work/shared/notes/py-libp2p.md``).

    python benchmarks/sims_daemons.py [--daemons 6,12,24,50] [--speedups 60,30] [--slots 4]

Each run prints a JSON line too (``--json``), for the docs' table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# this directory holds a script named forecasting.py: keep it from shadowing the forecasting package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sims.daemon_collect import FATES  # noqa: E402 - after the sys.path fix above
from sims.daemon_engine import run_daemons  # noqa: E402
from sims.scenario import load_scenario  # noqa: E402

SMALL = Path(__file__).resolve().parents[1] / "sims" / "scenarios" / "small.toml"


def one(
    daemons: int,
    speedup: float,
    slots: int,
    validators: int,
    *,
    keep: Path | None = None,
    household_nice: int = 0,
) -> dict[str, object]:
    sc = load_scenario(SMALL, households=daemons - validators, seed=7)
    sc = dataclasses.replace(sc, start_hour=11.0, validators=validators)
    load_start = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if keep is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gridnode-simd-")))
        else:
            base = keep / f"d{daemons}-x{speedup:g}-{time.strftime('%Y%m%dT%H%M%S')}"
        t0 = time.monotonic()
        run = run_daemons(
            sc, base / "c", speedup=speedup, slots=slots, household_nice=household_nice
        )
        wall = time.monotonic() - t0
    load_end = os.getloadavg()[0]
    r = run.result
    fates = run.fates
    after = sorted(fates.sent_after_boundary_s) if fates else []
    lead = sorted(fates.lead_to_gate_s) if fates else []
    c = r.community()
    lags = sorted(t.lag_s for t in run.timings)
    cpu = sum(run.cpu_s.values())
    return {
        "daemons": daemons,
        "speedup": speedup,
        "slot_wall_s": 900 / speedup,
        "measured_s_per_slot": run.wall_s_per_slot,
        "slots_done": r.slots_done,
        "orders_submitted": sum(s.orders_submitted for s in r.slots),
        "orders_committed": sum(s.orders for s in r.slots),
        "committed_share": c["orders_committed_share"],
        "lag_p50_s": statistics.median(lags) if lags else None,
        "lag_max_s": lags[-1] if lags else None,
        "commit_latency_ms_p50": r.commit_latency_ms_p50,
        "commit_latency_ms_p99": r.commit_latency_ms_p99,
        "agreement": r.ledger_agreement,
        "conservation": r.conservation_ok,
        "startup_s": run.startup_wall_s,
        "run_wall_s": wall,
        "daemon_cpu_s": cpu,
        "validators_cpu_s": sum(v for i, v in run.cpu_s.items() if i < validators),
        "household_nice": household_nice,
        # steady state (every household caught up and bidding, the measured slots): cores one
        # daemon keeps busy per wall second, the idle cost plus its share of the slots' work
        "steady_wall_s": run.steady_wall_s,
        "household_cores": run.steady_cores(validators=False),
        "validator_cores": run.steady_cores(validators=True),
        "cpu_per_wall_s": cpu / r.wall_seconds if r.wall_seconds else None,
        # CPU per daemon per slot of wall time (over the whole run, start-up included)
        "cpu_ms_per_daemon_slot": 1000 * cpu / daemons / (r.wall_seconds / (900 / speedup))
        if r.wall_seconds
        else None,
        "p2p_wh": c["p2p_volume_wh"],
        "load_start": load_start,
        "load_end": load_end,
        # why orders missed their slot (sims.daemon_collect.FATES) and when households sent them
        "missed": {f: fates.total(f) for f in FATES[1:]} if fates else None,
        "refusals": dict(fates.refusals) if fates else None,
        "sent_after_boundary_s_p50": statistics.median(after) if after else None,
        "sent_after_boundary_s_max": after[-1] if after else None,
        "lead_to_gate_s_min": lead[0] if lead else None,
        "notes": r.notes,
        "kept": None if keep is None else str(base),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--daemons", default="6,12,24,50", help="comma-separated daemon counts")
    p.add_argument("--speedups", default="60,30", help="comma-separated clock speed-ups")
    p.add_argument("--slots", type=int, default=4, help="measured slots per run")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--json", action="store_true", help="also print each row as JSON")
    p.add_argument(
        "--household-nice",
        type=int,
        default=0,
        help="start the household daemons at this lower CPU priority (validators at the default)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        help="keep each run's community (daemon logs, stores, submissions) under this directory",
    )
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    head = (
        f"{'daemons':>7} {'speedup':>7} {'s/slot':>6} {'meas.':>6} {'committed':>13} "
        f"{'lag p50/max s':>13} {'latency p50/p99 ms':>18} {'agree':>5} {'CPU/wall':>8} {'ms/d/slot':>9} {'start s':>7} {'load':>11}"
    )
    print(head, flush=True)
    for n in [int(x) for x in args.daemons.split(",")]:
        for speedup in [float(x) for x in args.speedups.split(",")]:
            row = one(
                n, speedup, args.slots, args.validators,
                keep=args.keep, household_nice=args.household_nice,
            )  # fmt: skip
            meas = row["measured_s_per_slot"]
            lat50, lat99 = row["commit_latency_ms_p50"], row["commit_latency_ms_p99"]
            share = row["committed_share"]
            lag50, lagmax = row["lag_p50_s"], row["lag_max_s"]
            print(
                f"{n:>7} {speedup:>7g} {900 / speedup:>6.1f} "
                f"{'–' if meas is None else f'{meas:.1f}':>6} "
                f"{row['orders_committed']:>4}/{row['orders_submitted']:<4}"
                f"{'–' if share is None else f'{100 * share:.0f}%':>4} "
                f"{'–' if lag50 is None else f'{lag50:.1f}/{lagmax:.1f}':>13} "
                f"{'–' if lat50 is None else f'{lat50:.0f}/{lat99:.0f}':>18} "
                f"{'yes' if row['agreement'] else 'NO':>5} "
                f"{row['cpu_per_wall_s'] or 0:>8.2f} {row['cpu_ms_per_daemon_slot'] or 0:>9.0f} "
                f"{row['startup_s']:>7.1f} {row['load_start']:>5.1f}/{row['load_end']:<5.1f}",
                flush=True,
            )
            missed = {f: k for f, k in (row["missed"] or {}).items() if k}  # type: ignore[attr-defined]
            refused = f" (refused: {row['refusals']})" if row["refusals"] else ""
            after50, after_max = row["sent_after_boundary_s_p50"], row["sent_after_boundary_s_max"]
            print(
                f"{'':>7} missed: {', '.join(f'{k} {f}' for f, k in missed.items()) or 'none'}"
                f"{refused}; "
                f"sent after the boundary p50/max "
                f"{'–' if after50 is None else f'{after50:.2f}/{after_max:.2f}'} s, "
                f"min lead to gate {row['lead_to_gate_s_min'] or 0:.2f} s; validators used "
                f"{row['validators_cpu_s']:.0f} of {row['daemon_cpu_s']:.0f} CPU s",
                flush=True,
            )
            hh, va = row["household_cores"], row["validator_cores"]
            print(
                f"{'':>7} steady state ({row['steady_wall_s']:.0f} wall s): a household "
                f"{'–' if hh is None else f'{hh:.4f}'} core, a validator "
                f"{'–' if va is None else f'{va:.4f}'} core per wall second; load "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if args.json:
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
