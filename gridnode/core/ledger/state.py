"""The ledger state and its canonical encoding (what the state root and snapshots cover).

**State.** :class:`LedgerState` is everything the blocks so far imply: nonces, open orders by slot,
cleared trades awaiting settlement, clearing prices, readings, balances (households, the grid and
the pool; the sum is always exactly 0) and per-household totals. It is never mutated: the rules
(:mod:`.rules`) return a new one.

``models`` holds every community model a federated round committed (:class:`CommittedModel`, by
content hash) and ``last_model`` the newest one's hash (zeros before the first): what an order's
model hash is checked against, and what the next round must name as its previous model.

``settled`` holds the slots the block that made this state settled (their trades, readings and
bill lines), for one height only: so the state root commits to every household's bill of a slot
at the height that settled it (:mod:`.stateroot`), and the next block drops them.

**Encoding.** Canonical msgpack of the whole state with sorted keys (:meth:`LedgerState.encode`,
``["gn.state", 2, …]`` with 16 items while no model was committed; ``["gn.state", 3, …]`` with two
more, ``last_model`` and the models in round order, after the first; :func:`decode_state` reads
both, for snapshots). It is assembled from
memoised parts, so a block that changes a few slots re-packs only those; the memo never changes the
bytes (tests compare it with the plain definition).

**State digest** (:meth:`LedgerState.digest`) is the **state root**: the Merkle commitment of
:mod:`.stateroot` (``docs/merkle.md``), computed incrementally. Two nodes agree at a height iff
their digests are equal; a block's ``state_root`` is the digest of the state after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gridnode.core.ledger.genesis import ZERO_HASH, Genesis
from gridnode.core.ledger.prices import ClearingPrices
from gridnode.core.ledger.stateroot import BILL_FIELDS, StateTree, bill_wire, state_tree
from gridnode.core.ledger.transactions import OpenOrder, SignedBundle, SignedOrder, decode_tx
from market.clearing import Trade
from market.codec import pack, unpack
from market.errors import InvalidInput, LedgerReason, WireReason
from market.settlement import HouseholdBill

__all__ = [
    "CommittedModel",
    "HouseholdTotals",
    "LedgerState",
    "SettledSlot",
    "decode_state",
    "genesis_state",
]

#: the state snapshot's format (2: the slots settled by the last block are part of the state)
STATE_FORMAT: Final = 2
#: ... and 3 once a community model was committed (two more items: the models)
STATE_FORMAT_MODELS: Final = 3
#: the per-slot parts of :meth:`LedgerState.encode`'s memo (keys ``(name, slot)``)
_SLOT_PARTS: Final = frozenset({"orders", "readings", "trades"})


@dataclass(frozen=True, slots=True)
class CommittedModel:
    """A community model a federated round committed (:class:`~.transactions.SignedModel`), and
    the height of the block that committed it."""

    round: int
    previous: bytes
    contributors: int
    validation: tuple[int, ...]
    features: str
    aggregator: str
    height: int

    def wire(self, model: bytes) -> list[Any]:
        return [
            model,
            self.round,
            self.previous,
            self.contributors,
            list(self.validation),
            self.features,
            self.aggregator,
            self.height,
        ]


def models_wire(models: Mapping[bytes, CommittedModel]) -> list[Any]:
    """The models in round order, each :meth:`CommittedModel.wire`."""
    return [m.wire(h) for h, m in sorted(models.items(), key=lambda kv: kv[1].round)]


@dataclass(frozen=True, slots=True)
class SettledSlot:
    """A slot the last block settled: its trades, the signed readings (a missing one is absent and
    counted as 0 Wh) and every household's bill line."""

    trades: tuple[Trade, ...]
    readings: Mapping[str, int]
    bills: Mapping[str, HouseholdBill]


@dataclass(frozen=True, slots=True)
class HouseholdTotals:
    """A household's running totals over every settled slot."""

    bought_p2p_wh: int = 0
    sold_p2p_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    bill_micro: int = 0
    grid_only_bill_micro: int = 0
    slots_settled: int = 0

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.bill_micro


