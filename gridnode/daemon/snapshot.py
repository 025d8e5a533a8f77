"""The daemon's status: what the API and the status page read, as an immutable snapshot.

Rules of this module:

* The node (on the trio thread) republishes a :class:`~gridnode.status.Snapshot` after every
  change (a block, a submission, a timer) and every half second; the API (on the asyncio thread)
  only ever reads the latest one (``DaemonNode.latest``) — nothing else crosses the threads
  except commands over the bridge.
* Kept here, bounded: the last ``_RECENT_BLOCKS`` committed blocks' headers (``/api/blocks``) and
  the last ``_SUBMISSIONS`` orders this node signed and sent with their validator's answer
  (``/api/submissions``: the API's orders and the household driver's quotes alike).
* Misbehaviour comes from one record only — the net layer's peer statistics, each refusal once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import TYPE_CHECKING

from gridnode.core.ledger import Tx, decode_block, tx_id
from gridnode.metrics import CommitLatency
from gridnode.net.host import public_hex_of
from gridnode.node import Committed
from gridnode.status import BlockInfo, PeerInfo, Snapshot, Submission, SubmitResult, ValidatorHealth
from market.errors import InvalidInput
from market.orders import Order

if TYPE_CHECKING:
    from gridnode.daemon.node import DaemonNode

__all__ = ["StatusBoard"]

_RECENT_BLOCKS = 1_000
#: submitted orders the snapshot shows (``/api/submissions``): a week of 15-minute slots and more
_SUBMISSIONS = 2_000
#: peers the snapshot shows besides the connected ones: the most recently active
_PEERS_SHOWN = 100
#: submissions no validator acknowledged, kept for the health badge
_SUBMIT_FAILURES = 256


def _block_info(height: int, block_hash: bytes, block: bytes) -> BlockInfo:
    parsed = decode_block(block)
    return BlockInfo(height, block_hash.hex(), parsed.time_ms, parsed.proposer, len(parsed.txs))


def _submission(order: Order, at_ms: int, result: SubmitResult) -> Submission:
    return Submission(
        slot=order.slot,
        at_ms=at_ms,
        order_id=order.order_id,
        tx_id=result.tx_id,
        side=order.side.value,
        energy_wh=order.energy_wh,
        steps=len(order.steps),
        accepted=result.accepted,
        reason=result.reason,
    )


class StatusBoard:
    """One node's recent blocks and submissions, and the snapshot built from the node."""

    def __init__(self, node: DaemonNode) -> None:
        self._node = node
        self._recent: deque[BlockInfo] = deque(maxlen=_RECENT_BLOCKS)
        self._submissions: deque[Submission] = deque(maxlen=_SUBMISSIONS)
        self._submit_failures: deque[int] = deque(maxlen=_SUBMIT_FAILURES)
        self._latency = CommitLatency()
        store, height = node.runtime.store, node.runtime.state.height
        for sb in store.blocks_from(max(1, height - _RECENT_BLOCKS + 1), _RECENT_BLOCKS):
            self._recent.appendleft(_block_info(sb.height, sb.block_hash, sb.block))

    def record_submission(self, order: Order, at_ms: int, result: SubmitResult) -> None:
        self._submissions.append(_submission(order, at_ms, result))

    def sending(self, txs: Sequence[Tx]) -> None:
        """This node sends ``txs`` (their commit latency starts now)."""
        self._latency.sent((tx_id(tx) for tx in txs), self._node.clock.wall_ms())

    def not_acknowledged(self) -> None:
        """No validator acknowledged a submission (the health badge counts these)."""
        self._submit_failures.append(self._node.clock.now_ms())

    def on_commit(self, event: Committed) -> None:
        block = event.block
        self._latency.committed((tx_id(tx) for tx in block.txs), self._node.clock.wall_ms())
        self._recent.appendleft(
            BlockInfo(event.height, event.block_hash.hex(), block.time_ms, block.proposer,
                      len(block.txs))
        )  # fmt: skip

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return sorted((b for b in self._recent if b.height >= from_height), key=lambda b: b.height)[
            :limit
        ]

    def make(self) -> Snapshot:
        node = self._node
        net, runtime = node.net, node.runtime
        connected = set(net.connected_peers())
        # the one record of misbehaviour (each refusal once): totals of every peer ever, the
        # counters of connected peers and of the latest others (bounded: identities are free)
        totals = net.misbehaviour_totals()
        stats = net.peer_stats(peers=connected, recent=_PEERS_SHOWN)
        peers = []
        for peer in sorted(set(stats) | connected):
            try:
                household = public_hex_of(peer)  # cached in gridnode.net.identity
            except InvalidInput:
                household = ""
            st = stats.get(peer)
            bad = dict(st.misbehaviour) if st is not None else {}
            peers.append(
                PeerInfo(
                    peer,
                    household,
                    peer in connected,
                    bad,
                    score=round(st.score, 1) if st is not None else 0.0,
                    banned=st is not None and st.banned,
                )
            )
        health = tuple(
            ValidatorHealth(
                v,
                connected=(v == node.key.public_hex) or node.validator_peers[v] in connected,
                last_seen_ms=runtime.last_heard_ms.get(v),
            )
            for v in node.validators
        )
        return Snapshot(
            peer_id=net.peer_id,
            household=node.key.public_hex,
            role="validator" if runtime.is_validator else "full",
            community_id=node.genesis.community_id,
            now_ms=node.clock.now_ms(),
            ledger=runtime.state,
            peers=tuple(peers),
            validators=health,
            mempool_size=len(runtime.app.mempool),
            misbehaviour=totals,
            recent_blocks=tuple(islice(self._recent, 50)),
            forecast=node.forecast,
            gossip_orders=tuple(node.gossip.live_orders.values()),
            started_ms=node.started_ms,
            submissions=tuple(self._submissions),
            speedup=node.clock.speedup,
            timezone=node.zone.name,
            meter_source=node.config.meter_source,
            forecaster_state=node.forecaster_state,
            history=node.history.view(),
            submit_failures=tuple(self._submit_failures),
            commit_latency=self._latency.histogram(),
            evidence=tuple(runtime.recent_evidence),
            evidence_total=runtime.evidence,
            banned_peers=net.banned_count(),
        )
