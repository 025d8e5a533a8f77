"""What the daemon shows the outside world: an immutable snapshot, and the handle the API talks to.

The node core is single-owner (it lives on the trio side). After every change it publishes a new
:class:`Snapshot` (frozen; replacing one reference is atomic), which the asyncio side (API, status
page) reads without locks. Commands from the API (place/cancel an order) go through
:class:`NodeHandle`, whose implementation queues them to the owner and awaits the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gridnode.core.consensus_messages import Evidence
from gridnode.core.ledger import LedgerState, OpenOrder
from gridnode.history import HistoryView
from gridnode.metrics import LatencyHistogram
from market.orders import Order

__all__ = [
    "BlockInfo",
    "NodeHandle",
    "PeerInfo",
    "Snapshot",
    "Submission",
    "SubmitResult",
    "ValidatorHealth",
]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: str
    household: str  # hex public key ("" if unknown)
    connected: bool
    misbehaviour: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    score: float = 0.0  # the peer score (0 clean, lower worse; docs/protocol.md §6)
    banned: bool = False  # refused for its back-off period


@dataclass(frozen=True, slots=True)
class ValidatorHealth:
    public_key: str
    connected: bool
    last_seen_ms: int | None  # our clock when we last heard a consensus message from it


@dataclass(frozen=True, slots=True)
class BlockInfo:
    height: int
    hash: str  # hex
    time_ms: int
    proposer: str
    tx_count: int


@dataclass(frozen=True, slots=True)
class Submission:
    """An order this node signed and submitted (its bidding loop or the API), and the answer.

    What happened to it afterwards is on the chain: the transaction ``tx_id`` in a block, the order
    in its slot's cleared book (:mod:`gridnode.chain`)."""

    slot: int
    at_ms: int  # the node's clock when it was signed and sent (unix ms)
    order_id: str
    tx_id: str  # hex
    side: str  # "buy" | "sell"
    energy_wh: int
    steps: int
    accepted: bool  # by a validator's mempool (or ours)
    reason: str = ""  # why not, if not


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the API and page show, as of ``now_ms`` (the node's clock, unix ms)."""

    peer_id: str
    household: str
    role: str  # "validator" | "full"
    community_id: str
    now_ms: int
    ledger: LedgerState
    peers: tuple[PeerInfo, ...] = ()
    validators: tuple[ValidatorHealth, ...] = ()
    mempool_size: int = 0
    misbehaviour: Mapping[str, int] = field(default_factory=dict)  # reason -> count, all peers
    recent_blocks: tuple[BlockInfo, ...] = ()  # newest first, a bounded window
    #: (slot, p10_wh, p50_wh, p90_wh) of forecast net surplus
    forecast: tuple[tuple[int, int, int, int], ...] = ()
    #: the live book seen on gossip (signature-checked), not yet committed
    gossip_orders: tuple[OpenOrder, ...] = ()
    started_ms: int = 0
    #: the latest orders this node submitted, oldest first (a bounded window)
    submissions: tuple[Submission, ...] = ()
    #: the community clock's speed-up (node-time ages / speedup = wall seconds)
    speedup: float = 1.0
    #: the household's time zone as configured (``node.timezone``; :mod:`gridnode.localtime`)
    timezone: str = "UTC"
    #: ``meter.source`` ("none", "replay", "file", "dsmr", "mqtt")
    meter_source: str = "none"
    #: what the household forecasts with: "none" (no meter), "off" (bidding disabled), "warming"
    #: (loading its meter history and forecaster after start-up, until its first forecast), else
    #: the model of its last forecast (e.g. "profile-qr")
    forecaster_state: str = "none"
    #: this household's recent slots kept after settlement (:mod:`gridnode.history`)
    history: HistoryView | None = None
    #: node times (unix ms) of recent submissions no validator acknowledged, oldest first
    submit_failures: tuple[int, ...] = ()
    #: submission-to-commit times of this node's transactions (:mod:`gridnode.metrics`)
    commit_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: equivocation evidence this validator saw (two different signed values of one validator
    #: for one step; the latest, oldest first) and how many since it started
    evidence: tuple[Evidence, ...] = ()
    evidence_total: int = 0
    #: peers banned now (``peers`` shows the connected and the latest others only); ``None``:
    #: count the banned among ``peers``
    banned_peers: int | None = None

    @property
    def height(self) -> int:
        return self.ledger.height

    @property
    def current_slot(self) -> int:
        return self.ledger.genesis.clock.slot_at(self.now_ms // 1000)

    @property
    def first_open_slot(self) -> int:
        return self.ledger.genesis.clock.first_open_slot(self.now_ms // 1000)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """``accepted`` by a validator's mempool (or ours), else ``reason``. ``tx_id`` is hex."""

    accepted: bool
    tx_id: str
    reason: str = ""
    order_id: str = ""


class NodeHandle(Protocol):
    """What the API may do with the node (implemented by the daemon; by a real in-process node in tests)."""

    def snapshot(self) -> Snapshot:
        """The latest snapshot (never blocks)."""
        ...

    async def place_order(self, order: Order) -> SubmitResult:
        """Sign ``order`` with the household key (its ``household`` and ``nonce`` are filled in by
        the node) and submit it to the validators."""
        ...

    async def cancel_order(self, slot: int) -> SubmitResult:
        """Cancel this household's open order for ``slot``."""
        ...

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        """Committed blocks from the store, ascending, at most ``limit``."""
        ...
