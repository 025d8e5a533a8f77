"""The daemon's node: the executor, its timers and its consensus traffic on the trio thread.

Rules of this module:

* :class:`DaemonNode` owns the :class:`~gridnode.node.NodeRuntime` (store, ledger, consensus).
  Everything that touches the runtime or the SQLite store runs on the trio thread; the pieces it
  composes run there too: :class:`~gridnode.daemon.submit.Submissions` (both sides of transaction
  submission), :class:`~gridnode.daemon.gossip.OrderGossip` (the order topic and the live book),
  :class:`~gridnode.daemon.snapshot.StatusBoard` (what the API reads) and, for a member household
  with a meter, the :class:`~gridnode.household_driver.HouseholdDriver`.
* It is the runtime's :class:`~gridnode.node.Outbox`: consensus bytes go to the validators on
  ``/gridnode/<community>/consensus/1.0.0`` (addressed by public key, which *is* the peer id);
  timers are a heap on the node clock (:class:`~gridnode.clock.NodeClock`, trio's clock).
* A consensus message must decode, and a vote or proposal for the height being decided (or the
  next) must be signed by a validator (the round's proposer for a proposal): ``bad_signature``
  otherwise, raised so the net layer blames the sending peer. The core reuses the checked
  signatures (``verified_votes``), so each is verified once.
* The consensus timeouts (:func:`consensus_config`) are for real networks and scaled by the clock's
  speed-up so they stay sane in real seconds.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from gridnode.bills import ProofKeeper
from gridnode.clock import NodeClock
from gridnode.config import Config
from gridnode.core.consensus import AdaptiveCommit, ConsensusConfig, TimerKind
from gridnode.core.consensus_messages import (
    Proposal,
    Vote,
    decode_message,
    verify_proposal,
    verify_vote,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import (
    BundleReading,
    Genesis,
    LedgerState,
    OpenOrder,
    SignedBundle,
    SignedOrder,
    Tx,
    decode_block,
    decode_state,
    genesis_state,
    sign_bundle,
    sign_cancel,
    sign_order,
    sign_reading,
)
from gridnode.daemon.gossip import OrderGossip
from gridnode.daemon.snapshot import StatusBoard
from gridnode.daemon.submit import Submissions
from gridnode.history import History, MeteredSlot
from gridnode.localtime import LocalTime
from gridnode.net.host import NetHost, peer_id_of_hex, public_hex_of
from gridnode.node import Committed, LedgerHalted, NodeRuntime
from gridnode.startup import trim_malloc
from gridnode.status import BlockInfo, SubmitResult
from gridnode.store import NodeStore, StoreFailed
from market.errors import InvalidInput, LedgerReason, NetworkError, UsageError
from market.orders import Order

if TYPE_CHECKING:  # a household's driver, its meter and federated rounds: imported when configured
    from forecasting.federated import CommunityModel
    from gridnode.daemon.federation import FederationDriver
    from gridnode.household_driver import HouseholdDriver
    from gridnode.meter import Meter

__all__ = ["DaemonNode", "consensus_config", "raise_fatal", "seed_history"]

log = logging.getLogger("gridnode")

#: the snapshot is rebuilt at most this long after a change, and at least every _REFRESH_S
_COALESCE_S = 0.02
_REFRESH_S = 0.5
#: glibc's free pages are handed back after a block at most this often (wall seconds): a trim walks
#: every free chunk, which a busy validator's heap has many of (``gridnode.startup.trim_malloc``)
_TRIM_EVERY_S = 5.0
#: set to a path prefix, the node's thread (consensus, libp2p, submissions) is profiled with
#: cProfile and the stats are written to ``<prefix>.<pid>`` when the daemon stops (``docs/daemon.md``)
PROFILE_ENV = "GRIDNODE_PROFILE"
#: wall seconds from a decision to the next height's start when transactions are waiting
COMMIT_BUSY_S = 0.25
#: ... and when nothing is pending or due (the idle heartbeat): a block then changes nothing but
#: the chain's time, and each one cost every node of the community a fetch, a commit check, a
#: durable write and an apply (docs/daemon.md, "idle cost")
IDLE_BLOCK_S = 3.0
#: a full node's block request is held this long by the validator it asked (long poll), after
#: which it asks the next one (a validator that went away): above the idle heartbeat
SYNC_WAIT_S = 5.0
#: blocks are sized in bytes so that a proposal rides in one yamux stream window (py-libp2p's is
#: 256 KiB): a larger one needs window updates from its receivers, and a receiver starved of CPU
#: sends them late, so the proposal missed the propose timeout and overload collapsed (a height
#: took 15-19 s with 768-KiB blocks; ``docs/benchmarks.md``)
MAX_BLOCK_BYTES = 192 * 1024
#: ... and the count is only a backstop (≈ 190–230 bytes per order: ~900 orders fill the bytes)
MAX_BLOCK_TXS = 2_000
#: a validator's mempool holds at most this many transactions (what peers share included); the
#: submissions it takes are bounded far lower, by what the committee commits (``Backpressure``)
MEMPOOL_TXS = 20_000


def _nothing() -> None:
    pass


def raise_fatal(exc: BaseException) -> None:
    """The default ``on_fatal``: raise the error (:func:`gridnode.daemon.run.open_daemon_node`
    sets one that stops the daemon)."""
    raise exc


def consensus_config(speedup: float) -> ConsensusConfig:
    """Timeouts for real networks, scaled to the clock: with transactions waiting the next height
    starts ``COMMIT_BUSY_S`` after a decision, at once when they fill half a block, at the moment
    a block would clear or settle a slot by its time alone (a gate closure, a reading deadline),
    and otherwise ``IDLE_BLOCK_S`` after it (adaptive cadence, ``gridnode.core.consensus``). Full
    nodes learn of blocks by long poll (``SYNC_WAIT_S``, ``gridnode.core.consensus_sync``)."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000 * speedup)

    return ConsensusConfig(
        propose_ms=ms(1.0),
        propose_delta_ms=ms(0.5),
        prevote_ms=ms(0.5),
        prevote_delta_ms=ms(0.25),
        precommit_ms=ms(0.5),
        precommit_delta_ms=ms(0.25),
        commit_ms=ms(IDLE_BLOCK_S),
        sync_interval_ms=ms(1.0),
        sync_wait_ms=ms(SYNC_WAIT_S),
        rebroadcast_ms=ms(2.0),
        adaptive=AdaptiveCommit(busy_ms=ms(COMMIT_BUSY_S), full_ms=0),
    )


