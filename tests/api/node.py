"""A small REAL in-process node for API tests: one validator, the real ledger and mempool, no network.

It implements :class:`gridnode.status.NodeHandle` over :class:`gridnode.core.app.LedgerApp`: orders
placed through it are signed with the household key and admitted by the real mempool; ``commit()``
proposes, validates and applies a real block (single validator: its own proposal is the commit).
Time is ``now_ms``, set by the test (no wall clock).
"""

from __future__ import annotations

import random
from dataclasses import replace

from gridnode.core.app import LedgerApp
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    Genesis,
    SignedOrder,
    Tx,
    decode_block,
    sign_cancel,
    sign_order,
    sign_reading,
    tx_id,
)
from gridnode.history import History, MeteredSlot
from gridnode.localtime import LocalTime
from gridnode.status import (
    BlockInfo,
    PeerInfo,
    Snapshot,
    Submission,
    SubmitResult,
    ValidatorHealth,
)
from market.orders import Order, Side, Step

T0_MS = 1_800_000_000_000  # a slot boundary for 900 s slots (slot 2_000_000)
SLOT0 = T0_MS // 900_000
FIRST_OPEN = (
    SLOT0 + 1
)  # gate of slot k closes 300 s before it starts: slot SLOT0+1 closes at T0+600 s


class LocalNode:
    """A household node that is also the community's only validator. Member 0 is this node."""

    def __init__(self, *, seed: int = 7, n_members: int = 4, member: bool = True) -> None:
        rng = random.Random(seed)
        self.key = KeyPair.from_rng(rng)
        self.others = [KeyPair.from_rng(rng) for _ in range(n_members - 1)]
        members = ([self.key] if member else []) + self.others
        self.genesis = Genesis(
            community_id="api-test",
            genesis_time_ms=T0_MS,
            members=tuple(k.public_hex for k in members),
            validators=(self.key.public_hex,),
        )
        self.app = LedgerApp(self.genesis, proposer=self.key.public_hex)
        self.now_ms = T0_MS + 1_000
        self.peer_id = "12D3KooWLocalTestNode" + self.key.public_hex[:8]
        self.peers: tuple[PeerInfo, ...] = ()
        self.misbehaviour: dict[str, int] = {}
        self.forecast: tuple[tuple[int, int, int, int], ...] = ()
        self.gossip_orders: tuple[SignedOrder, ...] = ()
        self.submissions: tuple[Submission, ...] = ()
        self._blocks: list[BlockInfo] = []
        self._nonces: dict[str, int] = {}
        self.placed: list[Order] = []
        self.fail_next: Exception | None = None
        #: the node's history, fed with every committed block as the daemon feeds its own
        self.history = History(self.key.public_hex, self.genesis.clock, LocalTime.parse("UTC"))
        self.meter_source = "none"
        self.speedup = 1.0
        self.submit_failures: tuple[int, ...] = ()

    # ------------------------------------------------------------------ NodeHandle
    def snapshot(self) -> Snapshot:
        return Snapshot(
            peer_id=self.peer_id,
            household=self.key.public_hex,
            role="validator",
            community_id=self.genesis.community_id,
            now_ms=self.now_ms,
            ledger=self.app.state,
            peers=self.peers,
            validators=(ValidatorHealth(self.key.public_hex, True, self.now_ms),),
            mempool_size=len(self.app.mempool),
            misbehaviour=dict(self.misbehaviour),
            recent_blocks=tuple(reversed(self._blocks[-16:])),
            forecast=self.forecast,
            gossip_orders=self.gossip_orders,
            started_ms=T0_MS,
            submissions=self.submissions,
            speedup=self.speedup,
            timezone="UTC",
            meter_source=self.meter_source,
            history=self.history.view(),
            submit_failures=self.submit_failures,
        )

    async def place_order(self, order: Order) -> SubmitResult:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        order = replace(order, household=self.key.public_hex, nonce=self._next_nonce(self.key))
        self.placed.append(order)
        tx = sign_order(self.key, self.genesis, order)
        result = self.app.submit(tx)
        return SubmitResult(result.accepted, tx_id(tx).hex(), result.reason, order.order_id)

    async def cancel_order(self, slot: int) -> SubmitResult:
        tx = sign_cancel(self.key, self.genesis, slot=slot, nonce=self._next_nonce(self.key))
        result = self.app.submit(tx)
        return SubmitResult(result.accepted, tx_id(tx).hex(), result.reason)

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return [b for b in self._blocks if b.height >= from_height][:limit]

    # ------------------------------------------------------------------ test driving
    def _next_nonce(self, key: KeyPair) -> int:
        committed = self.app.state.nonces.get(key.public_hex, 0)
        n = max(committed, self._nonces.get(key.public_hex, 0)) + 1
        self._nonces[key.public_hex] = n
        return n

    def other_order(self, i: int, side: Side, slot: int, *steps: tuple[int, int]) -> Tx:
        """A signed order from another member (as if it arrived from the network)."""
        key = self.others[i]
        n = self._next_nonce(key)
        order = Order(
            f"o{i}-{n}", key.public_hex, side, slot, tuple(Step(p, e) for p, e in steps), n
        )
        return sign_order(key, self.genesis, order)

    def submit(self, tx: Tx) -> None:
        result = self.app.submit(tx)
        assert result.accepted, result.reason

    def metered(self, slot: int, natural_wh: int, *, pv_wh: int, load_wh: int) -> None:
        """What the household driver records for a delivered slot of this node's meter."""
        self.history.record_metered(
            MeteredSlot(slot, natural_wh, natural_wh, pv_wh=pv_wh, load_wh=load_wh)
        )

    def reading(self, member: int, slot: int, net_wh: int) -> Tx:
        key = self.key if member < 0 else self.others[member]
        return sign_reading(key, self.genesis, slot=slot, net_wh=net_wh)

    def commit(self, *, advance_ms: int = 1_000) -> int:
        """Advance the clock by ``advance_ms``, then propose, validate and apply the next block."""
        self.now_ms += advance_ms
        height = self.app.state.height + 1
        raw = self.app.make_block(height, 0, self.now_ms)
        assert self.app.block_error(height, raw, self.now_ms) is None
        before = self.app.state
        after = self.app.apply(height, raw)
        block = decode_block(raw)
        assert self.history.on_block(before, block, after.head_hash) == after
        self._blocks.append(
            BlockInfo(height, block.hash.hex(), block.time_ms, block.proposer, len(block.txs))
        )
        return height
