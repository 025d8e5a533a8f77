"""Multi-node runs on the simulated network: determinism, faults, Byzantine validators, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridnode.core.consensus import (
    Broadcast,
    ConsensusConfig,
    Persist,
    SignedRecord,
)
from gridnode.core.consensus_messages import Proposal, Vote
from gridnode.node import Action
from gridnode.store import Durability, NodeStore, Store
from sims.simnet import FAULT_NAMES, Faults, RunResult, Simulation, Violation

ALL = Faults(enabled=frozenset(FAULT_NAMES), byzantine=1)


def run(seed: int, faults: Faults = ALL, **kw: object) -> RunResult:
    return Simulation(seed=seed, faults=faults, **kw).run(fault_ms=4_000, calm_ms=8_000)  # type: ignore[arg-type]


def test_a_seed_replays_byte_for_byte_and_seeds_differ() -> None:
    a, b, c = run(3), run(3), run(4)
    assert a.transcript_sha256 == b.transcript_sha256
    assert a.decided == b.decided
    assert a.transcript_sha256 != c.transcript_sha256


def test_without_faults_every_node_commits_the_same_chain_with_transactions() -> None:
    res = Simulation(seed=1).run(fault_ms=1, calm_ms=3_000)
    assert res.violations == []
    chains = list(res.decided.values())
    assert len(chains) == 5 and res.heights >= 10
    shortest = min(len(c) for c in chains)
    assert shortest >= 10  # the full node polls, so it may trail the validators by a few blocks
    assert all(c[h] == chains[0][h] for c in chains for h in range(1, shortest + 1))
    assert res.committed_txs > 0 and res.commit_latency_ms


@pytest.mark.parametrize("seed", range(6))
def test_all_faults_with_f_byzantine_keep_safety_and_liveness(seed: int) -> None:
    res = run(seed)
    assert res.violations == []
    assert res.heights > 3
    assert res.byzantine_events > 0


def test_the_fault_plan_really_injects_faults() -> None:
    totals = [run(s) for s in range(6)]
    assert sum(r.partitions for r in totals) > 0
    assert sum(r.crashes for r in totals) > 0
    assert sum(r.torn_crashes for r in totals) > 0
    assert sum(r.dropped for r in totals) > 0
    assert sum(r.evidence for r in totals) > 0  # equivocation is seen and recorded


def test_seven_validators_with_two_byzantine() -> None:
    faults = Faults(enabled=frozenset(FAULT_NAMES), byzantine=2)
    res = Simulation(seed=11, validators=7, faults=faults).run(fault_ms=4_000, calm_ms=8_000)
    assert res.violations == []
    assert res.heights > 3


@pytest.mark.parametrize("seed", range(3))
def test_negative_control_more_than_a_third_byzantine_forks(seed: int) -> None:
    faults = Faults(enabled=frozenset({"byzantine"}), byzantine=2)
    res = Simulation(seed=seed, faults=faults).run(fault_ms=3_000, calm_ms=3_000)
    assert any(v.kind == "disagreement" for v in res.violations)


def test_negative_control_a_weakened_quorum_rule_is_caught() -> None:
    faults = Faults(enabled=frozenset({"byzantine"}), byzantine=1)
    sim = Simulation(seed=0, faults=faults, config=ConsensusConfig(unsafe_quorum=2))
    kinds = {v.kind for v in sim.run(fault_ms=3_000, calm_ms=3_000).violations}
    assert {"disagreement", "bad_commit"} <= kinds


class CheckedSimulation(Simulation):
    """Checks, as an observer of the executor, that every signature a node sends was persisted
    first (in this or an earlier step: re-sent votes and proposals were persisted when they were
    first signed)."""

    persisted: dict[str, set[tuple[int, int, int, bytes]]]
    checked = 0

    def observe(self, node: Any, action: Action) -> None:
        seen = self.__dict__.setdefault("persisted", {}).setdefault(node.name, set())
        eff = action.effect
        if isinstance(eff, Persist) and isinstance(eff.record, SignedRecord):
            r = eff.record
            seen.add((r.height, r.round, int(r.step), r.value))
        elif isinstance(eff, Broadcast):
            m = eff.message
            if isinstance(m, Vote) and m.validator == node.core.index:
                assert (m.height, m.round, int(m.vote_type), m.block_hash) in seen
                self.checked += 1
            if isinstance(m, Proposal) and m.proposer == node.core.index:
                assert (m.height, m.round, 0, m.block_hash) in seen
                self.checked += 1
        super().observe(node, action)


def test_signatures_are_persisted_before_they_leave_the_node() -> None:
    faults = Faults(enabled=frozenset({"crash", "drop"}))
    sim = CheckedSimulation(seed=5, faults=faults)
    res = sim.run(fault_ms=4_000, calm_ms=4_000)
    assert res.violations == []
    assert res.crashes > 0 and sim.checked > 100


def test_extra_run_checks_are_called_and_reported() -> None:
    def ledger_check(sim: Simulation, res: RunResult) -> list[Violation]:
        return [Violation("ledger", f"checked {res.heights} heights")]

    res = Simulation(seed=2).run(fault_ms=1, calm_ms=1_000, checks=[ledger_check])
    assert [v.kind for v in res.violations] == ["ledger"]


def test_crash_and_restart_from_sqlite_files(tmp_path: Path) -> None:
    stores: dict[str, NodeStore] = {}

    def open_store(name: str) -> Store:
        stores[name] = NodeStore.open(tmp_path / f"{name}.sqlite", durability=Durability.NORMAL)
        return stores[name]

    faults = Faults(enabled=frozenset({"crash", "drop", "delay"}), crash_every_ms=(300, 900))
    sim = Simulation(seed=8, faults=faults, store_factory=open_store, full_nodes=1)
    res = sim.run(fault_ms=3_000, calm_ms=4_000)
    assert res.violations == []
    assert res.crashes > 0
    for name, store in stores.items():
        head = store.head()
        assert head is not None and head.height == len(res.decided[name])
        store.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    chosen=st.sets(st.sampled_from(FAULT_NAMES), min_size=1),
    validators=st.sampled_from([4, 5, 7]),
)
def test_any_fault_mix_with_at_most_f_byzantine_is_safe_and_live(
    seed: int, chosen: set[str], validators: int
) -> None:
    faults = Faults(enabled=frozenset(chosen), byzantine=(validators - 1) // 3)
    sim = Simulation(seed=seed, validators=validators, faults=faults)
    res = sim.run(fault_ms=3_000, calm_ms=8_000)
    assert res.violations == []


@pytest.mark.slow
def test_a_larger_campaign_finds_nothing() -> None:
    from sims.campaign import run_campaign

    summary, found = run_campaign(seeds=200, start_seed=10_000)
    assert found == [] and summary.heights > 1000
