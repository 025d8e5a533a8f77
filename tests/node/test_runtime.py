"""NodeRuntime: four validators and two full nodes on a virtual clock, with real SQLite stores."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

from gridnode.core.consensus import ConsensusConfig, TimerKind
from gridnode.core.ledger import sign_reading
from gridnode.node import NodeRuntime
from gridnode.store import Durability, NodeStore
from market.orders import Side
from tests.ledger.helpers import T0_MS, Community

SLOT_MS = 900_000


@dataclass
class Net:
    """A reliable virtual network: 5 ms per message, timers on the same virtual clock."""

    now: int = T0_MS
    seq: int = 0
    queue: list[tuple[int, int, tuple[object, ...]]] = field(default_factory=list)
    nodes: dict[str, NodeRuntime] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)

    def push(self, at: int, event: tuple[object, ...]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, event))

    def outbox(self, name: str, validators: list[str]) -> _Outbox:
        return _Outbox(self, name, validators)

    def run_until(self, until: int) -> None:
        while self.queue and self.queue[0][0] <= until:
            at, _, event = heapq.heappop(self.queue)
            self.now = at
            kind, dst, *rest = event
            if dst in self.down or dst not in self.nodes:
                continue
            node = self.nodes[dst]  # type: ignore[index]
            if kind == "msg":
                node.on_message(rest[0], rest[1], at)  # type: ignore[arg-type]
            else:
                node.on_timer(rest[0], rest[1], rest[2], at)  # type: ignore[arg-type]
        self.now = until


@dataclass
class _Outbox:
    net: Net
    name: str
    validators: list[str]

    def broadcast(self, data: bytes) -> None:
        for v in self.validators:
            if v != self.name:
                self.net.push(self.net.now + 5, ("msg", v, self.name, data))

    def send(self, to: str, data: bytes) -> None:
        self.net.push(self.net.now + 5, ("msg", to, self.name, data))

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        self.net.push(max(at_ms, self.net.now), ("timer", self.name, kind, height, round_))


def boot(
    net: Net,
    c: Community,
    tmp: Path,
    name: str,
    key_index: int,
    *,
    validator: bool,
    config: ConsensusConfig | None = None,
    snapshot_every: int = 5,
) -> NodeRuntime:
    """A node on ``net``; by default one height per ~10 virtual seconds (a 15-minute slot is ~90
    blocks, not thousands)."""
    key = (c.validators if validator else c.members)[key_index]
    store = NodeStore.open(tmp / f"{name}.sqlite", durability=Durability.NORMAL)
    rt = NodeRuntime(
        genesis=c.genesis,
        key=key,
        store=store,
        outbox=net.outbox(key.public_hex, list(c.genesis.validators)),
        validator=validator,
        snapshot_every=snapshot_every,
        config=config or ConsensusConfig(commit_ms=10_000, sync_interval_ms=5_000),
    )
    net.nodes[key.public_hex] = rt
    rt.start(net.now)
    return rt


def test_orders_commit_clear_and_settle_identically_on_every_node(tmp_path: Path) -> None:
    c = Community(n_members=4, n_validators=4)
    net = Net()
    vals = [boot(net, c, tmp_path, f"v{i}", i, validator=True) for i in range(4)]
    fulls = [boot(net, c, tmp_path, f"f{i}", i, validator=False) for i in range(2)]
    slot = T0_MS // SLOT_MS + 2
    txs = [
        c.order(0, Side.SELL, slot, (90_000, 1_000)),
        c.order(1, Side.SELL, slot, (120_000, 500)),
        c.order(2, Side.BUY, slot, (250_000, 800)),
        c.order(3, Side.BUY, slot, (100_000, 800)),
    ]
    for i, tx in enumerate(
        txs
    ):  # each order reaches one validator only; the mempools don't share here
        assert vals[i].submit(tx, net.now).accepted
    net.run_until(T0_MS + 60_000)
    assert all(v.state.height > 5 for v in vals)
    # wait past gate closure, then readings after delivery
    net.run_until(slot * SLOT_MS - 300_000 + 10_000)
    assert all(
        slot in v.state.trades or v.state.open_order(slot, c.members[0].public_hex) for v in vals
    )
    net.run_until((slot + 1) * SLOT_MS + 1_000)
    for i, key in enumerate(c.members):
        reading = sign_reading(key, c.genesis, slot=slot, net_wh=(1000, 500, -900, -800)[i])
        assert vals[i % 4].submit(reading, net.now).accepted
    net.run_until((slot + 1) * SLOT_MS + 120_000)
    heights = {n.state.height for n in vals}
    target = min(heights)
    assert vals[0].state.settled_slots == 1
    # every node, validators and full nodes, holds the same chain: compare the stored block hashes
    for n in vals + fulls:
        assert n.state.height >= target - 2
    ref = [vals[0].store.block(h).block_hash for h in range(1, target - 2)]  # type: ignore[union-attr]
    for n in vals[1:] + fulls:
        assert [n.store.block(h).block_hash for h in range(1, target - 2)] == ref  # type: ignore[union-attr]
    totals = vals[0].state.totals
    assert (
        sum(t.bought_p2p_wh for t in totals.values())
        == sum(t.sold_p2p_wh for t in totals.values())
        > 0
    )
    assert sum(vals[0].state.balances.values()) == 0


def test_a_restarted_validator_recovers_from_its_sqlite_file_and_catches_up(tmp_path: Path) -> None:
    c = Community(n_members=2, n_validators=4)
    net = Net()
    vals = [boot(net, c, tmp_path, f"v{i}", i, validator=True) for i in range(4)]
    net.run_until(T0_MS + 20_000)
    victim = vals[3]
    name = c.validators[3].public_hex
    net.down.add(name)  # crash: no more events; then the file is reopened by a new runtime
    h_crash = victim.state.height
    victim.store.close()
    net.run_until(T0_MS + 40_000)
    assert min(v.state.height for v in vals[:3]) > h_crash  # the other three keep committing
    net.down.discard(name)
    back = boot(net, c, tmp_path, "v3", 3, validator=True)
    assert back.state.height == h_crash  # rebuilt from snapshot + blocks in the file
    net.run_until(T0_MS + 70_000)
    assert back.state.height >= vals[0].state.height - 2
    h = back.state.height - 1
    assert back.store.block(h).block_hash == vals[0].store.block(h).block_hash  # type: ignore[union-attr]
