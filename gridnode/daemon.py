"""The household daemon: one process, two event loops, one node owner.

``gridnode run --dir DIR`` starts this. Layout:

* **asyncio** (the main thread) serves the local API and status page (:mod:`gridnode.api`) and
  handles SIGINT/SIGTERM.
* **trio** (one thread, :class:`gridnode.net.bridge.TrioBridge`) runs the libp2p host and owns the
  node: a :class:`DaemonNode` wraps the :class:`~gridnode.node.NodeRuntime` (store, ledger,
  consensus). Everything that touches the runtime or the SQLite store runs on this thread.
* The two meet only through the bridge (API commands are awaited calls onto the trio thread) and an
  immutable :class:`~gridnode.status.Snapshot` the node republishes after every change.

Network protocols (``docs/protocol.md``): consensus messages travel as one-way framed messages on
``/gridnode/<community>/consensus/1.0.0`` (addressed by public key, which *is* the peer id);
transactions are submitted with an acknowledged request to a validator (re-sent to the next one on
timeout): a household's readings and order of a slot in one ``…/submit-batch/1.0.0`` request, the
API's single orders and cancels on ``…/submit/1.0.0``; validators share accepted transactions with
each other on ``…/tx/1.0.0``; and each validator gossips the orders it accepted as batches (at most
one message per second) on the GossipSub topic ``/gridnode/<community>/orders/2``, whose validator
refuses a whole batch if any order in it is malformed, unsigned, from a non-member, replayed or for
a closed slot. (py-libp2p costs every host milliseconds of CPU per gossip message: few messages.)

A member household with a meter runs a :class:`~gridnode.household_driver.HouseholdDriver` in the
node's nursery: its pure agent reads, quotes and hands signed readings and orders to
:meth:`DaemonNode.submit_batch`.

Time: the node clock (:class:`~gridnode.clock.NodeClock`) is ``epoch + (wall − epoch) × speedup`` in
unix ms, with ``epoch`` the genesis time and ``wall`` trio's clock anchored to the wall clock at
start, so every timer runs on trio's clock. Every node of a community must run the same speedup
(demos use e.g. 60: a 15-minute slot in 15 s); the consensus timeouts are scaled by the same factor
so they stay sane in real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import signal
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import trio

from gridnode.api import make_app, start_api
from gridnode.clock import NodeClock
from gridnode.config import Config, DirLock, load_config, load_genesis, load_identity, load_token
from gridnode.core.consensus import ConsensusConfig, TimerKind
from gridnode.core.consensus_messages import (
    Proposal,
    Vote,
    decode_message,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    SignedOrder,
    Tx,
    admission_error,
    decode_block,
    decode_tx,
    sign_cancel,
    sign_order,
    sign_reading,
    tx_id,
)
from gridnode.household_driver import HouseholdDriver
from gridnode.meter import FileMeter, Meter, shipped_replay
from gridnode.meters import open_live_meter, start_meter_reader, stop_meter_reader
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import (
    NetConfig,
    NetHost,
    open_net_host,
    peer_id_of_hex,
    public_hex_of,
)
from gridnode.node import Committed, NodeRuntime
from gridnode.status import (
    BlockInfo,
    PeerInfo,
    Snapshot,
    Submission,
    SubmitResult,
    ValidatorHealth,
)
from gridnode.store import NodeStore
from gridnode.txbatch import (
    decode_tx_batch,
    decode_tx_results,
    encode_tx_batch,
    encode_tx_results,
    split_for,
)
from market.errors import (
    InvalidInput,
    LedgerReason,
    NetworkError,
    PeerMisbehaviour,
    Rejected,
    UsageError,
    WireReason,
    is_misbehaviour,
    reason_of,
)
from market.orders import Order

__all__ = ["DaemonNode", "run_daemon"]

log = logging.getLogger("gridnode")

_RECENT_BLOCKS = 1_000
#: gossip topic ``orders`` carries batches of orders since version 2 (``docs/protocol.md`` §7.4)
_ORDERS_TOPIC_VERSION = 2
#: a validator publishes at most one order batch per this many wall seconds, ...
_GOSSIP_EVERY_S = 1.0
#: ... after gathering for at least this long (households submit in a burst at a slot boundary)
_GOSSIP_GATHER_S = 0.25
#: orders whose gate closes within this many wall seconds are not gossiped (they would arrive late)
_GOSSIP_MARGIN_S = 2.0
#: decoded gossip batches kept between the topic validator and the handler
_DECODED_CACHE = 64
#: peers the snapshot shows besides the connected ones: the most recently active
_PEERS_SHOWN = 100
#: submitted orders the snapshot shows (``/api/submissions``): a week of 15-minute slots and more
_SUBMISSIONS = 2_000


def consensus_config(speedup: float) -> ConsensusConfig:
    """Timeouts for real networks (one block about every second of wall time), scaled to the clock."""
    base = ConsensusConfig(
        propose_ms=1_000,
        propose_delta_ms=500,
        prevote_ms=500,
        prevote_delta_ms=250,
        precommit_ms=500,
        precommit_delta_ms=250,
        commit_ms=1_000,
        sync_interval_ms=1_000,
        rebroadcast_ms=2_000,
    )
    if speedup == 1.0:
        return base
    scaled = {
        name: int(getattr(base, name) * speedup)
        for name in (
            "propose_ms",
            "propose_delta_ms",
            "prevote_ms",
            "prevote_delta_ms",
            "precommit_ms",
            "precommit_delta_ms",
            "commit_ms",
            "sync_interval_ms",
            "rebroadcast_ms",
        )
    }
    return replace(base, **scaled)


class DaemonNode:
    """The node owner on the trio thread: runtime + libp2p host + timers + snapshot."""

    def __init__(
        self,
        *,
        config: Config,
        genesis: Genesis,
        key: KeyPair,
        store: NodeStore,
        net: NetHost,
        clock: NodeClock,
        meter: Meter | None = None,
    ) -> None:
        self.config = config
        self.genesis = genesis
        self.key = key
        self.net = net
        self.clock = clock
        self.started_ms = clock.now_ms()
        self.validators = list(genesis.validators)
        self.validator_peers = {v: peer_id_of_hex(v) for v in self.validators}
        self._timers: list[tuple[int, int, TimerKind, int, int]] = []
        self._timer_seq = 0
        self._timer_changed = trio.Event()
        self._recent: deque[BlockInfo] = deque(maxlen=_RECENT_BLOCKS)
        self._submissions: deque[Submission] = deque(maxlen=_SUBMISSIONS)
        self._nonce = 0
        self.live_orders: dict[bytes, SignedOrder] = {}  # seen on gossip, not yet committed
        #: validators: orders accepted from submissions, to gossip in the next batch
        self._gossip_pending: dict[tuple[str, int], SignedOrder] = {}
        self._gossip_wake = trio.Event()
        self._decoded: OrderedDict[bytes, tuple[SignedOrder, ...]] = OrderedDict()
        self.runtime = NodeRuntime(
            genesis=genesis,
            key=key,
            store=store,
            outbox=self,
            validator=config.role == "validator",
            config=consensus_config(clock.speedup),
            sync_peers=[v for v in self.validators if v != key.public_hex],
            verified_votes=set(),  # _on_consensus checks signatures first; the core reuses them
        )
        self.runtime.listeners.append(self._on_commit)
        for sb in store.blocks_from(
            max(1, self.runtime.state.height - _RECENT_BLOCKS + 1), _RECENT_BLOCKS
        ):
            self._recent.appendleft(self._block_info(sb.height, sb.block_hash, sb.block))
        #: the household's meter readings and automatic orders (a household with a meter)
        self.household = None if meter is None else HouseholdDriver(self, meter, config)
        self.latest = self._make_snapshot()

    @property
    def forecast(self) -> tuple[tuple[int, int, int, int], ...]:
        """The household's last forecast ``(slot, P10, P50, P90)`` Wh (the status page shows it)."""
        return () if self.household is None else self.household.forecast

    @property
    def meter(self) -> Meter | None:
        """Where the household's readings come from (``None``: no meter configured)."""
        return None if self.household is None else self.household.meter

    # ------------------------------------------------------------------ Outbox (runtime -> net)
    def broadcast(self, data: bytes) -> None:
        for v, peer in self.validator_peers.items():
            if v != self.key.public_hex:
                self._send(peer, data)

    def send(self, to: str, data: bytes) -> None:
        try:
            peer = self.validator_peers.get(to) or peer_id_of_hex(to)
        except InvalidInput:
            return
        self._send(peer, data)

    def _send(self, peer: str, data: bytes) -> None:
        try:
            self.net.send_soon(peer, "consensus", [data])
        except (UsageError, NetworkError) as exc:
            log.debug("send to %s failed: %s", peer, exc)

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at_ms, self._timer_seq, kind, height, round_))
        self._timer_changed.set()

    # ------------------------------------------------------------------ tasks
    async def run(self) -> None:
        """Start the node and serve until cancelled."""
        self.net.protect(self.validator_peers.values())  # never banned by one bad message
        self.net.on_message("consensus", self._on_consensus)
        self.net.on_message("tx", self._on_shared_tx)
        self.net.on_request("submit", self._on_submit)
        self.net.on_request("submit-batch", self._on_submit_batch)
        await self.net.subscribe(
            "orders",
            self._on_gossip_order,
            validate=self._validate_gossip,
            version=_ORDERS_TOPIC_VERSION,
        )
        self.runtime.start(self.clock.now_ms())
        self._publish()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._refresh_loop)
            if self.runtime.is_validator:
                nursery.start_soon(self._gossip_loop)
            if self.household is not None:
                nursery.start_soon(self.household.run, self._publish)

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed = trio.Event()
            wait = self.clock.seconds_until(self._timers[0][0]) if self._timers else 3600.0
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._timer_changed.wait()
                continue
            now = self.clock.now_ms()
            while self._timers and self._timers[0][0] <= now:
                _, _, kind, height, round_ = heapq.heappop(self._timers)
                self.runtime.on_timer(kind, height, round_, now)
            self._publish()

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(0.5)
            self._publish()

    # ------------------------------------------------------------------ net -> runtime
    # Peer-facing handlers decode what a peer sent and refuse bad bytes by raising InvalidInput;
    # the net layer (gridnode.net.peers) records it against the peer if the reason is
    # misbehaviour, once. A refusal an honest peer can meet (slot_closed, stale_nonce, ...) is
    # answered with its reason and never counted.

    def _on_consensus(self, peer_id: str, body: bytes) -> None:
        """A consensus message from ``peer_id`` (whose key is its peer id). It must decode, and a
        vote or proposal for the height being decided (or the next) must be signed by a
        validator (the round's proposer for a proposal): ``bad_signature`` otherwise."""
        sender = public_hex_of(peer_id)
        msg = decode_message(body)
        current = self.runtime.state.height + 1
        if isinstance(msg, Vote | Proposal) and current <= msg.height <= current + 1:
            ok = (
                verify_vote(self.runtime.validators, msg)
                if isinstance(msg, Vote)
                else verify_proposal(self.runtime.validators, msg)
            )
            if not ok:
                raise InvalidInput(
                    reason=LedgerReason.BAD_SIGNATURE,
                    subject=f"{type(msg).__name__.lower()} {msg.height}/{msg.round}",
                    expected="a validator's signature",
                )
        self.runtime.on_message(sender, body, self.clock.now_ms())

    def _accept_tx(self, tx: Tx, *, share: bool) -> SubmitResult:
        result = self.runtime.submit(tx, self.clock.now_ms())
        tid = result.tx_id.hex()
        if result.accepted and share:
            for v, peer in self.validator_peers.items():
                if v != self.key.public_hex:
                    with contextlib.suppress(UsageError, NetworkError):
                        self.net.send_soon(peer, "tx", [tx.encode()])
            if isinstance(tx, SignedOrder):  # gossiped in the next batch (_gossip_loop)
                key = (tx.household, tx.order.slot)
                held = self._gossip_pending.get(key)
                if held is None or held.order.nonce < tx.order.nonce:
                    self._gossip_pending[key] = tx
                self._gossip_wake.set()
        reason = reason_of(result.reason) if result.reason else None
        accepted = result.accepted or reason is LedgerReason.DUPLICATE
        return SubmitResult(accepted, tid, reason or "")

    async def _gossip_loop(self) -> None:
        """Validators: publish the orders accepted from submissions as one gossip message (a
        batch), at most every ``_GOSSIP_EVERY_S`` of wall time and only when there are any.

        Orders already committed, replaced, or whose gate closes within ``_GOSSIP_MARGIN_S`` are
        left out: the live book is the not-yet-committed orders, and a peer receiving a closed
        slot's order would rightly refuse the whole batch.
        """
        last = -1e9
        while True:
            await self._gossip_wake.wait()
            self._gossip_wake = trio.Event()
            await trio.sleep(max(_GOSSIP_GATHER_S, last + _GOSSIP_EVERY_S - trio.current_time()))
            pending, self._gossip_pending = list(self._gossip_pending.values()), {}
            last = trio.current_time()
            ahead_ms = self.clock.now_ms() + int(_GOSSIP_MARGIN_S * 1000 * self.clock.speedup)
            state = self.runtime.state
            fresh = [
                tx
                for tx in pending
                if admission_error(state, tx, time_ms=ahead_ms, verified=self._verified) is None
            ]
            runs = split_for(fresh, self.net.config.max_gossip_bytes)
            for run in runs:
                try:
                    data = encode_tx_batch(run)
                    await self.net.publish("orders", data, version=_ORDERS_TOPIC_VERSION)
                except (InvalidInput, UsageError) as exc:  # e.g. a slot closed in between
                    log.warning("order batch of %d not gossiped: %s", len(run), exc)
            if runs:
                log.info("gossiped %d orders in %d batch(es)", len(fresh), len(runs))

    @property
    def _verified(self) -> set[bytes]:
        """Ids of transactions whose signature this node verified (each is checked once)."""
        return self.runtime.app.verified

    async def _on_submit(self, peer_id: str, body: bytes) -> bytes:
        """``submit``: one transaction; OK with its id, or REJECTED with the bare reason code."""
        tx = decode_tx(body)
        if not self.runtime.is_validator:
            raise InvalidInput(reason=LedgerReason.NOT_A_VALIDATOR, subject="submit")
        result = self._accept_tx(tx, share=True)
        self._publish()
        if not result.accepted:
            raise InvalidInput(reason=result.reason, subject=f"tx {result.tx_id[:16]}")
        return bytes.fromhex(result.tx_id)

    async def _on_submit_batch(self, peer_id: str, body: bytes) -> bytes:
        """A household's transactions of a slot in one request: one result per transaction. A
        batch carrying forged or foreign transactions is misbehaviour of its sender, recorded once
        per reason (the batch is one message) while every transaction still gets its answer."""
        txs = decode_tx_batch(body, max_bytes=self.net.config.max_frame_bytes)
        if not self.runtime.is_validator:
            raise InvalidInput(reason=LedgerReason.NOT_A_VALIDATOR, subject="submit-batch")
        results = [self._accept_tx(tx, share=True) for tx in txs]
        self._publish()
        faults = {r.reason for r in results if not r.accepted and is_misbehaviour(r.reason)}
        for reason in sorted(faults):
            cause = InvalidInput(reason=reason, subject=f"submit-batch of {len(txs)}")
            self.net.report_misbehaviour(PeerMisbehaviour(peer_id, cause))
        return encode_tx_results(
            [(bytes.fromhex(r.tx_id), None if r.accepted else reason_of(r.reason)) for r in results]
        )

    def _on_shared_tx(self, peer_id: str, body: bytes) -> None:
        """``tx``: a transaction another validator accepted (mempool sharing). Only validators may
        send it; one that forwards a forged or malformed transaction is to blame."""
        if not self.runtime.is_validator:
            return
        if peer_id not in self.validator_peers.values():
            raise InvalidInput(
                reason=WireReason.NOT_PERMITTED, subject="tx", expected="a validator"
            )
        tx = decode_tx(body)
        result = self.runtime.submit(tx, self.clock.now_ms())
        if not result.accepted and is_misbehaviour(result.reason):
            raise InvalidInput(reason=result.reason, subject=f"shared tx {tx.id.hex()[:16]}")

    def _order_batch(self, data: bytes) -> tuple[SignedOrder, ...]:
        """Decode a gossiped order batch once: the topic validator (which may run more than once
        on our own messages) and the handler share the result."""
        orders = self._decoded.get(data)
        if orders is not None:
            return orders
        txs = decode_tx_batch(data, max_bytes=self.net.config.max_gossip_bytes)
        orders = tuple(tx for tx in txs if isinstance(tx, SignedOrder))
        if len(orders) != len(txs):
            raise InvalidInput(reason=WireReason.NOT_AN_ORDER, subject="order batch")
        self._decoded[data] = orders
        while len(self._decoded) > _DECODED_CACHE:
            self._decoded.popitem(last=False)
        return orders

    def _validate_gossip(self, origin: str, data: bytes) -> None:
        """Every order in the batch must be admissible now (member, signature, not replayed, slot
        open) — or be exactly the order the ledger already committed (the batch raced the block).
        One bad order refuses the batch with its reason (the net layer blames the forwarder only
        for misbehaviour: a stale nonce or a closed slot can be a race, a forgery cannot)."""
        orders = self._order_batch(data)
        state, now = self.runtime.state, self.clock.now_ms()
        for tx in orders:
            error = admission_error(state, tx, time_ms=now, verified=self._verified)
            if error is not None and not _is_committed(state, tx):
                self._decoded.pop(data, None)
                raise error

    def _on_gossip_order(self, origin: str, data: bytes) -> None:
        orders = self._decoded.pop(data, None)
        if orders is None:  # validated, then pushed out of the cache by later batches
            try:
                orders = self._order_batch(data)
            except InvalidInput:
                return
            self._decoded.pop(data, None)
        state, now = self.runtime.state, self.clock.now_ms()
        for tx in orders:
            if _is_committed(state, tx):
                continue
            self.live_orders[tx_id(tx)] = tx
            if self.runtime.is_validator:
                self.runtime.submit(tx, now)

    # ------------------------------------------------------------------ commands (from the API)
    def _next_nonce(self) -> int:
        self._nonce = max(self._nonce, self.runtime.state.nonces.get(self.key.public_hex, 0)) + 1
        return self._nonce

    def sign_order(self, order: Order) -> SignedOrder:
        """``order`` as this household's, with its next nonce, signed."""
        order = replace(order, household=self.key.public_hex, nonce=self._next_nonce())
        return sign_order(self.key, self.genesis, order)

    async def place_order(self, order: Order) -> SubmitResult:
        at_ms = self.clock.now_ms()
        result = await self._submit(self.sign_order(order))
        result = replace(result, order_id=order.order_id)
        self.record_submission(order, at_ms, result)
        return result

    def record_submission(self, order: Order, at_ms: int, result: SubmitResult) -> None:
        """Keep a submitted order and its validator's answer for ``/api/submissions`` (the API's
        orders and the household driver's quotes alike)."""
        self._submissions.append(_submission(order, at_ms, result))

    async def cancel_order(self, slot: int) -> SubmitResult:
        return await self._submit(
            sign_cancel(self.key, self.genesis, slot=slot, nonce=self._next_nonce())
        )

    async def submit_reading(self, slot: int, net_wh: int) -> SubmitResult:
        return await self._submit(sign_reading(self.key, self.genesis, slot=slot, net_wh=net_wh))

    async def _submit(self, tx: Tx) -> SubmitResult:
        if self.runtime.is_validator:
            result = self._accept_tx(tx, share=True)
            self._publish()
            return result
        tid = tx_id(tx).hex()
        try:
            _, _ = await self.net.submit(self._submit_peers(), "submit", tx.encode())
        except Rejected as exc:  # the validator refused it; its answer is the reason code
            return SubmitResult(False, tid, exc.reason)
        return SubmitResult(True, tid)

    def _submit_peers(self) -> list[str]:
        peers = [p for v, p in self.validator_peers.items() if v != self.key.public_hex]
        connected = set(self.net.connected_peers())
        peers.sort(key=lambda p: p not in connected)  # connected validators first
        return peers

    async def submit_batch(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """Submit ``txs`` in one acknowledged request (``…/submit-batch/1.0.0``): one result per
        transaction, in order. :class:`NetworkError` when no validator answered."""
        if self.runtime.is_validator:
            results = [self._accept_tx(tx, share=True) for tx in txs]
            self._publish()
            return results
        try:
            peer, answer = await self.net.submit(
                self._submit_peers(), "submit-batch", encode_tx_batch(txs)
            )
        except (
            Rejected
        ) as exc:  # the whole batch was refused (e.g. we are not talking to a validator)
            return [SubmitResult(False, tx_id(tx).hex(), exc.reason) for tx in txs]
        try:
            rows = decode_tx_results(answer, expected=len(txs))
        except InvalidInput as exc:
            raise NetworkError(f"validator {peer} answered a batch with {exc}") from exc
        if [tid for tid, _ in rows] != [tx_id(tx) for tx in txs]:
            raise NetworkError(f"validator {peer} answered a batch for other transactions")
        return [SubmitResult(reason is None, tid.hex(), reason or "") for tid, reason in rows]

    # ------------------------------------------------------------------ snapshot
    def _block_info(self, height: int, block_hash: bytes, block: bytes) -> BlockInfo:
        parsed = decode_block(block)
        return BlockInfo(height, block_hash.hex(), parsed.time_ms, parsed.proposer, len(parsed.txs))

    def _on_commit(self, event: Committed) -> None:
        stored = self.runtime.store.block(event.height)
        if stored is not None:
            self._recent.appendleft(self._block_info(event.height, stored.block_hash, stored.block))
        # the live book keeps what the ledger does not hold yet: an order whose nonce the ledger
        # has used (committed, or replaced by a newer one) leaves it, as does a closed slot's
        nonces = event.state.nonces
        open_slot = self.genesis.clock.first_open_slot(event.state.time_ms // 1000)
        self.live_orders = {
            k: v
            for k, v in self.live_orders.items()
            if v.order.nonce > nonces.get(v.household, -1) and v.order.slot >= open_slot
        }
        if event.height % 50 == 0:
            log.info("height %d, %d slots settled", event.height, event.state.settled_slots)

    def _make_snapshot(self) -> Snapshot:
        connected = set(self.net.connected_peers())
        # the one record of misbehaviour (each refusal once): totals of every peer ever, the
        # counters of connected peers and of the latest others (bounded: identities are free)
        totals = self.net.misbehaviour_totals()
        stats = self.net.peer_stats(peers=connected, recent=_PEERS_SHOWN)
        peers = []
        for peer in sorted(set(stats) | connected):
            household = _household_of(peer)
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
                connected=(v == self.key.public_hex) or self.validator_peers[v] in connected,
                last_seen_ms=self.runtime.last_heard_ms.get(v),
            )
            for v in self.validators
        )
        return Snapshot(
            peer_id=self.net.peer_id,
            household=self.key.public_hex,
            role="validator" if self.runtime.is_validator else "full",
            community_id=self.genesis.community_id,
            now_ms=self.clock.now_ms(),
            ledger=self.runtime.state,
            peers=tuple(peers),
            validators=health,
            mempool_size=len(self.runtime.app.mempool),
            misbehaviour=totals,
            recent_blocks=tuple(list(self._recent)[:50]),
            forecast=self.forecast,
            gossip_orders=tuple(self.live_orders.values()),
            started_ms=self.started_ms,
            submissions=tuple(self._submissions),
            evidence=tuple(self.runtime.recent_evidence),
            evidence_total=self.runtime.evidence,
            banned_peers=self.net.banned_count(),
        )

    def _publish(self) -> None:
        self.latest = self._make_snapshot()

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return sorted((b for b in self._recent if b.height >= from_height), key=lambda b: b.height)[
            :limit
        ]


