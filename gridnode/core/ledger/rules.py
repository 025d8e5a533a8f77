"""The block rules: admission of transactions, ``check``/``apply``, clearing and settlement in apply.

**Refusals** carry an :class:`~market.errors.OrderReason` (the market's order rules) or a
:class:`~market.errors.LedgerReason` (membership, signature, nonce, readings, block validity).

**Admission** of a transaction against the evolving state:

* :class:`~.transactions.SignedOrder` — admitted only if the signature is the
  household's, the household is a member, the order obeys the market rules with the price cap at retail,
  its slot is still open at the block's time and at most ``max_order_ahead_slots`` beyond the first
  open slot (a genesis parameter: a slot of 2**63 would otherwise be held forever), and its nonce
  is above the household's last used nonce
  (so a replayed or re-ordered older message is refused). A household has at most **one open order per
  slot**: a newer order for the same slot (higher nonce) *replaces* the open one (this is how forecasts
  are re-quoted before gate closure). Hence no household can sell the same energy twice, and a household
  can never trade with itself. Order ids are unique among open orders.
* :class:`~.transactions.SignedCancel` — removes the household's open order for a slot (slot still
  open, not too far ahead; nonce rule).
* :class:`~.transactions.SignedReading` — accepted once per household and slot, from the slot's end
  until ``reading_deadline_seconds`` after it.
* :class:`~.transactions.SignedBundle` — a household's reading and orders signed once: admitted
  **all or nothing**. Membership and the signature are checked once for the whole bundle; then
  its reading obeys the reading rules and each of its orders, in the bundle's order, the order
  rules above (its nonce above the one before it, its id not in use, its model committed, ...),
  exactly as if each were its own transaction; an order that is not the signer's is
  ``bad_signature`` (its household did not sign it). The first refused part refuses the whole
  bundle with that part's reason (the refusal's subject names the part) and nothing of it
  applies: a household's reading is never lost to a bad order by half-applying, and a proposer
  can keep or drop a bundle as one transaction. An order a bundle places is held open as a
  :class:`~.transactions.BundledOrder` and replaced or cancelled like any other.
* An order that names a **model** (the community model that produced it) is admitted only if that
  model hash was committed before it (in an earlier block, or earlier in the same block):
  ``unknown_model`` otherwise. An order without one is a local model's and needs nothing.
* :class:`~.transactions.SignedModel` — a federated round's result. Admitted only if it is signed
  (``bad_signature``) by a validator (``not_a_validator``; which validator aggregates a round is
  the round driver's deterministic choice, ``docs/federated.md``: the ledger accepts any), its
  hash is new (``duplicate_model``), its round is the one after the last committed model's
  (``model_round_not_next``; the first is round 1), it names the last committed model as its
  previous one (zeros before the first; ``model_wrong_previous``), and its values are ones an
  aggregator makes (``bad_model``: a zero hash, fewer than 3 contributors or more than the
  members, a negative validation sum, an empty feature version). The state keeps it
  (:class:`~.state.CommittedModel`, with the committing height) and the state root commits to it.

**Blocks.** A block is valid (:func:`check`) when: its height is the next one, ``prev_hash`` is the
head, its time is strictly later than the previous block's (and, when the caller passes ``now_ms``,
within ``max_drift_ms`` of the checking node's clock: validators check this before prevoting, a
later round's fresh proposal may be older by one more ``max_drift_ms`` per round; nodes replaying
committed blocks don't), the proposer is a validator, every transaction is admitted in
order against the evolving state (a refused transaction makes the whole block invalid: proposers
filter first with :func:`admit`), and the ``state_root`` matches.

**Apply** (:func:`apply`), in this order: admit the transactions; then **clear** every slot whose gate
closure is ``<=`` the block time (each slot once, from exactly the orders the ledger holds for it, with
:func:`market.clearing.clear`), keeping its trades until settlement; then **settle** every cleared slot
whose readings are all in (every member) or whose reading deadline has passed; a slot settled
because every member read it keeps its readings until the deadline (so a second reading of it is
still a ``duplicate_reading``), and is settled once. A household that traded
but sent no reading by the deadline is settled as if its meter read **0 Wh** (it delivered and used
nothing): a seller that does not report buys its whole contract back at retail, a buyer sells its
purchase back at feed-in, so staying silent never pays (:func:`settle_slot` is that rule, the only
copy: whoever settles a slot as the ledger does calls it). Bills add to the households' balances; the
grid and the netting pool are accounts too, so the sum of all balances is always exactly 0.

**Outcome.** :func:`apply_with_outcome` is :func:`apply` that also says what the block cleared (each
slot's book exactly as the ledger held it at gate closure, after every replacement and cancel, and
its trades) and what it settled (the readings and the :class:`~market.settlement.Settlement`): the
facts a chain reader (:mod:`gridnode.chain`) reports, taken from the ledger's own step, never
re-derived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Final

from gridnode.core.ledger.blocks import Block
from gridnode.core.ledger.genesis import ZERO_HASH, Genesis
from gridnode.core.ledger.prices import ClearingPrices
from gridnode.core.ledger.state import CommittedModel, HouseholdTotals, LedgerState, SettledSlot
from gridnode.core.ledger.stateroot import note_writes
from gridnode.core.ledger.transactions import (
    OpenOrder,
    SignedBundle,
    SignedModel,
    SignedOrder,
    SignedReading,
    Tx,
    verify_signature,
)
from market.clearing import Trade, clear
from market.errors import InvalidInput, LedgerReason, OrderReason, Reason
from market.orders import Order, validate_order
from market.settlement import GRID, POOL, Settlement, settle

__all__ = [
    "READING_REFUSALS",
    "BlockOutcome",
    "SlotCleared",
    "SlotSettled",
    "admission_error",
    "admit",
    "apply",
    "apply_with_outcome",
    "build_block",
    "check",
    "read_by_every_member",
    "settle_slot",
]


#: the reasons a reading can be refused for (membership, signature and the reading rules): a
#: bundle refused for any other reason was refused for one of its orders, and its reading sent
#: alone may still be admitted (what a household does then: :mod:`gridnode.household_driver`)
READING_REFUSALS: Final = frozenset(
    {
        LedgerReason.NOT_A_MEMBER,
        LedgerReason.BAD_SIGNATURE,
        LedgerReason.SLOT_NOT_DELIVERED,
        LedgerReason.READING_TOO_LATE,
        LedgerReason.DUPLICATE_READING,
        OrderReason.ENERGY_TOO_LARGE,
    }
)


class _Draft:
    """Working copy used inside one :func:`apply` or admission check; never escapes it.

    Copy-on-write: it reads the state's mappings until something is written, so checking one
    transaction against a large state costs O(1), not O(state). :class:`_Work` takes full copies
    before clearing and settlement.
    """

    __slots__ = (
        "_nonce_keys",
        "_own",
        "_own_slots",
        "last_model",
        "models",
        "nonces",
        "order_ids",
        "orders",
        "readings",
        "state",
        "verified",
    )

    def __init__(self, state: LedgerState, verified: set[bytes] | None = None) -> None:
        self.state = state
        self.verified = verified
        self.nonces: Mapping[str, int] = state.nonces
        self.orders: Mapping[int, Mapping[str, OpenOrder]] = state.orders
        self.readings: Mapping[int, Mapping[str, int]] = state.readings
        self.order_ids: AbstractSet[str] = state.open_order_ids
        if state.orders and not state.open_order_ids:  # a state built without the derived field
            self.order_ids = frozenset(
                o.order.order_id for v in state.orders.values() for o in v.values()
            )
        self.models: Mapping[bytes, CommittedModel] = state.models
        self.last_model = state.last_model
        self._own: set[str] = set()
        #: (name, slot) of each per-slot mapping this draft copied -> the state's mapping it
        #: copied (``None``: the slot had none) and the households written to the copy
        self._own_slots: dict[tuple[str, int], tuple[Mapping[str, Any] | None, set[str]]] = {}
        self._nonce_keys: set[str] = set()  # the households whose nonce this draft wrote

    def put_model(self, tx: SignedModel, height: int) -> None:
        models = dict(self.models)
        models[tx.model] = CommittedModel(
            tx.round,
            tx.previous,
            tx.contributors,
            tx.validation,
            tx.features,
            tx.aggregator,
            height,
        )
        self.models, self.last_model = models, tx.model

    # -- writes used by admission (copy on first write) --
    def set_nonce(self, household: str, nonce: int) -> None:
        if "nonces" not in self._own:
            self.nonces = dict(self.nonces)
            self._own.add("nonces")
        self.nonces[household] = nonce  # type: ignore[index]
        self._nonce_keys.add(household)

    def _ids(self) -> set[str]:
        if "ids" not in self._own:
            self.order_ids = set(self.order_ids)
            self._own.add("ids")
        return self.order_ids  # type: ignore[return-value]

    def _slot_dict(self, name: str, slot: int, household: str) -> dict[str, Any]:
        """The draft's own mapping of ``slot`` in ``name``, about to be written at ``household``."""
        top: Any = getattr(self, name)
        if name not in self._own:
            top = dict(top)
            setattr(self, name, top)
            self._own.add(name)
        own = self._own_slots.get((name, slot))
        if own is None:
            base = top.get(slot)
            top[slot] = {} if base is None else dict(base)
            own = self._own_slots[(name, slot)] = (base, set())
        own[1].add(household)
        inner: dict[str, Any] = top[slot]
        return inner

    def note_writes(self, after: LedgerState) -> None:
        """Tell the state root which entries this draft's writes touched in the mappings
        ``after`` (the state built from it) took over (:func:`.stateroot.note_writes`)."""
        memo = after.memo
        if "nonces" in self._own and after.nonces is self.nonces:
            note_writes(memo, after.nonces, self.state.nonces, self._nonce_keys)
        for (name, slot), (base, keys) in self._own_slots.items():
            if base is not None:
                inner = (after.orders if name == "orders" else after.readings).get(slot)
                if inner is not None:
                    note_writes(memo, inner, base, keys)

    def put_order(self, tx: OpenOrder, previous: OpenOrder | None) -> None:
        ids = self._ids()
        if previous is not None:
            ids.discard(previous.order.order_id)
        self._slot_dict("orders", tx.order.slot, tx.household)[tx.household] = tx
        ids.add(tx.order.order_id)

    def drop_order(self, slot: int, previous: OpenOrder) -> None:
        self._ids().discard(previous.order.order_id)
        by_h = self._slot_dict("orders", slot, previous.household)
        del by_h[previous.household]
        if not by_h:
            del self.orders[slot]  # type: ignore[attr-defined]
            del self._own_slots[("orders", slot)]

    def put_reading(self, slot: int, household: str, net_wh: int) -> None:
        self._slot_dict("readings", slot, household)[household] = net_wh


