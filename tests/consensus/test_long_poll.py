"""Long-poll block sync (``gridnode/core/consensus_sync.py``): a full node learns of each block one
message after its decision instead of polling, asks again only after a block, falls back to another
peer when the one holding its request is gone, and a node holds a bounded number of requests.

Four validators (the real :class:`Consensus` with the tag app) and full nodes on a virtual network:
5 ms per message, timers on the same virtual clock.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Effect,
    FullNode,
    Send,
    SetTimer,
)
from gridnode.core.consensus_messages import (
    BlockRequest,
    BlockResponse,
    ConsensusMessage,
    SyncedBlock,
)
from gridnode.core.consensus_sync import HELD_REQUESTS
from tests.consensus.helpers import ListBlocks, TagApp, keys, validator_set

KEYS = keys(4)
VALS = validator_set(KEYS)
DELAY_MS = 5
NAMES = [f"v{i}" for i in range(4)]


@dataclass
class World:
    config: ConsensusConfig
    now: int = 0
    seq: int = 0
    queue: list[tuple[int, int, str, object]] = field(default_factory=list)
    nodes: dict[str, Consensus | FullNode] = field(default_factory=dict)
    stores: dict[str, ListBlocks] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    #: node -> {height: virtual ms it decided it}
    decided_at: dict[str, dict[int, int]] = field(default_factory=dict)
    #: (receiver, height) -> block responses carrying that height it received
    pushes: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def build(cls, config: ConsensusConfig, full_nodes: int = 1) -> World:
        w = cls(config)
        for i, name in enumerate(NAMES):
            w.stores[name] = ListBlocks()
            w.nodes[name] = Consensus(
                validators=VALS, key=KEYS[i], app=TagApp(name), blocks=w.stores[name],
                config=config,
            )  # fmt: skip
        for j in range(full_nodes):
            name = f"f{j}"
            w.stores[name] = ListBlocks()
            w.nodes[name] = FullNode(
                validators=VALS, peers=NAMES, blocks=w.stores[name], config=config
            )
        for name, node in w.nodes.items():
            w.handle(name, node.start(0))
        return w

    def push(self, at: int, dst: str, event: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, dst, event))

    def handle(self, name: str, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Broadcast):
                for v in NAMES:
                    if v != name:
                        self.push(self.now + DELAY_MS, v, (name, eff.message))
            elif isinstance(eff, Send):
                self.push(self.now + DELAY_MS, eff.to, (name, eff.message))
            elif isinstance(eff, SetTimer):
                self.push(max(eff.at, self.now), name, eff)
            elif isinstance(eff, Decided):
                self.stores[name].blocks[eff.height] = SyncedBlock(
                    eff.height, eff.block, eff.commit
                )
                self.decided_at.setdefault(name, {})[eff.height] = self.now

    def run_until(self, until: int) -> None:
        while self.queue and self.queue[0][0] <= until:
            at, _, dst, event = heapq.heappop(self.queue)
            self.now = at
            if dst in self.down:
                continue
            node = self.nodes[dst]
            if isinstance(event, SetTimer):
                self.handle(dst, node.on_timer(event.kind, event.height, event.round, at))
                continue
            assert isinstance(event, tuple)
            sender: str = event[0]
            msg: ConsensusMessage = event[1]
            if sender in self.down:
                continue
            if isinstance(msg, BlockResponse):
                for sb in msg.blocks:
                    key = (dst, sb.height)
                    self.pushes[key] = self.pushes.get(key, 0) + 1
            self.handle(dst, node.on_message(sender, msg, at))
        self.now = until


# a block about every second, and a full node that would poll only once a minute
LONG_POLL = ConsensusConfig(commit_ms=1_000, sync_interval_ms=60_000, sync_wait_ms=5_000)


def _lag_ms(w: World, full: str) -> list[int]:
    """For each height the full node has: ms from the first validator's decision to its own."""
    first = {
        h: min(w.decided_at[v][h] for v in NAMES if h in w.decided_at.get(v, {}))
        for h in w.decided_at[full]
    }
    return [w.decided_at[full][h] - first[h] for h in sorted(w.decided_at[full])]


def test_a_full_node_learns_of_each_block_one_message_after_its_decision() -> None:
    w = World.build(LONG_POLL)
    w.run_until(30_000)
    fn = w.nodes["f0"]
    assert isinstance(fn, FullNode)
    validators_height = min(w.nodes[v].height for v in NAMES) - 1
    assert validators_height >= 20
    assert fn.height - 1 >= validators_height  # up to date, though it never polled
    assert max(_lag_ms(w, "f0")) <= 3 * DELAY_MS
    # one request per block (and the first), not one per poll interval
    assert fn.requests_sent <= fn.height + 1


def test_without_long_poll_a_full_node_lags_by_its_poll_interval() -> None:
    """The old behaviour (``sync_wait_ms = 0``) on the same network: the negative control."""
    w = World.build(ConsensusConfig(commit_ms=1_000, sync_interval_ms=60_000))
    w.run_until(30_000)
    fn = w.nodes["f0"]
    assert fn.height == 1  # asked at 0 ms, before any block: nothing until the next poll
    assert min(w.nodes[v].height for v in NAMES) > 20


def test_a_full_node_falls_back_to_another_peer_when_the_holder_is_gone() -> None:
    w = World.build(LONG_POLL)
    w.run_until(5_000)
    fn = w.nodes["f0"]
    assert isinstance(fn, FullNode)
    asked = [v for v in NAMES if "f0" in w.nodes[v]._held]
    assert len(asked) == 1  # one outstanding request: duplicates died out
    w.down.add(asked[0])
    w.run_until(30_000)
    lag = _lag_ms(w, "f0")
    assert max(lag) <= LONG_POLL.sync_wait_ms + 3 * DELAY_MS  # at most one wait, then the next
    assert fn.height - 1 >= min(w.nodes[v].height for v in NAMES if v not in w.down) - 1


def test_each_block_reaches_a_full_node_once_in_steady_state() -> None:
    w = World.build(LONG_POLL, full_nodes=3)
    w.run_until(30_000)
    for f in ("f0", "f1", "f2"):
        heights = sorted(w.decided_at[f])
        assert heights == list(range(1, heights[-1] + 1))
        assert all(w.pushes.get((f, h), 0) == 1 for h in heights[2:]), f


def test_held_requests_are_bounded_and_expire() -> None:
    v = Consensus(
        validators=VALS, key=KEYS[0], app=TagApp("v0"), blocks=ListBlocks(), config=LONG_POLL
    )
    v.start(0)
    for i in range(HELD_REQUESTS + 500):
        assert v.on_message(f"x{i}", BlockRequest(1, 32), 0) == []  # held, not answered
    assert len(v._held) == HELD_REQUESTS
    assert "x0" not in v._held and f"x{HELD_REQUESTS + 499}" in v._held  # the oldest dropped
    # a request for a height this node is not deciding is not held
    assert v.on_message("y", BlockRequest(7, 32), 0) == [] and "y" not in v._held
