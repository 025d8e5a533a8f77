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

Time: the node clock is ``epoch + (wall − epoch) × speedup`` in unix ms, with ``epoch`` the genesis
time. Every node of a community must run the same speedup (demos use e.g. 60: a 15-minute slot in
15 s); the consensus timeouts are scaled by the same factor so they stay sane in real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import signal
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from forecasting.models import SeasonalNaive
from forecasting.policy import (
    BatteryState,
    PolicyConfig,
    SlotQuantiles,
    forecast_slots,
    median_only_order,
    quote_slot,
)
from gridnode.api import make_app, start_api
from gridnode.config import Config, DirLock, write_atomic
from gridnode.core.battery import Battery, battery_from_sizes, contract_wh, dispatch
from gridnode.core.consensus import ConsensusConfig, TimerKind
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    SignedOrder,
    SignedReading,
    Tx,
    admission_error,
    decode_block,
    decode_tx,
    sign_cancel,
    sign_order,
    sign_reading,
    tx_id,
)
from gridnode.meter import Meter
from gridnode.net.bridge import TrioBridge
from gridnode.net.host import (
    NetConfig,
    NetHost,
    PeerStats,
    open_net_host,
    peer_id_of_hex,
    public_hex_of,
)
from gridnode.node import Committed, LedgerHalted, NodeRuntime
from gridnode.startup import (
    FatalLatch,
    Plan,
    chain_refusal,
    check_chain,
    check_listening,
    describe,
    open_node_store,
    root_cause,
    setup_logging,
    store_binding,
)
from gridnode.status import BlockInfo, PeerInfo, Snapshot, SubmitResult, ValidatorHealth
from gridnode.store import NodeStore, StoreFailed, bind
from gridnode.txbatch import (
    decode_tx_batch,
    decode_tx_results,
    encode_tx_batch,
    encode_tx_results,
    split_for,
)
from market.errors import GridnodeError, InvalidInput, NetworkError, UsageError
from market.orders import Order
from market.slots import SlotClock

__all__ = ["QUOTED_SLOTS", "DaemonNode", "NodeClock", "run_daemon"]

log = logging.getLogger("gridnode")

_RECENT_BLOCKS = 1_000
#: open slots the household loop quotes at every slot boundary, the earliest first (a later quote
#: for a slot replaces the earlier one); the in-process engine's ``horizon_slots`` twin, which
#: :func:`sims.daemon_engine.inproc_twin` sets to this
QUOTED_SLOTS = 1
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