@dataclass(slots=True)
class _Work:
    """Owned copies for clearing, settlement and booking inside :func:`apply`.

    Clearing and settlement only add or drop whole slots, so ``orders`` and ``readings`` are copies
    of the outer mapping whose per-slot mappings are shared (never written); ``nonces`` is not
    written at all. ``order_ids``, ``trades``, ``balances`` and ``totals`` are the state's (or
    the admitting draft's own) until a slot is cleared or settled: :meth:`own_cleared` and
    :meth:`own_settled` copy them before the first write, so a block that clears and settles
    nothing copies nothing. Sharing what did not change keeps :meth:`LedgerState.encode`'s memo
    useful. The prices the block records are collected in ``priced`` and added to the state's
    at the end (:class:`~.prices.ClearingPrices`: no copy of a year's prices per block).
    """

    state: LedgerState
    nonces: Mapping[str, int]
    orders: dict[int, Mapping[str, OpenOrder]]
    readings: dict[int, Mapping[str, int]]
    order_ids: AbstractSet[str]
    trades: Mapping[int, tuple[Trade, ...]]
    balances: Mapping[str, int]
    totals: Mapping[str, HouseholdTotals]
    ids_owned: bool
    cleared: int = 0  # slots cleared in this block
    settling: bool = False  # balances and totals are owned copies
    #: the prices this block recorded, ``(slot, price)`` in slot order
    priced: list[tuple[int, int | None]] = field(default_factory=list)

    @classmethod
    def of(cls, draft: _Draft) -> _Work:
        state = draft.state
        return cls(
            state=state,
            nonces=draft.nonces,
            orders=dict(draft.orders),
            readings=dict(draft.readings),
            order_ids=draft.order_ids,  # the draft's own set if it wrote one: it is dropped after
            trades=state.trades,
            balances=state.balances,
            totals=state.totals,
            ids_owned="ids" in draft._own,
        )

    def own_cleared(self) -> tuple[set[str], dict[int, tuple[Trade, ...]]]:
        """``order_ids`` and ``trades``, owned (copied on the first call)."""
        if not self.ids_owned:
            self.order_ids = set(self.order_ids)
            self.ids_owned = True
        if not self.cleared:
            self.trades = dict(self.trades)
        return self.order_ids, self.trades  # type: ignore[return-value]

    def own_settled(
        self,
    ) -> tuple[dict[int, tuple[Trade, ...]], dict[str, int], dict[str, HouseholdTotals]]:
        """``trades``, ``balances`` and ``totals``, owned (copied on the first call)."""
        if not self.settling:
            if not self.cleared:
                self.trades = dict(self.trades)
            self.balances, self.totals = dict(self.balances), dict(self.totals)
            self.settling = True
        return self.trades, self.balances, self.totals  # type: ignore[return-value]