@functools.lru_cache(maxsize=4_096)
def _household_of(peer: str) -> str:
    """The public key hex of a peer id, ``""`` if it is none (cached: snapshots are made often and
    decoding a peer id costs ~0.1 ms)."""
    try:
        return public_hex_of(peer)
    except InvalidInput:
        return ""


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


def _is_committed(state: LedgerState, tx: SignedOrder) -> bool:
    """``tx`` is exactly the order the ledger holds for its household and slot."""
    held = state.open_order(tx.order.slot, tx.household)
    return held is not None and held.id == tx.id


class BridgeHandle:
    """The API's :class:`~gridnode.status.NodeHandle`: snapshot reads and commands over the bridge."""

    def __init__(self, bridge: TrioBridge, node: DaemonNode) -> None:
        self._bridge = bridge
        self._node = node

    def snapshot(self) -> Snapshot:
        snap = self._node.latest
        return replace(snap, now_ms=self._node.clock.now_ms())

    async def place_order(self, order: Order) -> SubmitResult:
        return await self._bridge.call(self._node.place_order, order)

    async def cancel_order(self, slot: int) -> SubmitResult:
        return await self._bridge.call(self._node.cancel_order, slot)

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return self._node.blocks(from_height, limit)


def make_meter(config: Config, genesis: Genesis, clock: NodeClock) -> Meter | None:
    """The meter the config asks for (``[meter] source``); a live meter stamps its samples with
    the node's ``clock`` (readable from the asyncio thread its reader runs on)."""
    if config.meter_source == "replay":
        return shipped_replay(
            node_anchor_s=genesis.genesis_time_ms // 1000,
            day=config.replay_day,
            day_offset=config.replay_day_offset,
            hour=config.replay_hour,
            pv_scale=config.pv_scale,
            load_scale=config.load_scale,
        )
    if config.meter_source in ("dsmr", "mqtt"):  # a real meter (docs/meters.md)
        return open_live_meter(config, slot_seconds=genesis.slot_seconds, now_ms=clock.now_ms)
    if config.meter_source == "file":
        if config.meter_history is None:
            raise UsageError(
                f"{config.dir}: meter.source is 'file' but bidding.meter_history is not set"
            )
        return FileMeter(config.meter_history)
    if config.bidding_enabled:
        raise UsageError(f"{config.dir}: bidding.enabled needs a meter (set meter.source)")
    return None


