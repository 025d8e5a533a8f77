"""The daemon's block cadence (``gridnode.daemon.node.consensus_config``) on the real ledger.

Idle, the committee makes a block every ``IDLE_BLOCK_S`` of wall time (it made one every second:
each cost every household a fetch, a commit check, a durable write and an apply); what the ledger
uses block time for still happens on time — a slot holding orders clears at its gate closure, a
slot awaiting settlement settles at its reading deadline — and a household (a full node, long
polling) holds every block one message after the validators. Four validators and a household
as :class:`NodeRuntime` s with real SQLite stores on a virtual network (5 ms per message).
"""

from __future__ import annotations

from pathlib import Path

from gridnode.core.ledger import sign_reading
from gridnode.daemon.node import IDLE_BLOCK_S, consensus_config
from gridnode.node import NodeRuntime
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community
from tests.node.test_runtime import Net, boot

SPEEDUP = 60.0
SLOT_MS = 900_000


def _boot(net: Net, c: Community, tmp: Path, name: str, i: int, *, validator: bool) -> NodeRuntime:
    return boot(
        net,
        c,
        tmp,
        name,
        i,
        validator=validator,
        config=consensus_config(SPEEDUP),
        snapshot_every=100,
    )


def test_idle_blocks_are_rare_and_what_block_time_does_happens_on_time(tmp_path: Path) -> None:
    c = Community(n_members=4, n_validators=4)
    net = Net()
    vals = [_boot(net, c, tmp_path, f"v{i}", i, validator=True) for i in range(4)]
    home = _boot(net, c, tmp_path, "h0", 0, validator=False)
    # an idle hour of community time (a minute of wall time at 60x)
    hour_ms = 3_600_000
    net.run_until(T0_MS + hour_ms)
    idle_blocks = vals[0].state.height
    wall_s = hour_ms / SPEEDUP / 1000
    assert idle_blocks <= wall_s / IDLE_BLOCK_S + 2  # it was one a wall second: 60
    assert home.state.height >= idle_blocks - 1  # long poll: no household lags behind
    # orders for a slot: it clears right at its gate closure, not at the next idle block
    slot = (T0_MS + hour_ms) // SLOT_MS + 2
    gate_ms = c.genesis.clock.gate_closure(slot) * 1000
    for i, (side, steps) in enumerate([(Side.SELL, (90_000, 1_000)), (Side.BUY, (250_000, 800))]):
        assert vals[i].submit(c.order(i, side, slot, steps), net.now).accepted
    net.run_until(gate_ms - 1)
    assert vals[0].state.last_cleared_slot < slot
    net.run_until(gate_ms + 1_000)  # a second of community time: 17 ms of wall time
    assert all(v.state.last_cleared_slot >= slot and slot in v.state.trades for v in vals)
    # one of the two traders reads its meter; the slot settles at its reading deadline
    end_s = c.genesis.clock.end(slot)
    net.run_until(end_s * 1000 + 1_000)
    reading = sign_reading(c.members[0], c.genesis, slot=slot, net_wh=1_000)
    assert vals[0].submit(reading, net.now).accepted
    deadline_ms = (end_s + c.genesis.reading_deadline_seconds) * 1000
    net.run_until(deadline_ms - 1)
    assert vals[0].state.settled_slots == 0
    net.run_until(deadline_ms + 1_000)
    assert all(v.state.settled_slots == 1 for v in vals)
    net.run_until(deadline_ms + 2_000)
    assert home.state.settled_slots == 1 and home.state.height >= vals[0].state.height - 1