def _reject(
    reason: Reason, tx: Tx, expected: str, found: object, *, part: str = ""
) -> InvalidInput:
    """``part``: which part of a bundle was refused (``"reading"``, ``"order 2"``)."""
    where = f", {part}" if part else ""
    return InvalidInput(
        reason=reason,
        subject=f"{type(tx).__name__} {tx.id.hex()[:16]} from {tx.household[:16]}{where}",
        expected=expected,
        found=str(found),
    )


def _signature_ok(draft: _Draft, genesis: Genesis, tx: Tx) -> bool:
    """Verify once per cache: ``draft.verified`` holds ids (hash of the full signed bytes) of
    transactions whose signature already verified, so a cache hit means the same bytes."""
    verified = draft.verified
    if verified is None:
        return verify_signature(genesis, tx)
    tid = tx.id
    if tid in verified:
        return True
    if not verify_signature(genesis, tx):
        return False
    if len(verified) > 500_000:
        verified.clear()
    verified.add(tid)
    return True


def _order_ok(draft: _Draft, genesis: Genesis, order: Order, key: bytes) -> None:
    """:func:`~market.orders.validate_order` once per cache: the order's rules depend only on its
    bytes and the genesis, so ``draft.verified`` also remembers the ``key`` of orders that passed:
    ``b"o" + id`` of a :class:`SignedOrder` (33 bytes), ``b"o" + id + index`` of a bundle's order
    (34 bytes): never equal to a 32-byte signature-cache id, nor to each other."""
    verified = draft.verified
    if verified is None:
        validate_order(order, limits=genesis.limits)
        return
    if key in verified:
        return
    validate_order(order, limits=genesis.limits)
    verified.add(key)