def _array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items (fixarray, array 16 or array 32)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _by_key(items: Mapping[str, Any], order: tuple[str, ...] | None = None) -> list[Any]:
    """``sorted(items.items())``; with ``order`` (the genesis members, sorted) by walking it when
    every key is a member (a few hundred dictionary reads instead of sorting a thousand keys), the
    same list."""
    if order is None or 4 * len(items) < len(order):
        return sorted(items.items())
    out = [(h, v) for h in order if (v := items.get(h)) is not None]
    return out if len(out) == len(items) else sorted(items.items())


def _trades_wire(trades: Mapping[int, tuple[Trade, ...]]) -> list[Any]:
    return [[slot, [list(t) for t in ts]] for slot, ts in sorted(trades.items())]


def _settled_wire(
    settled: Mapping[int, SettledSlot], order: tuple[str, ...] | None = None
) -> list[Any]:
    return [
        [
            slot,
            [list(t) for t in s.trades],
            _by_key(s.readings, order),
            [[h, *bill_wire(b)] for h, b in _by_key(s.bills, order)],
        ]
        for slot, s in sorted(settled.items())
    ]


def _totals_wire(
    totals: Mapping[str, HouseholdTotals], order: tuple[str, ...] | None = None
) -> list[Any]:
    return [
        [
            h,
            t.bought_p2p_wh,
            t.sold_p2p_wh,
            t.grid_import_wh,
            t.grid_export_wh,
            t.bill_micro,
            t.grid_only_bill_micro,
            t.slots_settled,
        ]
        for h, t in _by_key(totals, order)
    ]


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Everything the blocks so far imply. Never mutated: :func:`apply` returns a new one.

    ``orders``: open (not yet cleared) orders by slot, then household. ``trades``: cleared slots awaiting
    settlement. ``readings``: meter readings by slot, then household. ``balances``: µ¤ per account,
    positive = the account is owed money; households, the grid and the pool; sum always 0.
    ``clearing_prices``: every cleared slot's price; the states :func:`~.rules.apply` makes hold
    a :class:`~.prices.ClearingPrices` (a prefix of one log shared along the chain), any other
    mapping reads the same.
    """

    genesis: Genesis
    height: int = 0
    head_hash: bytes = ZERO_HASH
    time_ms: int = 0
    nonces: Mapping[str, int] = field(default_factory=dict)
    orders: Mapping[int, Mapping[str, OpenOrder]] = field(default_factory=dict)
    trades: Mapping[int, tuple[Trade, ...]] = field(default_factory=dict)
    clearing_prices: Mapping[int, int | None] = field(default_factory=dict)
    readings: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    balances: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, HouseholdTotals] = field(default_factory=dict)
    last_cleared_slot: int = -1
    settled_slots: int = 0
    #: the slots the block that made this state settled (see the module rules)
    settled: Mapping[int, SettledSlot] = field(default_factory=dict)
    #: committed community models by content hash, and the newest one's hash (module rules)
    models: Mapping[bytes, CommittedModel] = field(default_factory=dict)
    last_model: bytes = ZERO_HASH
    #: derived from ``orders`` (ids of every open order), kept so admission checks need not rebuild
    #: it; not part of the encoding or of equality
    open_order_ids: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: packed parts of :meth:`encode` by part name (or ``(name, slot)``), each with the object it
    #: packs, and the state root's trees (keys ``"mt:…"``, :mod:`.stateroot`) with the objects
    #: they were computed from; shared along a chain of states (:func:`apply` passes it on). A
    #: part is reused only while it packs the very same object, and state mappings are never
    #: mutated, so the bytes are always those of a fresh encoding. Not part of equality.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def encode(self) -> bytes:
        """Canonical bytes of the whole state (what a snapshot holds): the msgpack array of
        :meth:`_encode_plain`, assembled from memoised parts (an array's encoding is its header
        followed by its items' encodings), so a block that changes a few slots re-packs those."""
        memo = self.memo
        members = self.genesis.members_sorted

        def part(key: Any, obj: object, build: Callable[[], Any]) -> bytes:
            hit = memo.get(key)
            if hit is not None and hit[0] is obj:
                packed: bytes = hit[1]
                return packed
            data = pack(build())
            memo[key] = (obj, data)
            return data

        def by_slot(
            name: str,
            top: Mapping[int, Mapping[str, Any]],
            wire: Callable[[list[tuple[str, Any]]], list[Any]],
        ) -> bytes:
            def one(slot: int, inner: Mapping[str, Any]) -> bytes:
                return part((name, slot), inner, lambda: [slot, wire(_by_key(inner, members))])

            items = sorted(top.items())
            return _array_header(len(items)) + b"".join(one(slot, inner) for slot, inner in items)

        def trades() -> bytes:
            # by slot too: a cleared slot's trades never change until it settles, so each slot
            # is packed once (``_trades_wire`` is the same list, item by item)
            def one(slot: int, ts: tuple[Trade, ...]) -> bytes:
                return part(("trades", slot), ts, lambda: _trades_wire({slot: ts})[0])

            items = sorted(self.trades.items())
            return _array_header(len(items)) + b"".join(one(slot, ts) for slot, ts in items)

        tail = []
        if self.models:
            tail = [
                pack(self.last_model),
                part("models", self.models, lambda: models_wire(self.models)),
            ]
        out = b"".join(
            [
                _array_header(16 + len(tail)),
                pack("gn.state"),
                pack(STATE_FORMAT_MODELS if self.models else STATE_FORMAT),
                pack(self.genesis.hash),
                pack(self.height),
                pack(self.head_hash),
                pack(self.time_ms),
                part("nonces", self.nonces, lambda: _by_key(self.nonces, members)),
                by_slot("orders", self.orders, lambda hv: [[h, o.raw] for h, o in hv]),
                trades(),
                self._prices_part(),
                by_slot("readings", self.readings, lambda hv: hv),
                part("balances", self.balances, lambda: sorted(self.balances.items())),
                part("totals", self.totals, lambda: _totals_wire(self.totals, members)),
                pack(self.last_cleared_slot),
                pack(self.settled_slots),
                pack(_settled_wire(self.settled, members)),  # one height's: nothing to reuse
                *tail,
            ]
        )
        # forget the parts of slots no longer in the state at once: a part holds the very mapping
        # it packed, and a cleared slot's ~1 order per member kept alive only for this memo made
        # every full garbage collection walk them (measured: 3/4 of the orders a node held)
        live = (
            {("orders", s) for s in self.orders}
            | {("readings", s) for s in self.readings}
            | {("trades", s) for s in self.trades}
        )
        for key in [
            k for k in memo if isinstance(k, tuple) and k[0] in _SLOT_PARTS and k not in live
        ]:
            del memo[key]
        return out

    def _prices_part(self) -> bytes:
        """The prices' part of :meth:`encode`: ``pack(sorted(prices.items()))``. Prices shared
        along the chain (:class:`~.prices.ClearingPrices`) keep their items' bytes in the memo
        and pack only the ones added since (a year holds 35,040 prices: packing them all took
        tens of ms per snapshot); an array's bytes are its header and its items' bytes."""
        prices = self.clearing_prices
        if not isinstance(prices, ClearingPrices):
            hit = self.memo.get("prices")
            if hit is not None and hit[0] is prices:
                packed: bytes = hit[1]
                return packed
            packed = pack(sorted(prices.items()))
            self.memo["prices"] = (prices, packed)
            return packed
        hit = self.memo.get("prices:items")
        added = None if hit is None else prices.added_since(hit[0])
        if hit is None or added is None:
            items = b"".join(pack([s, prices[s]]) for s in prices)
        else:
            items = hit[1] + b"".join(pack([s, prices[s]]) for s in added)
        self.memo["prices:items"] = (prices, items)
        return _array_header(len(prices)) + items

    def _encode_plain(self) -> bytes:
        """:meth:`encode` without the memo (the definition; tests compare the two)."""
        tail = [self.last_model, models_wire(self.models)] if self.models else []
        return pack(
            [
                "gn.state",
                STATE_FORMAT_MODELS if self.models else STATE_FORMAT,
                self.genesis.hash,
                self.height,
                self.head_hash,
                self.time_ms,
                sorted(self.nonces.items()),
                [
                    [slot, [[h, o.raw] for h, o in sorted(by_h.items())]]
                    for slot, by_h in sorted(self.orders.items())
                ],
                _trades_wire(self.trades),
                sorted(self.clearing_prices.items()),
                [[slot, sorted(r.items())] for slot, r in sorted(self.readings.items())],
                sorted(self.balances.items()),
                _totals_wire(self.totals),
                self.last_cleared_slot,
                self.settled_slots,
                _settled_wire(self.settled),
                *tail,
            ]
        )

    def digest(self) -> bytes:
        """The state root (:mod:`.stateroot`): what a block's ``state_root`` commits to."""
        return state_tree(self).root

    def tree(self) -> StateTree:
        """The state root's trees, for cutting proofs (:mod:`gridnode.core.ledger.proofs`)."""
        return state_tree(self)

    def open_order(self, slot: int, household: str) -> OpenOrder | None:
        return self.orders.get(slot, {}).get(household)


def decode_state(data: bytes, genesis: Genesis) -> LedgerState:
    """Inverse of :meth:`LedgerState.encode` (for snapshots); the genesis must be the one it was made for."""
    value = unpack(data, what="state", max_bytes=1 << 30)
    last_model, models = ZERO_HASH, []
    if isinstance(value, list) and len(value) == 18 and value[1] == STATE_FORMAT_MODELS:
        last_model, models = value[16], value[17]
        value = [value[0], STATE_FORMAT, *value[2:16]]
    try:
        (
            tag,
            version,
            g_hash,
            height,
            head,
            time_ms,
            nonces,
            orders,
            trades,
            prices,
            readings,
            balances,
            totals,
            last_cleared,
            settled_slots,
            settled,
        ) = value
    except (TypeError, ValueError):
        raise InvalidInput(reason=WireReason.BAD_SHAPE, subject="state snapshot") from None
    if tag != "gn.state" or version != STATE_FORMAT:
        raise InvalidInput(reason=WireReason.BAD_TAG, subject="state snapshot", found=repr(tag))
    if g_hash != genesis.hash:
        raise InvalidInput(
            reason=LedgerReason.WRONG_GENESIS,
            subject="state snapshot",
            expected=genesis.hash.hex()[:16],
        )
    order_map: dict[int, dict[str, OpenOrder]] = {}
    for slot, by_h in orders:
        parsed: dict[str, OpenOrder] = {}
        for h, raw in by_h:
            parsed[h] = _open_order(decode_tx(raw), slot)
        order_map[slot] = parsed
    return LedgerState(
        genesis=genesis,
        height=height,
        head_hash=head,
        time_ms=time_ms,
        nonces=dict(nonces),
        orders=order_map,
        trades={slot: tuple(Trade(*t) for t in ts) for slot, ts in trades},
        clearing_prices=ClearingPrices.of(dict(prices)),
        readings={slot: dict(r) for slot, r in readings},
        balances=dict(balances),
        totals={t[0]: HouseholdTotals(*t[1:]) for t in totals},
        last_cleared_slot=last_cleared,
        settled_slots=settled_slots,
        settled={
            slot: SettledSlot(
                tuple(Trade(*t) for t in ts),
                dict(r),
                {
                    b[0]: HouseholdBill(b[0], **dict(zip(BILL_FIELDS, b[1:], strict=True)))
                    for b in bills
                },
            )
            for slot, ts, r, bills in settled
        },
        open_order_ids=frozenset(o.order.order_id for v in order_map.values() for o in v.values()),
        models={
            m[0]: CommittedModel(m[1], m[2], m[3], tuple(m[4]), m[5], m[6], m[7]) for m in models
        },
        last_model=last_model,
    )


def _open_order(tx: object, slot: int) -> OpenOrder:
    """A snapshot's open order of ``slot`` from the transaction that placed it: a
    :class:`SignedOrder`, or a bundle's order for that slot."""
    if isinstance(tx, SignedOrder):
        return tx
    if isinstance(tx, SignedBundle):
        for bo in tx.placed():
            if bo.order.slot == slot:
                return bo
    raise InvalidInput(reason=WireReason.BAD_TYPE, subject="state snapshot", field="orders")


def genesis_state(genesis: Genesis) -> LedgerState:
    """The state before block 1."""
    clock = genesis.clock
    return LedgerState(
        genesis=genesis,
        time_ms=genesis.genesis_time_ms,
        clearing_prices=ClearingPrices(),
        last_cleared_slot=clock.first_open_slot(genesis.genesis_time_ms // 1000) - 1,
    )