@dataclass(frozen=True, slots=True)
class NodeClock:
    """The community clock: wall time, optionally sped up around ``epoch_ms``."""

    epoch_ms: int = 0
    speedup: float = 1.0

    def now_ms(self) -> int:
        wall = time.time_ns() // 1_000_000
        if self.speedup == 1.0:
            return wall
        return self.epoch_ms + int((wall - self.epoch_ms) * self.speedup)

    def seconds_until(self, at_ms: int) -> float:
        return max(0.0, (at_ms - self.now_ms()) / 1000 / self.speedup)


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
        self._nonce = 0
        self.live_orders: dict[bytes, SignedOrder] = {}  # seen on gossip, not yet committed
        self.meter = meter
        self.forecast: tuple[tuple[int, int, int, int], ...] = ()
        self._read_slots: set[int] = set()
        #: a household's battery (``household.battery_kwh`` > 0), half full at every start
        self.battery = battery_of(config)
        self.battery_soc_wh = self.battery.capacity_wh // 2 if self.battery else 0
        self._metered: dict[int, int] = {}  # slot -> reading after dispatch (a retry reuses it)
        #: validators: orders accepted from submissions, to gossip in the next batch
        self._gossip_pending: dict[tuple[str, int], SignedOrder] = {}
        self._gossip_wake = trio.Event()
        self._decoded: OrderedDict[bytes, tuple[SignedOrder, ...]] = OrderedDict()
        #: households: signed readings that go out with the next submission (one request per slot)
        self._carried: list[SignedReading] = []
        #: called with an error the node cannot go on from (set by :func:`open_daemon_node`)
        self.on_fatal: Callable[[BaseException], None] = _raise
        self.runtime = NodeRuntime(
            genesis=genesis,
            key=key,
            store=store,
            outbox=self,
            validator=config.role == "validator",
            config=consensus_config(clock.speedup),
            sync_peers=[v for v in self.validators if v != key.public_hex],
        )
        self.runtime.listeners.append(self._on_commit)
        for sb in store.blocks_from(
            max(1, self.runtime.state.height - _RECENT_BLOCKS + 1), _RECENT_BLOCKS
        ):
            self._recent.appendleft(self._block_info(sb.height, sb.block_hash, sb.block))
        self.latest = self._make_snapshot()

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
            if self.meter is not None:
                nursery.start_soon(self._household_loop)

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

    async def _household_loop(self) -> None:
        """Every slot: send the meter reading of each delivered slot, then (if bidding is on)
        forecast and quote the next open slots. Re-quoting replaces the open order of a slot."""
        assert self.meter is not None
        clock = self.genesis.clock
        first_slot = clock.slot_at(self.clock.now_ms() // 1000)
        model = SeasonalNaive(period_days=1, train_days=28)
        policy = PolicyConfig(
            feed_in_micro_per_kwh=self.genesis.feed_in_micro_per_kwh,
            retail_micro_per_kwh=self.genesis.retail_micro_per_kwh,
        )
        member = self.key.public_hex in self.genesis.members
        while True:
            now_s = self.clock.now_ms() // 1000
            try:
                await self._household_step(first_slot, now_s, member, model, policy)
            except NetworkError as exc:  # no validator answered: try again next slot
                log.warning("household step: %s", exc)
            except Exception:  # a bug in bidding must never stop the node's consensus work
                log.exception("household step failed")
            self._publish()
            next_boundary_ms = (clock.slot_at(now_s) + 1) * clock.slot_seconds * 1000 + 50
            await trio.sleep(self.clock.seconds_until(next_boundary_ms))

    async def _household_step(
        self, first_slot: int, now_s: int, member: bool, model: SeasonalNaive, policy: PolicyConfig
    ) -> None:
        assert self.meter is not None
        clock = self.genesis.clock
        for slot in range(first_slot, clock.slot_at(now_s)):
            if slot in self._read_slots or not member:
                continue
            net_wh = self._metered_net(slot, clock)
            if net_wh is not None:  # sent with the step's first order, or just below
                self._carried.append(sign_reading(self.key, self.genesis, slot=slot, net_wh=net_wh))
            self._read_slots.add(slot)  # a network error un-marks it (see _submit): retried
        if self.config.bidding_enabled and member:
            await self._quote(now_s, model, policy)
        await self._send_carried()

    def _metered_net(self, slot: int, clock: SlotClock) -> int | None:
        """The reading of delivered ``slot``: the meter's net after the battery (if any) was
        dispatched once against this household's committed trades for the slot (0 if the slot is
        not cleared in this node's ledger state); ``None`` when the meter has no data."""
        assert self.meter is not None
        natural = self.meter.slot_net_wh(slot, clock)
        if natural is None or self.battery is None:
            return natural
        if slot not in self._metered:
            trades = self.runtime.state.trades.get(slot, ())
            d = dispatch(
                self.battery,
                soc_wh=self.battery_soc_wh,
                natural_net_wh=natural,
                contract_wh=contract_wh(trades, self.key.public_hex),
                slot_seconds=clock.slot_seconds,
            )
            self.battery_soc_wh = d.soc_wh
            self._metered = {s: m for s, m in self._metered.items() if s > slot - 96}
            self._metered[slot] = d.metered_net_wh
            log.info(
                "battery slot %d: charged %d Wh, discharged %d Wh, SoC %d Wh",
                slot, d.charged_wh, d.discharged_wh, d.soc_wh,
            )  # fmt: skip
        return self._metered[slot]

    def _battery_state(self) -> BatteryState | None:
        if self.battery is None:
            return None
        b = self.battery
        return BatteryState(self.battery_soc_wh, b.capacity_wh, b.power_w, b.reserve_wh)

    async def _quote(self, now_s: int, model: SeasonalNaive, policy: PolicyConfig) -> None:
        assert self.meter is not None
        clock = self.genesis.clock
        try:
            history = self.meter.history_before(now_s, days=35)
            fitted = model.fit(history)
            open_slots = forecast_slots(history, fitted, now=now_s, clock=clock, horizon=8)
            quantiles = open_slots[:QUOTED_SLOTS]
        except (InvalidInput, UsageError) as exc:
            log.warning("no forecast: %s", exc)
            return
        if self.config.bidding_policy == "perfect-foresight":  # the replay meter reads ahead
            quantiles = _foreseen(self.meter, quantiles, clock)
        self.forecast = tuple((q.slot, q.p10_wh, q.p50_wh, q.p90_wh) for q in quantiles)
        for q in quantiles:
            if self.config.bidding_policy == "naive-fixed-price":
                order = median_only_order(q, household=self.key.public_hex, config=policy)
            else:
                order = quote_slot(
                    q,
                    household=self.key.public_hex,
                    config=policy,
                    slot_seconds=clock.slot_seconds,
                    lead_s=clock.gate_closure(q.slot) - now_s,
                    battery=self._battery_state(),
                )
            if order is None:
                continue
            result = await self.place_order(order)
            log.info(
                "quoted slot %d: %s %d Wh in %d steps (%s)",
                q.slot, order.side.value, order.energy_wh, len(order.steps), result.reason or "accepted",
            )  # fmt: skip

    # ------------------------------------------------------------------ net -> runtime
    def _sender_key(self, peer_id: str) -> str:
        return public_hex_of(peer_id)

    def _on_consensus(self, peer_id: str, body: bytes) -> None:
        try:
            sender = self._sender_key(peer_id)
        except InvalidInput:
            return
        try:
            self.runtime.on_message(sender, body, self.clock.now_ms())
        except (StoreFailed, LedgerHalted) as exc:  # not the peer's doing: the daemon stops
            self.on_fatal(exc)

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
        return SubmitResult(result.accepted or result.reason == "duplicate", tid, result.reason)

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
        tx = decode_tx(body)  # InvalidInput -> "rejected" answer and a counted rejection
        if not self.runtime.is_validator:
            raise InvalidInput(reason="not_a_validator", subject="submit")
        result = self._accept_tx(tx, share=True)
        if not result.accepted:
            # the answer's text is exactly the reason code: the client maps it back (see _submit)
            raise InvalidInput(reason=result.reason or "refused")
        self._publish()
        return bytes.fromhex(result.tx_id)

    async def _on_submit_batch(self, peer_id: str, body: bytes) -> bytes:
        """A household's transactions of a slot in one request: one result per transaction."""
        txs = decode_tx_batch(body, max_bytes=self.net.config.max_frame_bytes)  # -> "rejected"
        if not self.runtime.is_validator:
            raise InvalidInput(reason="not_a_validator", subject="submit-batch")
        results = [self._accept_tx(tx, share=True) for tx in txs]
        self._publish()
        return encode_tx_results(
            [(bytes.fromhex(r.tx_id), "" if r.accepted else r.reason or "refused") for r in results]
        )

    def _on_shared_tx(self, peer_id: str, body: bytes) -> None:
        if not self.runtime.is_validator or peer_id not in self.validator_peers.values():
            return
        try:
            tx = decode_tx(body)
        except InvalidInput as exc:
            self.runtime.count(peer_id, exc.reason)
            return
        self.runtime.submit(tx, self.clock.now_ms())

    def _order_batch(self, data: bytes) -> tuple[SignedOrder, ...]:
        """Decode a gossiped order batch once: the topic validator (which may run more than once
        on our own messages) and the handler share the result."""
        orders = self._decoded.get(data)
        if orders is not None:
            return orders
        txs = decode_tx_batch(data, max_bytes=self.net.config.max_gossip_bytes)
        orders = tuple(tx for tx in txs if isinstance(tx, SignedOrder))
        if len(orders) != len(txs):
            raise InvalidInput(reason="not_an_order", subject="order batch")
        self._decoded[data] = orders
        while len(self._decoded) > _DECODED_CACHE:
            self._decoded.popitem(last=False)
        return orders

    def _validate_gossip(self, origin: str, data: bytes) -> bool:
        """Every order in the batch must be admissible now (member, signature, not replayed, slot
        open) — or be exactly the order the ledger already committed (the batch raced the block).
        One bad order refuses the batch, counted against its publisher ``origin``."""
        try:
            orders = self._order_batch(data)
        except InvalidInput as exc:
            self.runtime.count(origin, exc.reason)
            return False
        state, now = self.runtime.state, self.clock.now_ms()
        for tx in orders:
            error = admission_error(state, tx, time_ms=now, verified=self._verified)
            if error is not None and not _is_committed(state, tx):
                self.runtime.count(origin, error.reason)
                self._decoded.pop(data, None)
                return False
        return True

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

    async def place_order(self, order: Order) -> SubmitResult:
        order = replace(order, household=self.key.public_hex, nonce=self._next_nonce())
        result = await self._submit(sign_order(self.key, self.genesis, order))
        return replace(result, order_id=order.order_id)

    async def cancel_order(self, slot: int) -> SubmitResult:
        return await self._submit(
            sign_cancel(self.key, self.genesis, slot=slot, nonce=self._next_nonce())
        )

    async def submit_reading(self, slot: int, net_wh: int) -> SubmitResult:
        return await self._submit(sign_reading(self.key, self.genesis, slot=slot, net_wh=net_wh))

    async def _submit(self, tx: Tx) -> SubmitResult:
        if self._carried:  # readings waiting for this step's first order: one request for all
            return (await self._submit_with_carried([tx]))[-1]
        if self.runtime.is_validator:
            result = self._accept_tx(tx, share=True)
            self._publish()
            return result
        tid = tx_id(tx).hex()
        try:
            _, _ = await self.net.submit(self._submit_peers(), "submit", tx.encode())
        except InvalidInput as exc:  # the validator refused it; its answer is the reason code
            return SubmitResult(False, tid, exc.found or exc.reason)
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
        except InvalidInput as exc:  # the whole batch was refused (e.g. malformed)
            reason = exc.found or exc.reason
            return [SubmitResult(False, tx_id(tx).hex(), reason) for tx in txs]
        try:
            rows = decode_tx_results(answer, expected=len(txs))
        except InvalidInput as exc:
            raise NetworkError(f"validator {peer} answered a batch with {exc}") from exc
        if [tid for tid, _ in rows] != [tx_id(tx) for tx in txs]:
            raise NetworkError(f"validator {peer} answered a batch for other transactions")
        return [SubmitResult(not reason, tid.hex(), reason) for tid, reason in rows]

    async def _submit_with_carried(self, txs: list[Tx]) -> list[SubmitResult]:
        """Send the carried readings with ``txs``; log the readings' results; return all."""
        carried, self._carried = self._carried, []
        try:
            results = await self.submit_batch([*carried, *txs])
        except NetworkError:
            self._read_slots.difference_update(r.slot for r in carried)  # retried next step
            raise
        for reading, result in zip(carried, results, strict=False):
            log.info(
                "reading slot %d: %+d Wh (%s)",
                reading.slot, reading.net_wh, result.reason or "accepted",
            )  # fmt: skip
        return results

    async def _send_carried(self) -> None:
        """Readings that no order took along (no quote this step): send them now."""
        if self._carried:
            await self._submit_with_carried([])

    # ------------------------------------------------------------------ snapshot
    def _block_info(self, height: int, block_hash: bytes, block: bytes) -> BlockInfo:
        parsed = decode_block(block)
        return BlockInfo(height, block_hash.hex(), parsed.time_ms, parsed.proposer, len(parsed.txs))

    def _on_commit(self, event: Committed) -> None:
        stored = self.runtime.store.block(event.height)
        if stored is not None:
            self._recent.appendleft(self._block_info(event.height, stored.block_hash, stored.block))
        committed = {tx_id(o) for by_h in event.state.orders.values() for o in by_h.values()}
        open_slot = self.genesis.clock.first_open_slot(event.state.time_ms // 1000)
        self.live_orders = {
            k: v
            for k, v in self.live_orders.items()
            if k not in committed and v.order.slot >= open_slot
        }
        if event.height % 50 == 0:
            log.info("height %d, %d slots settled", event.height, event.state.settled_slots)

    def _make_snapshot(self) -> Snapshot:
        stats = self.net.peer_stats()
        connected = set(self.net.connected_peers())
        totals: dict[str, int] = {}
        peers = []
        for peer in sorted(set(stats) | connected):
            counts = {k: v for k, v in _stat_dict(stats.get(peer)).items() if v}
            counts.update(self.runtime.misbehaviour.get(peer, {}))
            try:
                household = public_hex_of(peer)
            except InvalidInput:
                household = ""
            counts.update(self.runtime.misbehaviour.get(household, {}))
            bad = {k: v for k, v in counts.items() if k not in _NOT_MISBEHAVIOUR}
            for k, v in bad.items():
                totals[k] = totals.get(k, 0) + v
            peers.append(PeerInfo(peer, household, peer in connected, bad))
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
        )

    def _publish(self) -> None:
        self.latest = self._make_snapshot()

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return sorted((b for b in self._recent if b.height >= from_height), key=lambda b: b.height)[
            :limit
        ]


_NOT_MISBEHAVIOUR = frozenset(
    {"gossip_in", "frames_in", "frames_out", "gossip_out", "requests", "timeouts"}
)


def _foreseen(
    meter: Meter, quantiles: list[SlotQuantiles], clock: SlotClock
) -> list[SlotQuantiles]:
    """Perfect foresight (``bidding.policy``): every quantile of each slot is the net the meter will
    measure in it (a replay meter knows; the config allows this policy only with one)."""
    out = []
    for q in quantiles:
        net_wh = meter.slot_net_wh(q.slot, clock)
        if net_wh is not None:
            out.append(SlotQuantiles(q.slot, net_wh, net_wh, net_wh))
    return out


def _stat_dict(stats: PeerStats | None) -> dict[str, int]:
    return {} if stats is None else dataclasses.asdict(stats)


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


def battery_of(config: Config) -> Battery | None:
    """The household's battery from ``household.battery_kwh`` / ``battery_kw`` (rounded to Wh / W;
    :mod:`gridnode.core.battery`'s default 95 % each way, no reserve), or ``None`` without one."""
    return battery_from_sizes(config.battery_kwh, config.battery_kw)


def _raise(exc: BaseException) -> None:
    raise exc


def _build_node(
    *,
    config: Config,
    genesis: Genesis,
    key: KeyPair,
    store: NodeStore,
    net: NetHost,
    clock: NodeClock,
    meter: Meter | None,
) -> DaemonNode:
    """The node over ``store``, which must hold a chain that replays on ``genesis`` up to its head
    (:func:`gridnode.startup.check_chain`); a store made before bindings existed is bound now."""
    try:
        node = DaemonNode(
            config=config, genesis=genesis, key=key, store=store, net=net, clock=clock, meter=meter
        )
    except InvalidInput as exc:
        raise chain_refusal(config, store, f"it does not replay ({exc})") from None
    check_chain(config, store, node.runtime.state)
    bind(store, store_binding(genesis))
    return node


@asynccontextmanager
async def open_daemon_node(
    config: Config,
    genesis: Genesis,
    key: KeyPair,
    *,
    meter: Meter | None = None,
    on_fatal: Callable[[BaseException], None] = _raise,
) -> AsyncIterator[DaemonNode]:
    """On the trio thread: open the store and the host, run the node, close everything on exit.

    Start-up refusals are :class:`UsageError` (one line each, :mod:`gridnode.startup`). After
    start, an error the node cannot go on from (its store failed, a committed block broke a rule,
    any exception out of its tasks) cancels the node's tasks and goes to ``on_fatal``.
    """
    clock = NodeClock(epoch_ms=genesis.genesis_time_ms, speedup=float(genesis.clock_speedup))
    work = trio.CancelScope()  # the node's tasks; cancelled on a fatal error

    def halt(exc: BaseException) -> None:
        work.cancel()
        on_fatal(exc)

    store = open_node_store(config, genesis, on_failure=halt)
    try:
        net_config = NetConfig(
            community=genesis.community_id,
            listen_addrs=config.listen,
            bootstrap=config.bootstrap,
            mdns=config.mdns,
            gossip_degree_high=max(64, len(genesis.members) + len(genesis.validators)),
        )
        async with open_net_host(key, net_config) as net:
            check_listening(config, net.addrs)
            node = _build_node(
                config=config, genesis=genesis, key=key, store=store, net=net, clock=clock,
                meter=meter,
            )  # fmt: skip
            node.on_fatal = halt
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_run_node, node, work, halt)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        store.close()