def _admit(draft: _Draft, tx: Tx, time_ms: int, *, write: bool = True) -> None:
    """Check ``tx`` on top of ``draft`` and (if ``write``) record it there.

    ``write=False`` is the single-transaction check of :func:`admission_error`: it raises the same
    errors and copies nothing (a written draft copies the slot's orders, the nonces and the open
    ids on first write: O(state), which a mempool check per transaction per validator cannot afford).
    """
    genesis = draft.state.genesis
    now_s = time_ms // 1000
    kind = type(tx)
    if kind is SignedModel:
        _admit_model(draft, tx, write=write)  # type: ignore[arg-type]
        return
    household = tx.household
    if household not in genesis.member_set:
        raise _reject(LedgerReason.NOT_A_MEMBER, tx, "a member of the community", household[:16])
    if not _signature_ok(draft, genesis, tx):
        raise _reject(LedgerReason.BAD_SIGNATURE, tx, "the household's signature", "another")
    clock = genesis.clock
    if kind is SignedReading:
        _admit_reading(draft, tx, tx.slot, tx.net_wh, now_s, write=write)  # type: ignore[union-attr]
        return
    if kind is SignedBundle:
        _admit_bundle(draft, tx, now_s, write=write)  # type: ignore[arg-type]
        return
    order = tx.order if kind is SignedOrder else None  # type: ignore[union-attr]
    nonce = tx.nonce if order is None else order.nonce  # type: ignore[union-attr]
    last = draft.nonces.get(household, -1)
    if nonce <= last:
        raise _reject(LedgerReason.STALE_NONCE, tx, f"nonce > {last}", nonce)
    slot = tx.slot if order is None else order.slot  # type: ignore[union-attr]
    why = clock.window_error(slot, now_s, max_ahead_slots=genesis.max_order_ahead_slots)
    if why is not None:
        first = clock.first_open_slot(now_s)
        last_slot = first + genesis.max_order_ahead_slots
        raise _reject(why, tx, f"a slot open at {now_s} (in {first}..{last_slot})", slot)
    held = draft.orders.get(slot)
    previous = None if held is None else held.get(household)
    if order is not None:
        assert isinstance(tx, SignedOrder)
        _order_ok(draft, genesis, order, b"o" + tx.id)
        if tx.model is not None and tx.model not in draft.models:
            raise _reject(
                LedgerReason.UNKNOWN_MODEL, tx, "a committed model's hash (or none)",
                tx.model.hex()[:16],
            )  # fmt: skip
        if order.order_id in draft.order_ids and (
            previous is None or previous.order.order_id != order.order_id
        ):
            raise _reject(OrderReason.DUPLICATE_ID, tx, "an order id not in use", order.order_id)
        if write:
            draft.put_order(tx, previous)
    else:
        if previous is None:
            raise _reject(LedgerReason.NO_OPEN_ORDER, tx, "an open order to cancel", slot)
        if write:
            draft.drop_order(slot, previous)
    if write:
        draft.set_nonce(household, nonce)


def _admit_reading(
    draft: _Draft, tx: Tx, slot: int, net_wh: int, now_s: int, *, write: bool, part: str = ""
) -> None:
    """The reading rules (module docstring), after membership and signature: ``tx``'s reading
    of ``slot`` (a :class:`SignedReading`, or a bundle's with ``part="reading"``)."""
    genesis = draft.state.genesis
    end = genesis.clock.end(slot)
    if now_s < end:
        raise _reject(LedgerReason.SLOT_NOT_DELIVERED, tx, f"block time >= {end}", now_s, part=part)
    if now_s >= end + genesis.reading_deadline_seconds:
        raise _reject(
            LedgerReason.READING_TOO_LATE, tx, "a reading before the deadline", now_s, part=part
        )
    held = draft.readings.get(slot)
    if held is not None and tx.household in held:
        raise _reject(
            LedgerReason.DUPLICATE_READING, tx, "one reading per household and slot", slot,
            part=part,
        )  # fmt: skip
    if abs(net_wh) > genesis.limits.max_energy_wh:
        raise _reject(
            OrderReason.ENERGY_TOO_LARGE, tx, f"|net_wh| <= {genesis.limits.max_energy_wh}",
            net_wh, part=part,
        )  # fmt: skip
    if write:
        draft.put_reading(slot, tx.household, net_wh)


