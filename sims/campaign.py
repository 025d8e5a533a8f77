"""The deterministic fault campaign: ``python -m gridnode.campaign --seeds N``.

Runs one :class:`gridnode.simnet.Simulation` per seed (faults during ``--fault-ms``, then a reliable
network for ``--calm-ms``) and checks on every run: no two honest nodes decide different blocks at
a height; every decided block's commit has > 2/3 valid precommit signatures; every decided block is
valid for the application; after the faults stop, every honest node decides at least
``--progress-heights`` more blocks. Prints violations (at most ``--show`` of them) on stderr and one
summary line on stdout; exits 0 only when there were no violations.

``--negative-control`` plants a fault the checks must catch: ``byzantine-majority`` runs f+1
Byzantine validators (more than the protocol tolerates), ``weak-quorum`` makes honest validators
accept 2f votes instead of 2f+1. The summary then says whether violations were found; the exit code
stays non-zero whenever there are violations, so a negative control "passes" by failing loudly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gridnode.core.consensus import ConsensusConfig
from gridnode.ledger_campaign import EPOCH_MS, LedgerWorld, broken_nonce_rule
from gridnode.simnet import FAULT_NAMES, Faults, RunCheck, RunResult, Simulation, Violation

__all__ = ["CampaignSummary", "main", "run_campaign"]

NEGATIVE_CONTROLS = ("byzantine-majority", "weak-quorum", "ledger-nonce")
APPS = ("ledger", "sim")


@dataclass(slots=True)
class CampaignSummary:
    seeds: int = 0
    heights: int = 0
    partitions: int = 0
    crashes: int = 0
    byzantine_events: int = 0
    evidence: int = 0
    committed_txs: int = 0
    double_signs: int = 0
    settled_slots: int = 0
    violations: int = 0
    failing_seeds: tuple[int, ...] = ()

    def line(self) -> str:
        return (
            f"seeds={self.seeds} heights={self.heights} partitions={self.partitions} "
            f"crashes={self.crashes} byzantine_events={self.byzantine_events} "
            f"evidence={self.evidence} committed_txs={self.committed_txs} "
            f"double_signed_orders={self.double_signs} settled_slots={self.settled_slots} "
            f"violations={self.violations}"
        )


def run_campaign(
    *,
    seeds: int,
    start_seed: int = 0,
    validators: int = 4,
    full_nodes: int = 1,
    faults: Sequence[str] = FAULT_NAMES,
    byzantine: int | None = None,
    negative_control: str | None = None,
    fault_ms: int = 6_000,
    calm_ms: int = 10_000,
    progress_heights: int = 2,
    checks: Sequence[RunCheck] = (),
    app: str | None = None,
) -> tuple[CampaignSummary, list[tuple[int, Violation]]]:
    """Run the campaign; returns the summary and every (seed, violation).

    ``app`` defaults to the ledger, except for the consensus-level negative controls: their
    Byzantine coalition forges blocks of consensus' minimal test log, which under the ledger are
    merely invalid (rejected), so they need ``app="sim"`` to be able to fork anything.
    """
    if app is None:
        app = "sim" if negative_control in ("byzantine-majority", "weak-quorum") else "ledger"
    elif app == "ledger" and negative_control in ("byzantine-majority", "weak-quorum"):
        raise ValueError(f"the {negative_control} negative control needs --app sim")
    f = (validators - 1) // 3
    n_byz = f if byzantine is None else byzantine
    enabled = set(faults)
    config = ConsensusConfig()
    if negative_control == "byzantine-majority":
        n_byz = f + 1
        enabled.add("byzantine")
    elif negative_control == "weak-quorum":
        config = ConsensusConfig(unsafe_quorum=max(1, 2 * f))
        n_byz = max(1, n_byz)
        enabled.add("byzantine")
    elif negative_control == "ledger-nonce":
        if app != "ledger":
            raise ValueError("the ledger-nonce negative control needs --app ledger")
    elif negative_control is not None:
        raise ValueError(f"unknown negative control {negative_control!r}")
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}")
    fault_set = Faults(enabled=frozenset(enabled), byzantine=n_byz)
    summary = CampaignSummary()
    found: list[tuple[int, Violation]] = []
    failing: list[int] = []
    for seed in range(start_seed, start_seed + seeds):
        world = LedgerWorld(seed=seed, validators=validators) if app == "ledger" else None
        sim = Simulation(
            seed=seed,
            validators=validators,
            full_nodes=full_nodes,
            faults=fault_set,
            config=config,
            app_factory=world.app_factory if world is not None else None,
            tx_source=world.tx_source if world is not None else None,
            epoch_ms=EPOCH_MS if world is not None else 0,
            validator_keys=world.validator_keys if world is not None else None,
        )
        run_checks = [*checks, world.check] if world is not None else list(checks)
        planted = (
            broken_nonce_rule() if negative_control == "ledger-nonce" else contextlib.nullcontext()
        )
        with planted:
            res: RunResult = sim.run(
                fault_ms=fault_ms,
                calm_ms=calm_ms,
                progress_heights=progress_heights,
                checks=run_checks,
            )
        if world is not None:
            summary.double_signs += world.double_signs
            summary.settled_slots += world.settled_slots
        summary.seeds += 1
        summary.heights += res.heights
        summary.partitions += res.partitions
        summary.crashes += res.crashes
        summary.byzantine_events += res.byzantine_events
        summary.evidence += res.evidence
        summary.committed_txs += world.committed_txs if world is not None else res.committed_txs
        summary.violations += len(res.violations)
        if res.violations:
            failing.append(seed)
        found.extend((seed, v) for v in res.violations)
    summary.failing_seeds = tuple(failing)
    return summary, found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gridnode.campaign", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seeds", type=int, required=True, help="number of seeds to run")
    p.add_argument("--start-seed", type=int, default=0)
    p.add_argument("--validators", type=int, default=4, help="validator count n (default 4)")
    p.add_argument("--full-nodes", type=int, default=1)
    p.add_argument(
        "--faults",
        default=",".join(FAULT_NAMES),
        help=f"comma list from {','.join(FAULT_NAMES)}, or 'none' (default: all)",
    )
    p.add_argument("--byzantine", type=int, default=None, help="Byzantine validators (default f)")
    p.add_argument("--negative-control", choices=NEGATIVE_CONTROLS, default=None)
    p.add_argument(
        "--app",
        choices=APPS,
        default=None,
        help="replicated application: the real ledger with households' orders and readings "
        "(default), or consensus' minimal test log (default for the consensus negative controls)",
    )
    p.add_argument("--fault-ms", type=int, default=6_000, help="virtual ms with faults on")
    p.add_argument("--calm-ms", type=int, default=10_000, help="virtual ms after faults stop")
    p.add_argument("--progress-heights", type=int, default=2)
    p.add_argument("--show", type=int, default=10, help="violations to print (stderr)")
    args = p.parse_args(argv)
    faults = [] if args.faults == "none" else [x for x in args.faults.split(",") if x]
    unknown = sorted(set(faults) - set(FAULT_NAMES))
    if unknown:
        p.error(f"unknown faults: {', '.join(unknown)}")
    t0 = time.perf_counter()
    summary, found = run_campaign(
        seeds=args.seeds,
        start_seed=args.start_seed,
        validators=args.validators,
        full_nodes=args.full_nodes,
        faults=faults,
        byzantine=args.byzantine,
        negative_control=args.negative_control,
        fault_ms=args.fault_ms,
        calm_ms=args.calm_ms,
        progress_heights=args.progress_heights,
        app=args.app,
    )
    wall = time.perf_counter() - t0
    for seed, v in found[: args.show]:
        print(f"violation seed={seed} {v.kind}: {v.detail}", file=sys.stderr)
    tail = f" wall_s={wall:.1f}"
    if args.negative_control:
        verdict = (
            "found violations as expected" if summary.violations else "MISSED the planted fault"
        )
        tail += f" negative_control={args.negative_control} ({verdict})"
    print(summary.line() + tail)
    return 0 if summary.violations == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