async def _run_node(
    node: DaemonNode, work: trio.CancelScope, halt: Callable[[BaseException], None]
) -> None:
    with work:
        try:
            await node.run()
        except BaseException as exc:  # incl. trio's exception groups: any end of the node is fatal
            if not isinstance(root_cause(exc), trio.Cancelled):
                halt(exc)
            else:
                raise


async def _watch(bridge: TrioBridge, fatal: FatalLatch) -> None:
    """The node's thread must outlive the daemon's wait: if it ends, that is fatal too (the API
    would otherwise serve its last snapshot for ever)."""
    while bridge.running:
        await asyncio.sleep(1.0)
    fatal.report(RuntimeError("the node's trio thread stopped unexpectedly"))


async def run_daemon(plan: Plan, *, ready_file: Path | None = None) -> int:
    """``gridnode run``: serve until SIGINT/SIGTERM (exit 0) or a fatal error (exit 1).

    ``plan`` is :func:`gridnode.startup.preflight`'s. Start-up refusals raise :class:`UsageError`
    before anything is written (the CLI prints one line and exits 2; :mod:`gridnode.startup` lists
    what is checked).
    """
    config, key, genesis, meter = plan.config, plan.key, plan.genesis, plan.meter
    setup_logging(config.log_level)
    lock = DirLock(config.dir).acquire()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    fatal = FatalLatch(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = TrioBridge().start()
    api = None
    code = 0
    try:
        try:
            node: DaemonNode = await bridge.enter(
                lambda: open_daemon_node(config, genesis, key, meter=meter, on_fatal=fatal.report)
            )
        except BaseExceptionGroup as group:  # a refusal raised inside trio's nurseries
            raise root_cause(group) from None
        api = await start_api(
            make_app(BridgeHandle(bridge, node), token=plan.token), config.api_host, config.api_port
        )
        log.info(
            "household %s peer %s role %s, community %r at %gx",
            key.public_hex[:16], node.net.peer_id, config.role, genesis.community_id,
            genesis.clock_speedup,
        )  # fmt: skip
        for addr in node.net.addrs:
            log.info("listening on %s", addr)
        log.info("status page and API at %s/", api.url)
        lock.record_pid()
        if ready_file is not None:
            write_atomic(ready_file, f"{api.url}\n" + "\n".join(node.net.addrs) + "\n")
        waiters = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(fatal.wait()),
            asyncio.ensure_future(_watch(bridge, fatal)),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if fatal.error is not None:
            code = 1
            log.critical("fatal: %s; the daemon stops (exit 1)", describe(fatal.error))
            if not isinstance(fatal.error, GridnodeError):
                log.debug("the fatal error's traceback", exc_info=fatal.error)
        else:
            log.info("stopping")
    finally:
        if api is not None:
            await api.stop()
        await bridge.aclose()
        lock.release()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code
