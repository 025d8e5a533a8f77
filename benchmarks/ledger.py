"""Consensus throughput in-process: 4 and 7 validators on the simulated network, no faults.

Prints, per validator count: committed signed transactions per second (wall clock and virtual
clock), commit latency (submit -> decided at the first honest validator) in virtual ms, wall ms per
height, and the Ed25519 verifications the run did per wall second next to the raw PyNaCl
verification rate on this machine, which bounds everything (every node re-checks every signature).

With ``--app ledger`` (the default) the replicated application is the real ledger
(:class:`gridnode.core.app.LedgerApp`): 200 member households submit signed orders and meter
readings on a fast clock (2-second slots), slots are cleared and settled inside ``apply``, and the
figures are committed *signed ledger transactions* per second; commit latency is measured from
submission to the block being applied on the first validator. ``--app sim`` uses consensus' minimal
signed log instead (the consensus core's own ceiling).

Run: ``python benchmarks/ledger.py [--app ledger|sim] [--seconds 10] [--interval-ms 2] [--block-txs 500]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# benchmarks/sims.py is named like the ``sims`` package: run as a script, this folder must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import gridnode.core.consensus as consensus_mod  # noqa: E402 - after the path fix above
from gridnode.core.app import LedgerApp  # noqa: E402
from gridnode.core.consensus import ConsensusConfig  # noqa: E402
from gridnode.core.consensus_messages import (  # noqa: E402
    Proposal,
    ValidatorSet,
    Vote,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import KeyPair, verify  # noqa: E402
from gridnode.core.ledger import decode_block, tx_id  # noqa: E402
from sims.ledger_campaign import EPOCH_MS, LedgerWorld  # noqa: E402
from sims.simnet import Simulation  # noqa: E402

COUNT = [0]


def _counting_vote(validators: ValidatorSet, vote: Vote) -> bool:
    COUNT[0] += 1
    return verify_vote(validators, vote)


def _counting_proposal(validators: ValidatorSet, proposal: Proposal) -> bool:
    COUNT[0] += 1
    return verify_proposal(validators, proposal)


def raw_verify_rate(n: int = 3000) -> float:
    key = KeyPair.from_rng(random.Random(1))
    msg = b"x" * 120
    sig = key.sign("vote", msg)
    t0 = time.perf_counter()
    for _ in range(n):
        verify(key.public_key, "vote", msg, sig)
    return n / (time.perf_counter() - t0)


def bench(validators: int, seconds: int, interval_ms: int, block_txs: int, app: str) -> None:
    # the benchmark counts consensus signature checks by wrapping the two verify functions
    consensus_mod.verify_vote = _counting_vote  # type: ignore[assignment]
    consensus_mod.verify_proposal = _counting_proposal  # type: ignore[assignment]
    COUNT[0] = 0
    hooks: dict[str, Any] = {}
    world = None
    submitted: dict[bytes, int] = {}
    latencies: list[int] = []
    if app == "ledger":
        world = LedgerWorld(seed=1, validators=validators, members=200, double_sign_share=0.0)
        holder: list[Simulation] = []

        def tx_source(rng: random.Random, now_ms: int) -> tuple[bytes, Any] | None:
            made = world.tx_source(rng, now_ms)
            if made is not None:
                submitted[made[0]] = holder[0].now
            return made

        def app_factory(name: str) -> LedgerApp:
            ledger_app = world.app_factory(name)
            if name == "v0":
                apply = ledger_app.apply

                def timed_apply(height: int, block: bytes) -> Any:
                    state = apply(height, block)
                    for tx in decode_block(block).txs:
                        at = submitted.pop(tx_id(tx), None)
                        if at is not None:
                            latencies.append(holder[0].now - at)
                    return state

                ledger_app.apply = timed_apply  # type: ignore[method-assign]
            return ledger_app

        hooks = {
            "app_factory": app_factory,
            "tx_source": tx_source,
            "epoch_ms": EPOCH_MS,
            "validator_keys": world.validator_keys,
        }
    sim = Simulation(
        seed=1,
        validators=validators,
        full_nodes=1,
        config=ConsensusConfig(commit_ms=200),
        tx_interval_ms=interval_ms,
        max_block_txs=block_txs,
        **hooks,
    )
    if world is not None:
        holder.append(sim)
    t0 = time.perf_counter()
    checks = [world.check] if world is not None else []
    res = sim.run(fault_ms=1, calm_ms=seconds * 1000, progress_heights=1, checks=checks)
    wall = time.perf_counter() - t0
    if world is not None:
        res.committed_txs = world.committed_txs
        res.commit_latency_ms = latencies
    lat = sorted(res.commit_latency_ms)
    sig_total = res.signature_checks + COUNT[0]
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else 0
    print(
        f"app={app} validators={validators} virtual_s={seconds} heights={res.heights} "
        f"committed_txs={res.committed_txs} wall_s={wall:.2f} "
        f"txs_per_wall_s={res.committed_txs / wall:.0f} "
        f"txs_per_virtual_s={res.committed_txs / seconds:.0f} "
        f"latency_virtual_ms_p50={statistics.median(lat) if lat else 0:.0f} "
        f"latency_virtual_ms_p95={p95} "
        f"wall_ms_per_height={1000 * wall / max(1, res.heights):.1f} "
        f"sig_checks={sig_total} (txs {res.signature_checks}, consensus {COUNT[0]}) "
        f"sig_checks_per_wall_s={sig_total / wall:.0f} violations={len(res.violations)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="virtual seconds per run")
    p.add_argument("--interval-ms", type=int, default=2, help="virtual ms between transactions")
    p.add_argument("--block-txs", type=int, default=500)
    p.add_argument("--app", choices=("ledger", "sim"), default="ledger")
    args = p.parse_args()
    rate = raw_verify_rate()
    print(f"ed25519_verify_per_s={rate:.0f} (PyNaCl, one core: the bound)")
    for n in (4, 7):
        bench(n, args.seconds, args.interval_ms, args.block_txs, args.app)


if __name__ == "__main__":
    main()
