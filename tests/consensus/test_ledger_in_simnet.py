"""The lead's ledger (``LedgerApp``) as the replicated application on the simulated network."""

from __future__ import annotations

import random
from typing import Any

from gridnode.core.app import LedgerApp
from gridnode.core.ledger import tx_id
from market.orders import Side
from sims.simnet import FAULT_NAMES, Faults, RunResult, Simulation, Violation
from tests.ledger.helpers import T0_MS, Community


def test_the_ledger_commits_signed_orders_identically_under_faults() -> None:
    community = Community(seed=3, n_members=6, n_validators=4)
    names = {f"v{i}": k.public_hex for i, k in enumerate(community.validators)}
    open_slot = T0_MS // 900_000 + 2

    def make_app(name: str) -> LedgerApp:
        return LedgerApp(community.genesis, proposer=names.get(name, ""))

    def next_order(rng: random.Random, now_ms: int) -> tuple[bytes, Any]:
        del now_ms
        member = rng.randrange(6)
        side = Side.SELL if member % 2 else Side.BUY
        tx = community.order(
            member, side, open_slot, (rng.randint(90_000, 250_000), rng.randint(1, 500))
        )
        return tx_id(tx), tx

    def same_state(sim: Simulation, res: RunResult) -> list[Violation]:
        digests: dict[int, set[bytes]] = {}
        for node in sim.nodes.values():
            app = node.app
            assert isinstance(app, LedgerApp)
            digests.setdefault(app.state.height, set()).add(app.state.digest())
        return [Violation("state_digest", f"height {h}") for h, d in digests.items() if len(d) > 1]

    # crash/partition/drop faults (the Byzantine node's blocks are not ledger blocks: skip it)
    faults = Faults(enabled=frozenset(set(FAULT_NAMES) - {"byzantine", "skew"}))
    sim = Simulation(
        seed=4,
        faults=faults,
        app_factory=make_app,
        tx_source=next_order,
        epoch_ms=T0_MS,
        validator_keys=community.validators,
        tx_interval_ms=200,
    )
    res = sim.run(fault_ms=3_000, calm_ms=6_000, checks=[same_state])
    assert res.violations == []
    assert res.heights > 5
    committed = [sum(map(len, n.app.state.orders.values())) for n in sim.nodes.values()]  # type: ignore[attr-defined]
    assert max(committed) > 0
