"""Consensus throughput in-process: 4 and 7 validators on the simulated network, no faults.

Prints, per validator count: committed signed transactions per second (wall clock and virtual
clock), commit latency (submit -> decided at the first honest validator) in virtual ms, wall ms per
height, and the Ed25519 verifications the run did per wall second next to the raw PyNaCl
verification rate on this machine, which bounds everything (every node re-checks every signature).

Transactions are the simulation's signed opaque transactions (64-160 bytes, one Ed25519 signature
each), a stand-in for signed orders until the ledger is plugged in.

Run: ``python benchmarks/ledger.py [--seconds 10] [--interval-ms 2] [--block-txs 500]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import gridnode.core.consensus as consensus_mod
from gridnode.core.consensus import ConsensusConfig
from gridnode.core.consensus_messages import (
    Proposal,
    ValidatorSet,
    Vote,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import KeyPair, verify
from gridnode.simnet import Simulation

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


def bench(validators: int, seconds: int, interval_ms: int, block_txs: int) -> None:
    # the benchmark counts consensus signature checks by wrapping the two verify functions
    consensus_mod.verify_vote = _counting_vote  # type: ignore[assignment]
    consensus_mod.verify_proposal = _counting_proposal  # type: ignore[assignment]
    COUNT[0] = 0
    sim = Simulation(
        seed=1,
        validators=validators,
        full_nodes=1,
        config=ConsensusConfig(commit_ms=200),
        tx_interval_ms=interval_ms,
        max_block_txs=block_txs,
    )
    t0 = time.perf_counter()
    res = sim.run(fault_ms=1, calm_ms=seconds * 1000, progress_heights=1)
    wall = time.perf_counter() - t0
    lat = sorted(res.commit_latency_ms)
    sig_total = res.signature_checks + COUNT[0]
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else 0
    print(
        f"validators={validators} virtual_s={seconds} heights={res.heights} "
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
    args = p.parse_args()
    rate = raw_verify_rate()
    print(f"ed25519_verify_per_s={rate:.0f} (PyNaCl, one core: the bound)")
    for n in (4, 7):
        bench(n, args.seconds, args.interval_ms, args.block_txs)


if __name__ == "__main__":
    main()