def _admit_bundle(draft: _Draft, tx: SignedBundle, now_s: int, *, write: bool) -> None:
    """The bundle rules (module docstring), after membership and signature: every part checked
    before anything is written (all or nothing), then (if ``write``) every part written.

    The parts' effects on each other are those of separate transactions in the bundle's order:
    each order's nonce must be above the one before it, and an order id is in use if the state's
    open orders hold it (unless an earlier order of the bundle replaced that one) or an earlier
    order of the bundle took it. Orders are for distinct slots (decoding refuses others), so no
    order of a bundle replaces another of it.
    """
    genesis = draft.state.genesis
    household = tx.household
    if tx.reading is not None:
        r = tx.reading
        _admit_reading(draft, tx, r.slot, r.net_wh, now_s, write=False, part="reading")
    if not tx.orders:
        if write and tx.reading is not None:
            draft.put_reading(tx.reading.slot, household, tx.reading.net_wh)
        return
    clock = genesis.clock
    last = draft.nonces.get(household, -1)
    taken: set[str] = set()  # ids the bundle's earlier orders took
    freed: set[str] = set()  # ids of open orders the bundle's earlier orders replaced
    previous: list[OpenOrder | None] = []
    # the orders as the bundle carries them; the open orders (BundledOrder) only if written
    for i, (order, model) in enumerate(zip(tx.orders, tx.models, strict=True)):
        part = f"order {i}"
        if order.household != household:
            raise _reject(
                LedgerReason.BAD_SIGNATURE, tx, "orders of the signing household",
                order.household[:16], part=part,
            )  # fmt: skip
        if order.nonce <= last:
            raise _reject(LedgerReason.STALE_NONCE, tx, f"nonce > {last}", order.nonce, part=part)
        last = order.nonce
        slot = order.slot
        why = clock.window_error(slot, now_s, max_ahead_slots=genesis.max_order_ahead_slots)
        if why is not None:
            first = clock.first_open_slot(now_s)
            last_slot = first + genesis.max_order_ahead_slots
            raise _reject(
                why, tx, f"a slot open at {now_s} (in {first}..{last_slot})", slot, part=part
            )
        held = draft.orders.get(slot)
        before = None if held is None else held.get(household)
        try:
            _order_ok(draft, genesis, order, b"o" + tx.id + bytes((i & 0xFF,)))
        except InvalidInput as exc:
            raise _reject(exc.reason, tx, exc.expected or "", exc.found or "", part=part) from None
        if model is not None and model not in draft.models:
            raise _reject(
                LedgerReason.UNKNOWN_MODEL, tx, "a committed model's hash (or none)",
                model.hex()[:16], part=part,
            )  # fmt: skip
        oid = order.order_id
        replaced = None if before is None else before.order.order_id
        in_use = oid in taken or (oid in draft.order_ids and oid not in freed)
        if in_use and replaced != oid:
            raise _reject(OrderReason.DUPLICATE_ID, tx, "an order id not in use", oid, part=part)
        if replaced is not None:
            freed.add(replaced)
        taken.add(oid)
        previous.append(before)
    if not write:
        return
    if tx.reading is not None:
        draft.put_reading(tx.reading.slot, household, tx.reading.net_wh)
    for bo, before in zip(tx.placed(), previous, strict=True):
        draft.put_order(bo, before)
    draft.set_nonce(household, last)


def _admit_model(draft: _Draft, tx: SignedModel, *, write: bool) -> None:
    """The model commitment rules (module docstring)."""
    genesis = draft.state.genesis
    if tx.aggregator not in genesis.validators:
        raise _reject(LedgerReason.NOT_A_VALIDATOR, tx, "a validator's key", tx.aggregator[:16])
    if not _signature_ok(draft, genesis, tx):
        raise _reject(LedgerReason.BAD_SIGNATURE, tx, "the aggregator's signature", "another")
    if (
        tx.model == ZERO_HASH
        or not 3 <= tx.contributors <= len(genesis.members)
        or any(v < 0 for v in tx.validation)
        or not tx.features
    ):
        raise _reject(
            LedgerReason.BAD_MODEL, tx, "a model hash, 3..members contributors",
            f"{tx.contributors} contributors",
        )  # fmt: skip
    if tx.model in draft.models:
        raise _reject(LedgerReason.DUPLICATE_MODEL, tx, "a new model", tx.model.hex()[:16])
    last = draft.models.get(draft.last_model)
    expected = 1 if last is None else last.round + 1
    if tx.round != expected:
        raise _reject(LedgerReason.MODEL_ROUND_NOT_NEXT, tx, f"round {expected}", tx.round)
    if tx.previous != draft.last_model:
        raise _reject(
            LedgerReason.MODEL_WRONG_PREVIOUS, tx, draft.last_model.hex()[:16],
            tx.previous.hex()[:16],
        )  # fmt: skip
    if write:
        draft.put_model(tx, draft.state.height + 1)


