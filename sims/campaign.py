"""The deterministic fault campaign: ``python -m gridnode.campaign --seeds N`` (or ``-m sims.campaign``).

Runs one :class:`sims.simnet.Simulation` per seed — every honest node is the one node executor the
daemon runs (:class:`gridnode.node.Executor`) — with faults during ``--fault-ms`` (longer while a
``stall`` lasts), then a reliable network for ``--calm-ms``, and checks on every run:

* **safety**: no two honest nodes decide different blocks at a height (``disagreement``); every
  decided block's commit has > 2/3 valid precommit signatures (``bad_commit``) and applies
  (``invalid_block``); no honest validator signs two values for one height, round and step
  (``double_sign``); no block a node announced as committed is missing from its store after a
  restart (``lost_commit``);
* **liveness**: after the faults heal, every honest node decides a new height within
  ``--liveness-ms`` (``no_decision_within_bound``) and at least ``--progress-heights`` more blocks
  within ``--calm-ms`` (``no_progress_after_faults``).

``--txs`` (default ``bundle``) says what the ledger's households submit: one ``gn.tx.bundle``
(reading and order, signed once) as daemons do, or ``separate`` orders and readings (the
transcript before stop 27). ``--cadence`` (default ``mixed``: odd seeds adaptive) picks the consensus wait between heights:
the fixed ``commit_ms`` the in-process engine runs, or the adaptive cadence the daemon runs (the
next height starts sooner once transactions wait, and on the round-0 proposal).

Prints violations (at most ``--show`` of them) on stderr and one summary line on stdout (with the
recovery times after heal: p50, p99 and max over the runs); exits 0 only when there were no
violations.

``--negative-control`` plants a fault the checks must catch:

* ``byzantine-majority`` runs f+1 Byzantine validators (more than the protocol tolerates);
* ``weak-quorum`` makes honest validators accept 2f votes instead of 2f+1;
* ``ledger-nonce`` breaks a ledger admission rule (the household's last nonce is forgotten);
* ``stale-time-rule`` restores the old time rule (every validity check judges the block's time
  against the clock, also for a value carrying a proof-of-lock): after a stall longer than the
  drift bound the committee halts — a liveness violation;
* ``apply-before-persist`` (a plan hook on the executor): a decided block is applied and announced
  before it is stored — a torn crash loses an announced commit;
* ``sign-without-persist`` (a plan hook on the executor): signatures leave without their
  last-signed record — a crash makes the validator sign twice.

The summary then says whether violations were found; the exit code stays non-zero whenever there
are violations, so a negative control "passes" by failing loudly.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gridnode.core.consensus import AdaptiveCommit, ConsensusConfig, SignedRecord
from gridnode.node import Action, Duty, NodeApp, PlanHook
from sims.ledger_campaign import EPOCH_MS, TX_KINDS, LedgerWorld, broken_nonce_rule
from sims.simnet import (
    FAULT_NAMES,
    AppHook,
    Faults,
    RunCheck,
    RunResult,
    Simulation,
    Violation,
)

__all__ = ["CampaignSummary", "main", "run_campaign"]

NEGATIVE_CONTROLS = (
    "byzantine-majority",
    "weak-quorum",
    "ledger-nonce",
    "stale-time-rule",
    "apply-before-persist",
    "sign-without-persist",
)
APPS = ("ledger", "sim")
#: The liveness bound: every honest node decides a new height this long after the faults heal.
LIVENESS_MS = 8_000


@dataclass(slots=True)
class CampaignSummary:
    seeds: int = 0
    heights: int = 0
    partitions: int = 0
    crashes: int = 0
    torn_crashes: int = 0
    stalls: int = 0
    byzantine_events: int = 0
    evidence: int = 0
    refused_proposals: int = 0
    committed_txs: int = 0
    #: what the ledger's households submitted (``LedgerWorld.txs``; empty: the minimal log)
    txs: str = ""
    #: the orders and readings in the committed transactions (a bundle counts its parts)
    committed_orders: int = 0
    committed_readings: int = 0
    double_signs: int = 0
    settled_slots: int = 0
    violations: int = 0
    failing_seeds: tuple[int, ...] = ()
    #: per run: the slowest honest node's first new decision after heal (ms; -1: never)
    recovery_ms: list[int] = field(default_factory=list)
    violation_kinds: dict[str, int] = field(default_factory=dict)

    def recovery(self, q: float) -> int:
        """The ``q`` quantile (0..1) of the runs' recovery times; -1 if a run never recovered."""
        if not self.recovery_ms or min(self.recovery_ms) < 0:
            return -1
        ordered = sorted(self.recovery_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        kinds = ",".join(f"{k}:{v}" for k, v in sorted(self.violation_kinds.items()))
        return (
            f"seeds={self.seeds} heights={self.heights} partitions={self.partitions} "
            f"crashes={self.crashes} torn={self.torn_crashes} stalls={self.stalls} "
            f"byzantine_events={self.byzantine_events} evidence={self.evidence} "
            f"refused_proposals={self.refused_proposals} committed_txs={self.committed_txs} "
            + (
                f"(txs={self.txs}: {self.committed_orders} orders, {self.committed_readings} "
                "readings) "
                if self.txs
                else ""
            )
            + f"double_signed_orders={self.double_signs} settled_slots={self.settled_slots} "
            f"recovery_ms_p50={self.recovery(0.5)} recovery_ms_p99={self.recovery(0.99)} "
            f"recovery_ms_max={self.recovery(1.0)} "
            f"violations={self.violations}" + (f" ({kinds})" if kinds else "")
        )


# --- planted bugs (negative controls), as hooks on the one executor -----------------------------


def apply_before_persist(actions: list[Action]) -> list[Action]:
    """Planted bug: a decided block is applied and announced before it is stored."""
    out: list[Action] = []
    held: list[Action] = []
    for action in actions:
        if action.duty in (Duty.STORE, Duty.TRUNCATE, Duty.SNAPSHOT):
            held.append(action)
        elif action.duty is Duty.NOTIFY:
            out += [action, *held]
            held = []
        else:
            out.append(action)
    return out + held


def sign_without_persist(actions: list[Action]) -> list[Action]:
    """Planted bug: a signature leaves the node without its WAL / last-signed record."""
    return [
        a
        for a in actions
        if not (
            a.duty is Duty.PERSIST and isinstance(getattr(a.effect, "record", None), SignedRecord)
        )
    ]


def stale_time_rule(sim: Simulation, name: str, app: NodeApp) -> None:
    """Planted bug (the rule before the fix): every validity check also judges the block's time
    against the node's clock, so a value whose lock is older than the drift bound is refused."""
    judged = app.block_error

    def block_error(height: int, block: bytes, now: int | None, *, round_: int = 0) -> object:
        return judged(height, block, sim.clock_ms(name) if now is None else now, round_=round_)

    setattr(app, "block_error", block_error)  # noqa: B010 — replacing a method is the planted bug


CADENCES = ("fixed", "adaptive", "mixed")
#: the adaptive cadence the campaign runs (ConsensusConfig's default commit_ms is 50)
ADAPTIVE = AdaptiveCommit(busy_ms=20, full_ms=0)

EXECUTOR_BUGS: dict[str, PlanHook] = {
    "apply-before-persist": apply_before_persist,
    "sign-without-persist": sign_without_persist,
}


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
    liveness_ms: int = LIVENESS_MS,
    checks: Sequence[RunCheck] = (),
    app: str | None = None,
    cadence: str = "mixed",
    txs: str = TX_KINDS[0],
) -> tuple[CampaignSummary, list[tuple[int, Violation]]]:
    """Run the campaign; returns the summary and every (seed, violation).

    ``cadence`` is the consensus wait between heights: ``fixed`` (``commit_ms``, the in-process
    engine's), ``adaptive`` (the daemon's: sooner when transactions wait,
    :class:`~gridnode.core.consensus.AdaptiveCommit`) or ``mixed`` (odd seeds adaptive).
    ``txs``: what the ledger's households submit (:data:`sims.ledger_campaign.TX_KINDS`).

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
    plan_hooks: list[PlanHook] = []
    app_hooks: list[AppHook] = []
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
    elif negative_control == "stale-time-rule":
        enabled.add("stall")
        app_hooks.append(stale_time_rule)
    elif negative_control in EXECUTOR_BUGS:
        enabled.add("crash")
        plan_hooks.append(EXECUTOR_BUGS[negative_control])
    elif negative_control is not None:
        raise ValueError(f"unknown negative control {negative_control!r}")
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}")
    if cadence not in CADENCES:
        raise ValueError(f"unknown cadence {cadence!r}")
    adaptive = replace(config, adaptive=ADAPTIVE)
    fault_set = Faults(enabled=frozenset(enabled), byzantine=n_byz)
    summary = CampaignSummary()
    found: list[tuple[int, Violation]] = []
    failing: list[int] = []
    for seed in range(start_seed, start_seed + seeds):
        world = LedgerWorld(seed=seed, validators=validators, txs=txs) if app == "ledger" else None
        sim = Simulation(
            seed=seed,
            validators=validators,
            full_nodes=full_nodes,
            faults=fault_set,
            config=adaptive
            if cadence == "adaptive" or (cadence == "mixed" and seed % 2)
            else config,
            app_factory=world.app_factory if world is not None else None,
            tx_source=world.tx_source if world is not None else None,
            epoch_ms=EPOCH_MS if world is not None else 0,
            validator_keys=world.validator_keys if world is not None else None,
            plan_hooks=plan_hooks,
            app_hooks=app_hooks,
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
                liveness_ms=liveness_ms,
                checks=run_checks,
            )
        if world is not None:
            summary.txs = world.txs
            summary.committed_orders += world.committed_orders
            summary.committed_readings += world.committed_readings
            summary.double_signs += world.double_signs
            summary.settled_slots += world.settled_slots
        summary.seeds += 1
        summary.heights += res.heights
        summary.partitions += res.partitions
        summary.crashes += res.crashes
        summary.torn_crashes += res.torn_crashes
        summary.stalls += res.stalls
        summary.byzantine_events += res.byzantine_events
        summary.evidence += res.evidence
        summary.refused_proposals += res.refused_proposals
        summary.recovery_ms.append(res.recovery_ms)
        for v in res.violations:
            summary.violation_kinds[v.kind] = summary.violation_kinds.get(v.kind, 0) + 1
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
    p.add_argument(
        "--liveness-ms",
        type=int,
        default=LIVENESS_MS,
        help=f"every honest node decides within this long after heal (default {LIVENESS_MS})",
    )
    p.add_argument(
        "--cadence",
        choices=CADENCES,
        default="mixed",
        help="consensus wait between heights: fixed, adaptive (the daemon's) or mixed (odd seeds "
        "adaptive; default)",
    )
    p.add_argument(
        "--txs",
        choices=TX_KINDS,
        default=TX_KINDS[0],
        help="what the ledger's households submit: one bundle (reading + order) per submission, "
        "as daemons do (default), or separate orders and readings (the transcript before stop 27)",
    )
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
        liveness_ms=args.liveness_ms,
        app=args.app,
        cadence=args.cadence,
        txs=args.txs,
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