@asynccontextmanager
async def open_daemon_node(
    config: Config, genesis: Genesis, key: KeyPair
) -> AsyncIterator[DaemonNode]:
    """On the trio thread: open the store and the host, run the node, close everything on exit."""
    clock = NodeClock.start(epoch_ms=genesis.genesis_time_ms, speedup=config.clock_speedup)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = NodeStore.open(config.data_dir / "node.sqlite")
    try:
        net_config = NetConfig(
            community=genesis.community_id,
            listen_addrs=config.listen,
            bootstrap=config.bootstrap,
            mdns=config.mdns,
            gossip_degree_high=max(64, len(genesis.members) + len(genesis.validators)),
        )
        async with open_net_host(key, net_config) as net:
            node = DaemonNode(
                config=config,
                genesis=genesis,
                key=key,
                store=store,
                net=net,
                clock=clock,
                meter=make_meter(config, genesis, clock),
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.run)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        store.close()


async def run_daemon(directory: Path, *, ready_file: Path | None = None) -> int:
    """``gridnode run``: serve until SIGINT/SIGTERM; return the exit code."""
    config = load_config(directory)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    key = load_identity(directory)
    genesis = load_genesis(config.genesis_path)
    token = load_token(directory)
    if config.role == "validator" and key.public_hex not in genesis.validators:
        raise UsageError(
            f"{directory}: node.role is 'validator' but this key is not in the genesis validator set"
        )
    lock = DirLock(directory).acquire()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = TrioBridge().start()
    api = None
    node: DaemonNode | None = None
    reader = None
    try:
        node = await bridge.enter(lambda: open_daemon_node(config, genesis, key))
        reader = start_meter_reader(node.meter)  # a live meter's reader runs on this asyncio loop
        api = await start_api(
            make_app(BridgeHandle(bridge, node), token=token), config.api_host, config.api_port
        )
        log.info("household %s peer %s role %s", key.public_hex[:16], node.net.peer_id, config.role)
        for addr in node.net.addrs:
            log.info("listening on %s", addr)
        log.info("status page and API at %s/", api.url)
        if ready_file is not None:
            ready_file.write_text(
                f"{api.url}\n" + "\n".join(node.net.addrs) + "\n", encoding="utf-8"
            )
        await stop.wait()
        log.info("stopping")
    finally:
        if api is not None:
            await api.stop()
        await bridge.aclose()
        if node is not None:
            await stop_meter_reader(reader, node.meter)
        lock.release()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