class DaemonNode:
    """The node owner on the trio thread: runtime + libp2p host + timers (see the module rules)."""

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
        self._changed = trio.Event()
        self._nonce = 0
        self._trimmed_at = -_TRIM_EVERY_S  # trio time of the last trim after a block
        #: called with an error the node cannot go on from (set by :func:`open_daemon_node`)
        self.on_fatal: Callable[[BaseException], None] = raise_fatal
        self.runtime = NodeRuntime(
            genesis=genesis,
            key=key,
            store=store,
            outbox=self,
            validator=config.role == "validator",
            config=consensus_config(clock.speedup),
            sync_peers=[v for v in self.validators if v != key.public_hex],
            verified_votes=set(),  # _on_consensus checks signatures first; the core reuses them
            max_block_txs=MAX_BLOCK_TXS,
            max_block_bytes=MAX_BLOCK_BYTES,
            mempool_capacity=MEMPOOL_TXS,
        )
        self.gossip = OrderGossip(runtime=self.runtime, net=net, clock=clock, genesis=genesis)
        self.submissions = Submissions(
            runtime=self.runtime,
            net=net,
            key=key,
            clock=clock,
            validator_peers=self.validator_peers,
            gossip=self.gossip,
            publish=self._publish,
            changed=self._mark_changed,
        )
        self.status = StatusBoard(self)
        self.submissions.on_send = self.status.sending
        self.submissions.on_unacknowledged = self.status.not_acknowledged
        self.zone = LocalTime.parse(config.timezone)
        #: this household's slots kept after settlement (the status page's history)
        self.history = History(
            key.public_hex, genesis.clock, self.zone, verified=self.runtime.app.verified
        )
        seed_history(self.history, store, genesis)
        self._before = self.runtime.state  # the state the next committed block applies to
        self.runtime.listeners.append(self._on_commit)
        #: the states /api/proof serves bill proofs from (gridnode/bills.py)
        self.proofs = ProofKeeper(store)
        self.runtime.listeners.append(self.proofs.on_commit)
        #: the household's meter readings and automatic orders (a household with a meter): built
        #: by the node's household task (forecasting and bidding are imported only by a household
        #: that has them), once ``household_gate`` is set (``None``: when the node runs)
        self.household: HouseholdDriver | None = None
        self._household_meter = meter
        #: :func:`gridnode.daemon.run.open_daemon_node` sets one, and the daemon sets it once it
        #: serves: a household's forecaster warms after start-up (docs/daemon.md, "Start-up")
        self.household_gate: trio.Event | None = None
        #: called once on the trio thread after the household's first step (or its end, if it
        #: never steps): :func:`gridnode.daemon.run.run_daemon` settles start-up there
        self.on_household_warm: Callable[[], None] = _nothing
        self._community: CommunityModel | None = None  # adopted before the driver was built
        #: federated rounds (``training.mode = "federated"``; docs/federated.md)
        self.federation: FederationDriver | None = None
        if config.training_mode == "federated":
            from gridnode.daemon.federation import (  # noqa: PLC0415 - only when configured
                HISTORY_DAYS,
                FederationDriver,
            )

            self.federation = FederationDriver(
                self,
                round_every_s=config.round_every_s,
                history=lambda now_s: (
                    None if meter is None else meter.history_before(now_s, days=HISTORY_DAYS)
                ),
                on_model=None if meter is None else self._use_community,
            )
        self.latest = self.status.make()

    @property
    def forecast(self) -> tuple[tuple[int, int, int, int], ...]:
        """The household's last forecast ``(slot, P10, P50, P90)`` Wh (the status page shows it)."""
        return () if self.household is None else self.household.forecast

    @property
    def forecaster_state(self) -> str:
        """What the household forecasts with, for the status page: ``"none"`` (no meter),
        ``"off"`` (bidding disabled), ``"warming"`` (its meter history, forecaster and first fit
        are loading: until its first forecast), else the model of its last forecast."""
        if self._household_meter is None:
            return "none"
        if not self.config.bidding_enabled:
            return "off"
        household = self.household
        if household is None or not household.forecast:
            return "warming"
        if self.config.bidding_policy == "perfect-foresight":
            return "perfect-foresight"
        return household.forecaster.name

    @property
    def meter(self) -> Meter | None:
        """Where the household's readings come from (``None``: no meter configured)."""
        return self._household_meter

    def _use_community(self, model: CommunityModel) -> None:
        """A committed community model for the household's forecaster (federated rounds)."""
        if self.household is None:
            self._community = model  # handed over when the driver is built
        else:
            self.household.use_community(model)

    async def _run_household(self) -> None:
        """Build the household driver once the gate opens (see ``household_gate``), then run it."""
        if self.household_gate is not None:
            await self.household_gate.wait()
        from gridnode.household_driver import HouseholdDriver  # noqa: PLC0415 - a household's

        assert self._household_meter is not None
        household = HouseholdDriver(self, self._household_meter, self.config)
        if self._community is not None:
            household.use_community(self._community)
        self.household = household
        warm = False

        def after_step() -> None:
            nonlocal warm
            self._after_household_step()
            if not warm:
                warm = True
                self.on_household_warm()

        await household.run(after_step)
        if not warm:  # it returned without a step: not a member of the community
            self.on_household_warm()

    @property
    def live_orders(self) -> dict[tuple[bytes, int], OpenOrder]:
        """Orders seen on gossip, not yet committed."""
        return self.gossip.live_orders

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
        self.submissions.register()
        if self.federation is not None:
            self.federation.register()
        await self.gossip.subscribe()
        self.runtime.start(self.clock.now_ms())
        self._publish()
        profile = os.environ.get(PROFILE_ENV)
        prof = None
        if profile:
            import cProfile  # noqa: PLC0415 - only when asked for

            prof = cProfile.Profile()
            prof.enable()
        try:
            await self._run_tasks()
        finally:
            if prof is not None:
                prof.disable()
                prof.dump_stats(f"{profile}.{os.getpid()}")

    async def _run_tasks(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._publish_loop)
            if self.runtime.is_validator:
                nursery.start_soon(self.gossip.run)
            if self._household_meter is not None:
                nursery.start_soon(self._run_household)
            if self.federation is not None:
                nursery.start_soon(self.federation.run)

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
            self._mark_changed()

    async def _publish_loop(self) -> None:
        """Republish the snapshot after a change — changes within ``_COALESCE_S`` share one (a
        validator taking hundreds of submissions a second builds tens of snapshots, not
        hundreds) — and every ``_REFRESH_S`` anyway (peers come and go)."""
        while True:
            with trio.move_on_after(_REFRESH_S):
                await self._changed.wait()
                await trio.sleep(_COALESCE_S)
            self._changed = trio.Event()
            self._publish()

    def _mark_changed(self) -> None:
        self._changed.set()

    # ------------------------------------------------------------------ net -> runtime
    def _on_consensus(self, peer_id: str, body: bytes) -> None:
        """A consensus message from ``peer_id`` (whose key is its peer id); see the module rules."""
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
        try:
            self.runtime.on_message(sender, body, self.clock.now_ms())
        except (StoreFailed, LedgerHalted) as exc:  # not the peer's doing: the daemon stops
            self.on_fatal(exc)

    def _on_commit(self, event: Committed) -> None:
        self.history.on_block(self._before, event.block, event.block_hash)
        self._before = event.state
        self.status.on_commit(event)
        self.gossip.on_commit(event)
        self.submissions.backpressure.on_commit(len(event.block.txs), trio.current_time())
        if trio.current_time() - self._trimmed_at >= _TRIM_EVERY_S:
            self._trimmed_at = trio.current_time()
            trim_malloc()  # what applying blocks (clearing, settlement) freed goes back
        if event.height % 50 == 0:
            log.info("height %d, %d slots settled", event.height, event.state.settled_slots)

    # ------------------------------------------------------------------ commands (API, household)
    def _next_nonce(self) -> int:
        self._nonce = max(self._nonce, self.runtime.state.nonces.get(self.key.public_hex, 0)) + 1
        return self._nonce

    def sign_order(self, order: Order, *, model: bytes | None = None) -> SignedOrder:
        """``order`` as this household's, with its next nonce, signed; ``model``: the committed
        community model that produced it (``None``: a local model)."""
        order = replace(order, household=self.key.public_hex, nonce=self._next_nonce())
        return sign_order(self.key, self.genesis, order, model=model)

    def sign_bundle(
        self,
        reading: BundleReading | None,
        orders: Sequence[Order],
        *,
        model: bytes | None = None,
    ) -> SignedBundle:
        """``reading`` and ``orders`` as this household's one transaction of a slot boundary,
        each order with its next nonce, signed once; ``model``: the committed community model
        that produced the orders (``None``: a local model)."""
        me = self.key.public_hex
        placed = tuple(replace(o, household=me, nonce=self._next_nonce()) for o in orders)
        models = (model,) * len(placed)
        return sign_bundle(self.key, self.genesis, reading=reading, orders=placed, models=models)

    async def place_order(self, order: Order) -> SubmitResult:
        at_ms = self.clock.now_ms()
        result = await self.submissions.submit(self.sign_order(order))
        result = replace(result, order_id=order.order_id)
        self.record_submission(order, at_ms, result)
        return result

    def record_submission(self, order: Order, at_ms: int, result: SubmitResult) -> None:
        """Keep a submitted order and its validator's answer for ``/api/submissions`` (the API's
        orders and the household driver's quotes alike)."""
        self.status.record_submission(order, at_ms, result)

    def record_metered(self, metered: MeteredSlot) -> None:
        """What the meter and agent saw of a delivered slot (the household driver)."""
        self.history.record_metered(metered)

    async def cancel_order(self, slot: int) -> SubmitResult:
        return await self.submissions.submit(
            sign_cancel(self.key, self.genesis, slot=slot, nonce=self._next_nonce())
        )

    async def submit_reading(self, slot: int, net_wh: int) -> SubmitResult:
        return await self.submissions.submit(
            sign_reading(self.key, self.genesis, slot=slot, net_wh=net_wh)
        )

    async def submit_batch(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """Submit ``txs`` in one acknowledged request; see :meth:`Submissions.submit_batch`."""
        return await self.submissions.submit_batch(txs)

    # ------------------------------------------------------------------ snapshot
    def _after_household_step(self) -> None:
        self._publish()
        trim_malloc()  # what the step's forecaster fit freed goes back to the system

    def _publish(self) -> None:
        self.history.note_forecast(self.forecast)
        self.latest = self.status.make()

    def blocks(self, from_height: int, limit: int) -> list[BlockInfo]:
        return self.status.blocks(from_height, limit)


def seed_history(history: History, store: NodeStore, genesis: Genesis) -> LedgerState:
    """Feed ``history`` the stored blocks after the newest state snapshot (or every block when
    there is none: the runtime replayed the same ones at boot); return the state after them."""
    snapshot = store.latest_snapshot()
    state = genesis_state(genesis) if snapshot is None else decode_state(snapshot.state, genesis)
    while batch := store.blocks_from(state.height + 1, 200):
        for sb in batch:
            after = history.on_block(state, decode_block(sb.block), sb.block_hash)
            if after is None:
                return state
            state = after
    return state
