"""The daemon's order gossip: the live book of not-yet-committed orders, and validators' batches.

Rules of this module (``docs/protocol.md`` §7.4):

* Each validator gossips the orders it accepted from submissions — signed orders, and the
  bundles (a household's reading and orders signed once) that carry orders — as **batches** on
  the GossipSub topic ``/gridnode/<community>/orders/2``: at most one message per ``_GOSSIP_EVERY_S`` of wall
  time, after gathering for ``_GOSSIP_GATHER_S`` (households submit in a burst at a slot
  boundary), only when there is something to send. Orders already committed, replaced, or whose
  gate closes within ``_GOSSIP_MARGIN_S`` are left out (a peer would rightly refuse a closed
  slot's order, and with it the whole batch).
* The topic validator refuses a whole batch when any order in it is malformed, unsigned, from a
  non-member, replayed or for a closed slot — unless it is exactly the order the ledger already
  committed (the batch raced the block); a validator takes an order its mempool holds (admitted, and
  re-checked after every block) or has just committed as admissible without checking it again. The
  net layer blames the forwarder only for misbehaviour (a stale nonce or a closed slot can be a
  race, a forgery cannot).
* **A household trusts a validator's batch** (``docs/daemon.md``, "trust model"): on a node that
  is not a validator, a batch whose *author* is a validator (libp2p's strict signing has checked
  the author's signature over the message) is only decoded, not checked order by order — that
  validator admitted every order in it, and a household uses the topic for nothing but its live
  book, which shows orders not yet committed. Checking every signature made each household verify
  every order of the community: N² Ed25519 checks per slot, the largest part of an idle
  household's cost at 100 daemons. A batch authored by anyone else is checked in full, as on a
  validator; what the household relays or shows is then never less checked than before for a
  non-validator's batch. Validators check every batch in full (they feed their mempools from it).
* A batch is decoded once: the topic validator (which may run more than once on our own messages)
  and the handler share the result through a small cache; an item the mempool holds (looked up
  by its id, the SHA-256 of its bytes) is not decoded at all.
* The live book (:attr:`OrderGossip.live_orders`, the status page's: each order, a bundle's
  one by one) keeps what the ledger does not hold yet: an order whose nonce the ledger has used (committed, or replaced by a newer one)
  leaves it after the block, as does a closed slot's. A validator also offers every gossiped
  order to its own mempool.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from gridnode.clock import NodeClock
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    OpenOrder,
    SignedBundle,
    SignedOrder,
    admission_error,
)
from gridnode.net.host import NetHost, peer_id_of_hex
from gridnode.node import Committed, NodeRuntime
from gridnode.txbatch import decode_tx_batch, encode_tx_batch, split_for
from market.errors import InvalidInput, UsageError, WireReason

__all__ = ["ORDERS_TOPIC_VERSION", "OrderGossip", "is_committed"]

log = logging.getLogger("gridnode")

#: gossip topic ``orders`` carries batches of orders since version 2 (``docs/protocol.md`` §7.4)
ORDERS_TOPIC_VERSION = 2
#: a validator publishes at most one order batch per this many wall seconds, ...
_GOSSIP_EVERY_S = 1.0
#: ... after gathering for at least this long (households submit in a burst at a slot boundary)
_GOSSIP_GATHER_S = 0.25
#: orders whose gate closes within this many wall seconds are not gossiped (they would arrive late)
_GOSSIP_MARGIN_S = 2.0
#: decoded gossip batches kept between the topic validator and the handler
_DECODED_CACHE = 64


#: what the order topic carries: signed orders, and bundles that carry orders
Gossiped = SignedOrder | SignedBundle


def _orders_of(tx: Gossiped) -> tuple[OpenOrder, ...]:
    return (tx,) if isinstance(tx, SignedOrder) else tx.placed()


def is_committed(state: LedgerState, tx: Gossiped) -> bool:
    """``tx`` placed exactly the orders the ledger holds for its household and their slots."""
    for o in _orders_of(tx):
        held = state.open_order(o.order.slot, tx.household)
        if held is None or held.id != tx.id:
            return False
    return True


class OrderGossip:
    """One node's side of the order topic (see the module rules)."""

    def __init__(
        self, *, runtime: NodeRuntime, net: NetHost, clock: NodeClock, genesis: Genesis
    ) -> None:
        self._runtime = runtime
        self._net = net
        self._clock = clock
        self._genesis = genesis
        #: orders seen on gossip, not yet committed (the status page's live book)
        #: (by the placing transaction's id and the order's slot)
        self.live_orders: dict[tuple[bytes, int], OpenOrder] = {}
        #: validators: orders accepted from submissions, to gossip in the next batch
        self._pending: dict[tuple[str, int], Gossiped] = {}
        self._wake = trio.Event()
        self._decoded: OrderedDict[bytes, tuple[Gossiped, ...]] = OrderedDict()
        #: the validators' peer ids: a household trusts a batch one of them authored
        self._validator_peers = frozenset(peer_id_of_hex(v) for v in genesis.validators)
        #: batches taken without checking each order (a household, a validator's batch)
        self.trusted_batches = 0

    async def subscribe(self) -> None:
        await self._net.subscribe(
            "orders", self._on_batch, validate=self._validate, version=ORDERS_TOPIC_VERSION
        )

    def queue(self, tx: Gossiped) -> None:
        """A validator accepted ``tx`` from a submission: gossip it in the next batch (the newest
        nonce per household and slot: a bundle counts by its first order's)."""
        first = _orders_of(tx)[0].order
        key = (tx.household, first.slot)
        held = self._pending.get(key)
        if held is None or _orders_of(held)[0].order.nonce < first.nonce:
            self._pending[key] = tx
        self._wake.set()

    async def run(self) -> None:
        """Validators: publish the queued orders as batches (see the module rules)."""
        last = -1e9
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(max(_GOSSIP_GATHER_S, last + _GOSSIP_EVERY_S - trio.current_time()))
            pending, self._pending = list(self._pending.values()), {}
            last = trio.current_time()
            ahead_ms = self._clock.now_ms() + int(_GOSSIP_MARGIN_S * 1000 * self._clock.speedup)
            state, verified = self._runtime.state, self._runtime.app.verified
            fresh = [
                tx
                for tx in pending
                if admission_error(state, tx, time_ms=ahead_ms, verified=verified) is None
            ]
            runs = split_for(fresh, self._net.config.max_gossip_bytes)
            for run in runs:
                try:
                    data = encode_tx_batch(run)
                    await self._net.publish("orders", data, version=ORDERS_TOPIC_VERSION)
                except (InvalidInput, UsageError) as exc:  # e.g. a slot closed in between
                    log.warning("order batch of %d not gossiped: %s", len(run), exc)
            if runs:
                log.info("gossiped %d orders in %d batch(es)", len(fresh), len(runs))

    def _batch(self, data: bytes) -> tuple[Gossiped, ...]:
        """Decode a gossiped order batch once (see the module rules)."""
        orders = self._decoded.get(data)
        if orders is not None:
            return orders
        pool = self._runtime.app.mempool  # a validator holds most of them already
        txs = decode_tx_batch(data, max_bytes=self._net.config.max_gossip_bytes, known=pool.get)
        orders = tuple(
            tx
            for tx in txs
            if isinstance(tx, SignedOrder) or (isinstance(tx, SignedBundle) and tx.orders)
        )
        if len(orders) != len(txs):
            raise InvalidInput(reason=WireReason.NOT_AN_ORDER, subject="order batch")
        self._decoded[data] = orders
        while len(self._decoded) > _DECODED_CACHE:
            self._decoded.popitem(last=False)
        return orders

    def _validate(self, origin: str, data: bytes) -> None:
        """The topic validator: every order admissible now, or exactly the committed one; one bad
        order refuses the batch with its reason."""
        orders = self._batch(data)
        if not self._runtime.is_validator and origin in self._validator_peers:
            self.trusted_batches += 1  # a validator admitted each of them (the module rules)
            return
        state, now = self._runtime.state, self._clock.now_ms()
        verified = self._runtime.app.verified
        pool = self._runtime.app.mempool
        for tx in orders:
            if pool.knows(tx.id):  # admitted here (re-checked after every block) or committed
                continue
            error = admission_error(state, tx, time_ms=now, verified=verified)
            if error is not None and not is_committed(state, tx):
                self._decoded.pop(data, None)
                raise error

    def _on_batch(self, origin: str, data: bytes) -> None:
        orders = self._decoded.pop(data, None)
        if orders is None:  # validated, then pushed out of the cache by later batches
            try:
                orders = self._batch(data)
            except InvalidInput:
                return
            self._decoded.pop(data, None)
        state, now = self._runtime.state, self._clock.now_ms()
        for tx in orders:
            if is_committed(state, tx):
                continue
            for o in _orders_of(tx):
                self.live_orders[(tx.id, o.order.slot)] = o
            if self._runtime.is_validator:
                self._runtime.submit(tx, now)

    def on_commit(self, event: Committed) -> None:
        """Drop from the live book what the ledger now holds, replaced or closed."""
        nonces = event.state.nonces
        open_slot = self._genesis.clock.first_open_slot(event.state.time_ms // 1000)
        self.live_orders = {
            k: v
            for k, v in self.live_orders.items()
            if v.order.nonce > nonces.get(v.household, -1) and v.order.slot >= open_slot
        }
