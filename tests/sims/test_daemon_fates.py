"""Why orders missed their slot (:func:`sims.daemon_collect.order_fates`), from a real store.

Blocks built by the ledger and stored the way a daemon stores them; each household's
``submissions.json`` written the way the harness saves its ``/api/submissions``. One household per
fate: its order in the cleared book, no submission, refused by the validator, sent after the gate
closure, and accepted but never committed; the timing is in wall seconds at the run's speed-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gridnode.core.consensus_messages import block_hash
from gridnode.core.ledger import tx_id
from gridnode.household.agent import QUOTED_SLOTS
from gridnode.store import Durability, NodeStore
from market.orders import Side
from sims.daemon_collect import FATES, SUBMISSIONS_FILE, order_fates, read_store
from tests.chain.helpers import commit_for
from tests.ledger.helpers import T0_MS, Community

SPEEDUP = 60.0


def _save(directory: Path, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"now_ms": 0, "household": "", "submissions": rows}
    (directory / SUBMISSIONS_FILE).write_text(json.dumps(doc), encoding="utf-8")
    return directory


def _row(tx: Any, at_ms: int, *, accepted: bool = True, reason: str = "") -> dict[str, Any]:
    return {"slot": tx.order.slot, "at_ms": at_ms, "order_id": tx.order.order_id,
            "tx_id": tx_id(tx).hex(), "side": tx.order.side.value,
            "energy_wh": tx.order.energy_wh, "steps": len(tx.order.steps),
            "accepted": accepted, "reason": reason}  # fmt: skip


def test_each_missed_order_is_told_apart_and_timed(tmp_path: Path) -> None:
    c = Community(seed=3, n_members=5)
    clock = c.genesis.clock
    slot = T0_MS // 1000 // 900 + 2
    quoted_ms = clock.start(slot - QUOTED_SLOTS) * 1000  # the boundary each order is quoted at
    gate_ms = clock.gate_closure(slot) * 1000
    orders = [c.order(m, Side.BUY if m % 2 else Side.SELL, slot, (150_000, 500)) for m in range(5)]
    state = c.state()
    store = NodeStore.open(tmp_path / "node.sqlite", durability=Durability.NORMAL)
    try:
        for time_ms, txs in ((quoted_ms + 1_000, [orders[0]]), (gate_ms + 1_000, [])):
            block, state = c.block(state, max(time_ms, state.time_ms + 1), txs)
            data = block.encode()
            store.put_block(
                block.height, block_hash(data), data, commit_for(c.validators, block.height, data)
            )
    finally:
        store.close()
    replay = read_store(tmp_path / "node.sqlite", c.genesis, slots=(slot, slot))
    assert set(replay.books[slot]) == {c.members[0].public_hex}

    sent_ms = quoted_ms + 3_000  # 3 s of node time after the boundary: 0.05 s of wall at 60x
    late_ms = gate_ms + 60_000
    rows = {
        0: [_row(orders[0], sent_ms)],  # in the book the ledger cleared
        1: [],  # no submission (its bidding loop did not get to it)
        2: [_row(orders[2], late_ms, accepted=False, reason="slot_closed")],
        3: [_row(orders[3], late_ms)],  # accepted (a slow clock) but sent after gate closure
        4: [_row(orders[4], sent_ms)],  # accepted, never in a block
    }
    dirs = [(c.members[m].public_hex, _save(tmp_path / f"h{m}", rows[m])) for m in range(5)]
    fates = order_fates(
        dirs, replay, clock, slots=(slot, slot), speedup=SPEEDUP, quoted_slots=QUOTED_SLOTS
    )
    assert dict(fates.by_slot[slot]) == {
        "in its slot": 1,
        "not submitted": 1,
        "refused": 1,
        "sent after gate closure": 1,
        "committed after gate closure": 0,
        "accepted, not committed": 1,
    }
    assert set(fates.by_slot[slot]) == set(FATES)
    assert fates.refusals == {"slot_closed": 1}
    assert fates.total("in its slot") == 1
    # timing of the four orders sent, in wall seconds
    assert sorted(fates.sent_after_boundary_s) == pytest.approx(
        sorted([3 / SPEEDUP] * 2 + [(late_ms - quoted_ms) / 1000 / SPEEDUP] * 2)
    )
    assert min(fates.lead_to_gate_s) == pytest.approx(-60 / SPEEDUP)
    assert max(fates.lead_to_gate_s) == pytest.approx((gate_ms - sent_ms) / 1000 / SPEEDUP)


def test_a_slot_the_ledger_has_not_cleared_is_not_judged(tmp_path: Path) -> None:
    c = Community(seed=4, n_members=2)
    slot = T0_MS // 1000 // 900 + 2
    state = c.state()
    store = NodeStore.open(tmp_path / "node.sqlite", durability=Durability.NORMAL)
    try:
        block, state = c.block(state, T0_MS + 1_000, [])
        data = block.encode()
        store.put_block(1, block_hash(data), data, commit_for(c.validators, 1, data))
    finally:
        store.close()
    replay = read_store(tmp_path / "node.sqlite", c.genesis, slots=(slot, slot + 1))
    dirs = [(k.public_hex, _save(tmp_path / k.public_hex[:8], [])) for k in c.members]
    fates = order_fates(
        dirs, replay, c.genesis.clock, slots=(slot, slot + 1), speedup=SPEEDUP, quoted_slots=1
    )
    assert fates.by_slot == {}
    assert fates.sent_after_boundary_s == () and fates.lead_to_gate_s == ()