def _clear_due(draft: _Work, time_ms: int, outcome: list[SlotCleared] | None) -> int:
    """Clear every slot whose gate closed by ``time_ms``; returns the last cleared slot."""
    genesis = draft.state.genesis
    last_closed = genesis.clock.first_open_slot(time_ms // 1000) - 1
    for slot in sorted(s for s in draft.orders if s <= last_closed):
        order_ids, all_trades = draft.own_cleared()
        held = draft.orders.pop(slot)
        book = [so.order for so in held.values()]
        result = clear(book, slot=slot, rule=genesis.rule)
        trades = tuple(result.trades)
        if trades:
            all_trades[slot] = trades
        draft.priced.append((slot, result.clearing_price_micro_per_kwh))
        for o in book:
            order_ids.discard(o.order_id)
        draft.cleared += 1
        if outcome is not None:
            outcome.append(SlotCleared(slot, held, result.clearing_price_micro_per_kwh, trades))
    return max(last_closed, draft.state.last_cleared_slot)


def read_by_every_member(genesis: Genesis, readings: Sized) -> bool:
    """Whether a slot's ``readings`` (one per household that read it) are every member's: such a
    slot is settled by the block that brings its last reading, before its reading deadline, and
    keeps its readings until that deadline so that a second reading of it is refused. The one copy
    of that condition (block building here; the adaptive cadence in :mod:`gridnode.core.app`)."""
    return len(readings) == len(genesis.members)


def _settle_due(
    draft: _Work,
    time_ms: int,
    last_cleared: int,
    outcome: list[SlotSettled] | None,
    done: dict[int, SettledSlot],
) -> int:
    genesis = draft.state.genesis
    clock = genesis.clock
    now_s = time_ms // 1000
    before = draft.state.readings
    settled = 0
    for slot in sorted(set(draft.trades) | set(draft.readings)):
        if slot > last_cleared:
            continue
        readings = draft.readings.get(slot, {})
        deadline_passed = now_s >= clock.end(slot) + genesis.reading_deadline_seconds
        complete = read_by_every_member(genesis, readings)
        # a slot every member has read was settled by the block that brought its last reading
        # (it was cleared by then: a reading comes after the slot's end); its readings are kept
        # until the deadline so that a second reading of it is refused (``duplicate_reading``)
        already = complete and read_by_every_member(genesis, before.get(slot, ()))
        if deadline_passed:
            draft.readings.pop(slot, None)
            if already:
                continue
        elif not complete or already:
            continue
        trades = draft.own_settled()[0].pop(slot, ())
        result = settle_slot(genesis, slot, trades, readings)
        _book(draft, result)
        done[slot] = SettledSlot(trades, readings, {b.household: b for b in result.bills})
        settled += 1
        if outcome is not None:
            outcome.append(SlotSettled(slot, readings, result))
    return settled


def settle_slot(
    genesis: Genesis, slot: int, trades: Iterable[Trade], readings: Mapping[str, int]
) -> Settlement:
    """Settle ``slot`` as the ledger does: its ``trades`` against the households' signed
    ``readings`` with the genesis tariff and netting, where a household that traded but sent no
    reading counts as having read **0 Wh** (the module rules). The one copy of that rule."""
    trades = tuple(trades)
    meters = dict(readings)
    for t in trades:
        meters.setdefault(t.buyer, 0)
        meters.setdefault(t.seller, 0)
    return settle(slot, trades, meters, genesis.tariff, netting=genesis.netting)


def _book(draft: _Work, result: Settlement) -> None:
    _, balances, totals = draft.own_settled()
    for t in result.transfers:
        balances[t.payer] = balances.get(t.payer, 0) - t.amount_micro
        balances[t.payee] = balances.get(t.payee, 0) + t.amount_micro
    zero = HouseholdTotals()
    for b in result.bills:
        old = totals.get(b.household, zero)
        totals[b.household] = HouseholdTotals(  # positional, in the fields' order (a third faster)
            old.bought_p2p_wh + b.bought_p2p_wh,
            old.sold_p2p_wh + b.sold_p2p_wh,
            old.grid_import_wh + b.grid_import_wh,
            old.grid_export_wh + b.grid_export_wh,
            old.bill_micro + b.bill_micro,
            old.grid_only_bill_micro + b.grid_only_bill_micro,
            old.slots_settled + 1,
        )


def _run(
    state: LedgerState,
    *,
    height: int,
    head_hash: bytes,
    time_ms: int,
    txs: Iterable[Tx],
    verified: set[bytes] | None = None,
    cleared: list[SlotCleared] | None = None,
    settled_out: list[SlotSettled] | None = None,
) -> LedgerState:
    admitting = _Draft(state, verified)
    for tx in txs:
        _admit(admitting, tx, time_ms)
    return _finish(
        state, admitting, height=height, head_hash=head_hash, time_ms=time_ms, cleared=cleared,
        settled_out=settled_out,
    )  # fmt: skip


def _finish(
    state: LedgerState,
    admitting: _Draft,
    *,
    height: int,
    head_hash: bytes,
    time_ms: int,
    cleared: list[SlotCleared] | None = None,
    settled_out: list[SlotSettled] | None = None,
) -> LedgerState:
    """The rest of :func:`_run` once its transactions are admitted into ``admitting``: clearing,
    settlement and the new state."""
    draft = _Work.of(admitting)
    last_cleared = _clear_due(draft, time_ms, cleared)
    done: dict[int, SettledSlot] = {}
    settled = _settle_due(draft, time_ms, last_cleared, settled_out, done)
    if sum(draft.balances.values()) != 0:  # pragma: no cover - settlement already guarantees it
        raise AssertionError("ledger balances do not sum to zero")
    market = draft.cleared or settled  # otherwise trades, prices, balances, totals are unchanged
    after = LedgerState(
        genesis=state.genesis,
        height=height,
        head_hash=head_hash,
        time_ms=time_ms,
        nonces=draft.nonces,
        orders=draft.orders,
        trades=draft.trades if market else state.trades,
        clearing_prices=_with_prices(state.clearing_prices, draft.priced),
        readings=draft.readings,
        balances={k: v for k, v in draft.balances.items() if v or k in (GRID, POOL)}
        if settled
        else state.balances,
        totals=draft.totals if settled else state.totals,
        last_cleared_slot=last_cleared,
        settled_slots=state.settled_slots + settled,
        settled=done if done or state.settled else state.settled,
        models=admitting.models,
        last_model=admitting.last_model,
        open_order_ids=ids if isinstance(ids := draft.order_ids, frozenset) else frozenset(ids),
        memo=state.memo,
    )
    admitting.note_writes(after)
    return after


def _with_prices(
    prices: Mapping[int, int | None], priced: list[tuple[int, int | None]]
) -> Mapping[int, int | None]:
    """``prices`` and the ones a block recorded (``prices`` itself when it recorded none)."""
    if not priced:
        return prices
    if not isinstance(prices, ClearingPrices):  # a state built by hand, or from a snapshot
        prices = ClearingPrices.of(prices)
    return prices.plus(priced)


def admit(
    state: LedgerState, txs: Iterable[Tx], *, time_ms: int, verified: set[bytes] | None = None
) -> list[Tx]:
    """The longest valid selection of ``txs``, in order: what a proposer may put in a block at ``time_ms``.

    Each transaction is kept if it is admissible after the ones kept before it.
    """
    return _keep_admissible(_Draft(state, verified), txs, time_ms)


def _keep_admissible(draft: _Draft, txs: Iterable[Tx], time_ms: int) -> list[Tx]:
    """:func:`admit` on ``draft``, which holds the kept ones' writes afterwards."""
    kept: list[Tx] = []
    for tx in txs:
        try:
            _admit(draft, tx, time_ms)  # raises before it changes anything
        except InvalidInput:
            continue
        kept.append(tx)
    return kept


def admission_error(
    state: LedgerState, tx: Tx, *, time_ms: int, verified: set[bytes] | None = None
) -> InvalidInput | None:
    """Why ``tx`` would be refused on top of ``state`` at ``time_ms``, or ``None`` if admissible."""
    try:
        _admit(_Draft(state, verified), tx, time_ms, write=False)
    except InvalidInput as exc:
        return exc
    return None


def build_block(
    state: LedgerState,
    *,
    time_ms: int,
    proposer: str,
    txs: Sequence[Tx],
    verified: set[bytes] | None = None,
) -> tuple[Block, LedgerState]:
    """A valid next block from the admissible part of ``txs``, and the state after it."""
    time_ms = max(time_ms, state.time_ms + 1)
    # one pass: the draft that chose the admissible part is the one the block applies (admitting
    # the chosen ones again on a fresh draft would make the same writes in the same order)
    draft = _Draft(state, verified)
    chosen = tuple(_keep_admissible(draft, txs, time_ms))
    after = _finish(state, draft, height=state.height + 1, head_hash=ZERO_HASH, time_ms=time_ms)
    block = Block(state.height + 1, state.head_hash, time_ms, proposer, chosen, _root(after))
    return block, replace(after, head_hash=block.hash)


def _root(state_with_zero_head: LedgerState) -> bytes:
    # the root leaves out the head hash (the block's own hash cannot be inside the block)
    return state_with_zero_head.digest()


def check(
    state: LedgerState,
    block: Block,
    *,
    now_ms: int | None = None,
    late_ms: int = 0,
    verified: set[bytes] | None = None,
) -> LedgerState:
    """Validate ``block`` as the next block; return the state after it, or raise :class:`InvalidInput`.

    ``late_ms`` (with ``now_ms``) widens the old side of the clock rule: a time down to
    ``now_ms - max_drift_ms - late_ms`` is accepted (a later round's fresh proposal, see
    :meth:`gridnode.core.app.LedgerApp.block_error`); the future side never widens.

    ``verified`` is an optional cache of ids of transactions whose signatures (and, for orders,
    order rules) already passed, filled as a side effect; it changes how fast the answer comes,
    never the answer.
    """
    return _checked(state, block, now_ms=now_ms, late_ms=late_ms, verified=verified, outcome=None)


def _checked(
    state: LedgerState,
    block: Block,
    *,
    now_ms: int | None,
    late_ms: int,
    verified: set[bytes] | None,
    outcome: tuple[list[SlotCleared], list[SlotSettled]] | None,
) -> LedgerState:
    """:func:`check`; with ``outcome``, also append what the block cleared and settled to it."""
    genesis = state.genesis

    def bad(reason: LedgerReason, expected: object, found: object) -> InvalidInput:
        return InvalidInput(
            reason=reason, subject=f"block {block.height}", expected=str(expected), found=str(found)
        )

    if block.height != state.height + 1:
        raise bad(LedgerReason.WRONG_HEIGHT, state.height + 1, block.height)
    if block.prev_hash != state.head_hash:
        raise bad(
            LedgerReason.WRONG_PREV_HASH, state.head_hash.hex()[:16], block.prev_hash.hex()[:16]
        )
    if block.time_ms <= state.time_ms:
        raise bad(LedgerReason.TIME_NOT_MONOTONIC, f"> {state.time_ms}", block.time_ms)
    if now_ms is not None and block.time_ms > now_ms + genesis.max_drift_ms:
        raise bad(LedgerReason.TIME_IN_FUTURE, f"<= {now_ms + genesis.max_drift_ms}", block.time_ms)
    if now_ms is not None and block.time_ms < now_ms - genesis.max_drift_ms - late_ms:
        oldest = now_ms - genesis.max_drift_ms - late_ms
        raise bad(LedgerReason.TIME_TOO_OLD, f">= {oldest}", block.time_ms)
    if block.proposer not in genesis.validators:
        raise bad(LedgerReason.NOT_A_VALIDATOR, "a validator's key", block.proposer[:16])
    after = _run(
        state,
        height=block.height,
        head_hash=ZERO_HASH,
        time_ms=block.time_ms,
        txs=block.txs,
        verified=verified,
        cleared=None if outcome is None else outcome[0],
        settled_out=None if outcome is None else outcome[1],
    )
    if _root(after) != block.state_root:
        raise bad(
            LedgerReason.WRONG_STATE_ROOT, _root(after).hex()[:16], block.state_root.hex()[:16]
        )
    return replace(after, head_hash=block.hash)


def apply(state: LedgerState, block: Block, *, verified: set[bytes] | None = None) -> LedgerState:
    """The state after a committed ``block`` (which :func:`check` accepted). Pure and deterministic."""
    return check(state, block, verified=verified)


@dataclass(frozen=True, slots=True)
class SlotCleared:
    """A slot the ledger cleared at its gate closure (see the module rules).

    ``book``: the orders it held for the slot then, by household (every replacement and cancel
    already applied); ``trades`` and the price are :func:`market.clearing.clear` of exactly those.
    Slots without any order are not cleared one by one (no fact): they just fall behind
    ``last_cleared_slot``."""

    slot: int
    book: Mapping[str, OpenOrder]
    clearing_price_micro_per_kwh: int | None
    trades: tuple[Trade, ...]

    @property
    def volume_wh(self) -> int:
        return sum(t.energy_wh for t in self.trades)


@dataclass(frozen=True, slots=True)
class SlotSettled:
    """A slot the ledger settled: the ``readings`` households signed (a missing one is absent
    here and counts as 0 Wh in ``settlement``: :func:`settle_slot`) and what was billed."""

    slot: int
    readings: Mapping[str, int]
    settlement: Settlement


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What applying one block did: the new state, and the slots it cleared and settled (in slot
    order, the order :func:`apply` handles them)."""

    state: LedgerState
    cleared: tuple[SlotCleared, ...]
    settled: tuple[SlotSettled, ...]


def apply_with_outcome(
    state: LedgerState, block: Block, *, verified: set[bytes] | None = None
) -> BlockOutcome:
    """:func:`apply`, and what the block cleared and settled, from the same single step."""
    cleared: list[SlotCleared] = []
    settled: list[SlotSettled] = []
    after = _checked(
        state, block, now_ms=None, late_ms=0, verified=verified, outcome=(cleared, settled)
    )
    return BlockOutcome(after, tuple(cleared), tuple(settled))
