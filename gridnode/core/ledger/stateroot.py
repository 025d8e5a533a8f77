"""The state root: a Merkle commitment to the ledger state, so one household's part can be proven.

``docs/merkle.md`` is the specification another implementation follows; this module is the code.
Rules:

* **Trees** are Certificate Transparency trees (:mod:`gridnode.core.merkle`: RFC 9162 hashing with
  0x00/0x01 prefixes, audit paths). Every entry is canonical msgpack (:mod:`market.codec`).
* **Accounts tree**: one entry per member, in genesis order (fixed size ``n``): ``["gn.account",
  1, household, nonce, balance_micro, bought_p2p_wh, sold_p2p_wh, grid_import_wh, grid_export_wh,
  bill_micro, grid_only_bill_micro, slots_settled]`` (nonce ``-1`` before the first order or
  cancel; zeros before anything was settled).
* **Slots tree**: one entry per *live* slot (a slot with an open order, trades awaiting
  settlement, a reading, or settled by this very block), in increasing slot order:
  ``["gn.slot", 1, slot, phase, clearing_price | nil, members_root]`` with ``phase`` 0 = open
  (after ``last_cleared_slot``), 1 = cleared (awaiting settlement), 2 = settled by the block that
  made this state. ``members_root`` is the root of the slot's **members tree**: one entry per
  member in genesis order (fixed size ``n``): the empty string when the member has nothing in the
  slot, else ``["gn.slotleaf", 1, slot, household, order | nil, trades, reading | nil, bill | nil]``
  — its open order (the canonical bytes of the transaction that placed it: its ``gn.tx.order``,
  or the ``gn.tx.bundle`` that carried it, whose order for this slot it is), its trades (each ``[role,
  counterparty, energy_wh, price_micro_per_kwh, amount_micro]``: role 0 bought, 1 sold, the
  counterparty as its member index; in the clearing's order), its signed reading, and, in a slot
  settled by this block, its bill line (:data:`BILL_FIELDS`, 15 integers). Compact on purpose: a
  household's entry is what its bill proof carries.
* **Prices tree**: one entry per slot with a recorded clearing price, in slot order:
  ``["gn.price", 1, slot, price | nil]``.
* **Models tree**: one entry per committed community model, in round order: ``["gn.model", 1,
  round, model_hash, previous_hash, contributors, validation, features, aggregator, height]``
  (``validation``: the seven summed integers of the commitment).
* **Root**: ``SHA-256`` of the record ``["gn.stateroot", 1, genesis_hash, height, time_ms,
  last_cleared_slot, settled_slots, grid_balance_micro, pool_balance_micro, n_members,
  accounts_root, n_slots, slots_root, n_prices, prices_root]``; once a model was committed the
  record is ``["gn.stateroot", 2, …the same 13…, n_models, models_root]`` (so a chain without
  federated rounds keeps its roots). It leaves out the head hash (a
  block cannot commit to its own hash); a block's ``state_root`` is this root of the state after
  it, and two nodes agree at a height iff their roots are equal.
* **Incremental**: each tree is kept per chain of states in the state's memo together with the
  very objects it was computed from; the next state's tree is the memo's, updated at the
  households whose entries changed (found by identity: the ledger never mutates a mapping it has
  handed on; for the nonces and the slots' orders and readings a block's admission wrote, from
  the rules' note of the households it wrote, :func:`note_writes`, instead of comparing every
  entry), so a block rehashes what it changed, not the state. A memo never changes a root.

Known limits: the prices tree grows by one entry per cleared slot (35,040 a year of 15-minute
slots); a new price costs ``O(log n)`` hashes when it is appended after every slot the tree holds
(always, on a chain), the whole tree otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter, is_not
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from gridnode.core.ledger.prices import ClearingPrices
from gridnode.core.merkle import FixedTree, leaf_hash, node_hash, tree_root
from market.clearing import Trade
from market.codec import pack
from market.settlement import GRID, POOL, HouseholdBill

if TYPE_CHECKING:
    from gridnode.core.ledger.state import CommittedModel, LedgerState, SettledSlot
    from gridnode.core.ledger.transactions import OpenOrder

__all__ = [
    "BILL_FIELDS",
    "PHASE_CLEARED",
    "PHASE_OPEN",
    "PHASE_SETTLED",
    "StateTree",
    "account_entry",
    "bill_wire",
    "model_entry",
    "root_record",
    "slot_entry",
    "slot_leaf_entry",
    "state_tree",
]

VERSION: Final = 1
PHASE_OPEN: Final = 0
PHASE_CLEARED: Final = 1
PHASE_SETTLED: Final = 2
#: a bill line in a members-tree entry: these fields of :class:`~market.settlement.HouseholdBill`
BILL_FIELDS: Final = (
    "measured_net_wh",
    "bought_p2p_wh",
    "sold_p2p_wh",
    "imbalance_wh",
    "netted_wh",
    "grid_import_wh",
    "grid_export_wh",
    "paid_p2p_micro",
    "received_p2p_micro",
    "grid_fee_micro",
    "netting_micro",
    "grid_import_micro",
    "grid_export_micro",
    "bill_micro",
    "grid_only_bill_micro",
)
_EMPTY_LEAF: Final = leaf_hash(b"")
_sha256 = hashlib.sha256


def bill_wire(bill: HouseholdBill) -> list[int]:
    return [getattr(bill, f) for f in BILL_FIELDS]


def account_entry(
    household: str, nonce: int, balance_micro: int, totals: Sequence[int] | None
) -> bytes:
    """An accounts-tree entry; ``totals``: the seven running totals, or ``None`` for zeros."""
    return pack(["gn.account", VERSION, household, nonce, balance_micro, *(totals or (0,) * 7)])


def slot_leaf_entry(  # noqa: PLR0917 - the entry's fields, in the entry's order
    slot: int,
    household: str,
    order: OpenOrder | None,
    trades: Sequence[Trade],
    reading: int | None,
    bill: HouseholdBill | None,
    members: Mapping[str, int],
) -> bytes:
    """A members-tree entry: empty when the household has nothing in the slot. ``members``:
    the genesis member index (trades name their counterparty by it)."""
    if order is None and not trades and reading is None and bill is None:
        return b""
    return _leaf_entry(
        slot,
        household,
        None if order is None else order.raw,
        [
            [0, members[t.seller], t.energy_wh, t.price_micro_per_kwh, t.amount_micro]
            if t.buyer == household
            else [1, members[t.buyer], t.energy_wh, t.price_micro_per_kwh, t.amount_micro]
            for t in trades
        ],
        reading,
        None if bill is None else bill_wire(bill),
    )


def _leaf_entry(  # noqa: PLR0917 - the entry's fields, in the entry's order
    slot: int,
    household: str,
    order_raw: bytes | None,
    trades: Sequence[Sequence[int]],
    reading: int | None,
    bill: Sequence[Any] | None,
) -> bytes:
    """A non-empty members-tree entry from its encoded parts: the one copy of its layout
    (:func:`slot_leaf_entry`, and ``_members``, which brings each part already encoded)."""
    return pack(["gn.slotleaf", VERSION, slot, household, order_raw, trades, reading, bill])


def slot_entry(slot: int, phase: int, price: int | None, members_root: bytes) -> bytes:
    return pack(["gn.slot", VERSION, slot, phase, price, members_root])


def price_entry(slot: int, price: int | None) -> bytes:
    return pack(["gn.price", VERSION, slot, price])


def model_entry(model: bytes, m: CommittedModel) -> bytes:
    """A models-tree entry."""
    return pack(
        [
            "gn.model",
            VERSION,
            m.round,
            model,
            m.previous,
            m.contributors,
            list(m.validation),
            m.features,
            m.aggregator,
            m.height,
        ]
    )


def _models(state: LedgerState) -> tuple[int, bytes]:
    memo = state.memo
    hit = memo.get("mt:models")
    if hit is not None and hit[0] is state.models:
        cached: tuple[int, bytes] = hit[1]
        return cached
    ordered = sorted(state.models.items(), key=lambda kv: kv[1].round)
    leaves = [leaf_hash(model_entry(h, m)) for h, m in ordered]
    result = (len(leaves), tree_root(leaves))
    memo["mt:models"] = (state.models, result)
    return result


def root_record(
    state: LedgerState, accounts_root: bytes, slots: tuple[int, bytes], prices: tuple[int, bytes]
) -> bytes:
    models = list(_models(state)) if state.models else []
    return pack(
        [
            "gn.stateroot",
            2 if models else VERSION,
            state.genesis.hash,
            state.height,
            state.time_ms,
            state.last_cleared_slot,
            state.settled_slots,
            state.balances.get(GRID, 0),
            state.balances.get(POOL, 0),
            len(state.genesis.members),
            accounts_root,
            slots[0],
            slots[1],
            prices[0],
            prices[1],
            *models,
        ]
    )


@dataclass(frozen=True, slots=True)
class StateTree:
    """Every tree of one state (what proofs are cut from) and its root."""

    accounts: FixedTree
    slots: tuple[int, ...]  # live slots, increasing
    slot_entries: tuple[bytes, ...]  # their slots-tree entries
    members: Mapping[int, FixedTree]  # each live slot's members tree
    record: bytes  # the root record
    root: bytes  # SHA-256 of the record

    def slot_leaves(self) -> list[bytes]:
        return [leaf_hash(e) for e in self.slot_entries]


#: the memo's record of which entries the rules wrote to make a mapping (:func:`note_writes`)
_WRITES: Final = "mt:writes"
#: ... holding at most this many mappings (a block's admission writes about four)
_WRITES_KEPT: Final = 16


def note_writes(
    memo: dict[Any, Any], new: Mapping[Any, Any], base: Mapping[Any, Any], keys: AbstractSet[Any]
) -> None:
    """Record in ``memo`` that ``new`` is a copy of ``base`` with only the entries at ``keys``
    set or deleted: the next tree built over ``new`` after one over ``base`` rehashes those
    entries without comparing every other one (:func:`_changed`). Only the ledger's rules call
    it, for the mappings a block's admission wrote; the record holds both mappings, so it can
    never be taken for another mapping that happens to reuse an address."""
    writes = memo.get(_WRITES)
    if writes is None:
        writes = memo[_WRITES] = {}
    writes[id(new)] = (new, base, keys)
    while len(writes) > _WRITES_KEPT:
        del writes[next(iter(writes))]


def _changed(
    old: Mapping[Any, Any] | None, new: Mapping[Any, Any] | None, memo: dict[Any, Any]
) -> Iterable[Any]:
    """Keys whose value is not the very same object in ``old`` and ``new`` (or a few more: the
    keys the rules wrote when ``new`` was made from ``old``, :func:`note_writes`)."""
    if old is new:
        return ()
    writes = memo.get(_WRITES)
    if writes and new is not None:
        noted = writes.pop(id(new), None)
        if noted is not None and noted[0] is new and noted[1] is old:
            keys: AbstractSet[Any] = noted[2]
            return keys
    if old is None:
        return new.keys() if new is not None else ()
    if new is None:
        return old.keys()
    # [k for k, v in new.items() if old.get(k) is not v], iterated in C (a block's states hold
    # thousands of entries each and change a few hundred)
    out = list(compress(new.keys(), map(is_not, map(old.get, new.keys()), new.values())))
    out.extend(old.keys() - new.keys())
    return out


def _empty_tree(state: LedgerState) -> FixedTree:
    memo = state.memo
    hit = memo.get("mt:empty")
    n = len(state.genesis.members)
    if hit is None or hit[1].size != n:
        hit = (None, FixedTree([_EMPTY_LEAF] * n))
        memo["mt:empty"] = hit
    tree: FixedTree = hit[1]
    return tree


def _accounts(state: LedgerState) -> FixedTree:
    memo = state.memo
    objs = (state.nonces, state.balances, state.totals)
    hit = memo.get("mt:accounts")
    if hit is not None and all(a is b for a, b in zip(hit[0], objs, strict=True)):
        tree: FixedTree = hit[1]
        return tree
    index = state.genesis.member_index
    if hit is None:
        base = FixedTree([leaf_hash(account_entry(h, -1, 0, None)) for h in state.genesis.members])
        dirty: set[str] = set(state.nonces) | set(state.balances) | set(state.totals)
    else:
        base = hit[1]
        old_n, old_b, old_t = hit[0]
        dirty = set(_changed(old_n, state.nonces, memo))
        dirty.update(_changed(old_b, state.balances, memo))
        dirty.update(_changed(old_t, state.totals, memo))
    changes: dict[int, bytes] = {}
    for h in dirty:
        i = index.get(h)
        if i is None:
            continue  # the grid and the pool: in the root record
        t = state.totals.get(h)
        changes[i] = leaf_hash(
            account_entry(
                h,
                state.nonces.get(h, -1),
                state.balances.get(h, 0),
                None
                if t is None
                else (
                    t.bought_p2p_wh,
                    t.sold_p2p_wh,
                    t.grid_import_wh,
                    t.grid_export_wh,
                    t.bill_micro,
                    t.grid_only_bill_micro,
                    t.slots_settled,
                ),
            )
        )
    tree = base.updated(changes)
    memo["mt:accounts"] = (objs, tree)
    return tree


def _trade_wires(
    trades: Sequence[Trade], members: Mapping[str, int]
) -> dict[str, tuple[tuple[int, int, int, int, int], ...]]:
    """Each household's trades as its members-tree entry carries them (:func:`slot_leaf_entry`:
    ``(role, counterparty, energy_wh, price_micro_per_kwh, amount_micro)``, in the clearing's
    order), computed once per trade list: a slot's entries are re-encoded when it clears, as its
    readings arrive and when it settles, over the same trades. Tuples of ints, which msgpack packs
    as the arrays the entry specifies and which the garbage collector stops tracking (a list per
    household would keep ~1 tracked object per member alive while the slot awaits settlement)."""
    out: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for t in trades:
        buyer, seller = t.buyer, t.seller
        e, p, a = t.energy_wh, t.price_micro_per_kwh, t.amount_micro
        out.setdefault(buyer, []).append((0, members[seller], e, p, a))
        if seller != buyer:
            out.setdefault(seller, []).append((1, members[buyer], e, p, a))
    return {h: tuple(w) for h, w in out.items()}


_NO_TRADES: Final[tuple[Trade, ...]] = ()
_NO_WIRES: Final[tuple[tuple[int, int, int, int, int], ...]] = ()
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
#: a bill line of a members-tree entry read in C (a tuple packs as the array ``bill_wire`` gives)
_bill_line: Final = attrgetter(*BILL_FIELDS)


def _members(state: LedgerState, slot: int) -> FixedTree:
    """The members tree of ``slot`` (live in ``state``)."""
    memo = state.memo
    done: SettledSlot | None = state.settled.get(slot)
    if done is not None:
        objs: tuple[Any, ...] = (None, done.trades, done.readings, done)
    else:
        objs = (
            state.orders.get(slot),
            state.trades.get(slot, _NO_TRADES),
            state.readings.get(slot),
            None,
        )
    key = ("mt:slot", slot)
    hit = memo.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objs, strict=True)):
        tree: FixedTree = hit[1]
        return tree
    orders, trades, readings, settled = objs
    members = state.genesis.member_index
    if hit is None:
        base = _empty_tree(state)
        old: tuple[Any, ...] = (None, _NO_TRADES, None, None)
        old_wires: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {}
    else:
        base, old, old_wires = hit[1], hit[0], hit[2]
    wires = old_wires if trades is old[1] else _trade_wires(trades, members)
    dirty = set(_changed(old[0], orders, memo))
    dirty.update(_changed(old[2], readings, memo))
    if trades is not old[1]:
        dirty.update(old_wires)
        dirty.update(wires)
    if settled is not old[3]:
        for s in (old[3], settled):
            if s is not None:
                dirty.update(s.bills)
    # each changed entry as slot_leaf_entry encodes it (tested against it and the specification),
    # without a call, a trade list or a bill list per entry
    order_of = _EMPTY.get if orders is None else orders.get
    reading_of = _EMPTY.get if readings is None else readings.get
    bill_of = _EMPTY.get if settled is None else settled.bills.get
    wires_of = wires.get
    changes: dict[int, bytes] = {}
    for h in dirty:
        i = members.get(h)
        if i is None:  # pragma: no cover - only members trade, read and get bills
            continue
        order = order_of(h)
        mine = wires_of(h, _NO_WIRES)
        reading = reading_of(h)
        bill = bill_of(h)
        if order is None and not mine and reading is None and bill is None:
            changes[i] = _EMPTY_LEAF
            continue
        changes[i] = leaf_hash(
            _leaf_entry(
                slot,
                h,
                None if order is None else order.raw,
                mine,
                reading,
                None if bill is None else _bill_line(bill),
            )
        )
    tree = base.updated(changes)
    memo[key] = (objs, tree, wires)
    return tree


def _prices(state: LedgerState) -> tuple[int, bytes]:
    """The prices tree's size and root. The tree only grows at its end (a slot is cleared after
    every slot before it): the memo keeps the right edge of the tree (:class:`_Frontier`), so a
    new price hashes ``O(log n)`` nodes, not the ``n`` entries of a year's prices. The memo holds
    the prices mapping it was computed from (never mutated, like every state mapping, not a copy
    of it); the slots a block added are read off the chain's shared log
    (:meth:`~.prices.ClearingPrices.added_since`), so a block that clears a slot costs
    ``O(log n)`` too, not a copy and a comparison of a year's prices."""
    memo = state.memo
    prices = state.clearing_prices
    hit = memo.get("mt:prices")
    if hit is not None and (hit[0] is prices or hit[0] == prices):
        memo["mt:prices"] = (prices, hit[1], hit[2])
        result: tuple[int, bytes] = hit[1]
        return result
    frontier: _Frontier | None = None
    if hit is not None:
        old = hit[0]
        added = prices.added_since(old) if isinstance(prices, ClearingPrices) else None
        if added is None and len(prices) > len(old) and old.items() <= prices.items():
            added = sorted(prices.keys() - old.keys())  # any other mapping that grew
        if added and hit[2].last < added[0]:
            frontier = hit[2].extended((s, prices[s]) for s in added)  # appended after them all
    if frontier is None:
        frontier = _Frontier().extended(sorted(prices.items()))
    result = (frontier.size, frontier.root())
    memo["mt:prices"] = (prices, result, frontier)
    return result


@dataclass(frozen=True, slots=True)
class _Frontier:
    """The right edge of a Merkle tree over price entries in slot order: the roots of its perfect
    subtrees, largest first (the binary digits of the size), and the last entry's slot. Its root
    is RFC 9162's tree hash over the same entries (tested against :func:`tree_root`)."""

    peaks: tuple[tuple[int, bytes], ...] = ()  # (leaves, root) of each perfect subtree
    last: int = -(2**63)

    @property
    def size(self) -> int:
        return sum(n for n, _ in self.peaks)

    def extended(self, entries: Iterable[tuple[int, int | None]]) -> _Frontier:
        peaks, last = list(self.peaks), self.last
        for slot, price in entries:
            node = (1, leaf_hash(price_entry(slot, price)))
            while peaks and peaks[-1][0] == node[0]:
                left = peaks.pop()
                node = (2 * node[0], node_hash(left[1], node[1]))
            peaks.append(node)
            last = slot
        return _Frontier(tuple(peaks), last)

    def root(self) -> bytes:
        if not self.peaks:
            return tree_root([])
        root = self.peaks[-1][1]
        for _, peak in reversed(self.peaks[:-1]):
            root = node_hash(peak, root)
        return root


def state_tree(state: LedgerState) -> StateTree:
    """The trees of ``state`` and its root (see the module rules)."""
    parts = (
        state.nonces,
        state.balances,
        state.totals,
        state.orders,
        state.trades,
        state.readings,
        state.settled,
        state.clearing_prices,
        state.models,
    )
    scalars = (state.height, state.time_ms, state.last_cleared_slot, state.settled_slots)
    hit = state.memo.get("mt:tree")
    if (
        hit is not None
        and hit[1] == scalars
        and hit[2] is state.genesis
        and all(a is b for a, b in zip(hit[0], parts, strict=True))
    ):
        cached: StateTree = hit[3]
        return cached
    tree = _state_tree(state)
    state.memo["mt:tree"] = (parts, scalars, state.genesis, tree)
    return tree


def _state_tree(state: LedgerState) -> StateTree:
    accounts = _accounts(state)
    live = sorted(set(state.orders) | set(state.trades) | set(state.readings) | set(state.settled))
    members = {s: _members(state, s) for s in live}
    last = state.last_cleared_slot
    prices = state.clearing_prices
    entries = tuple(
        slot_entry(
            s,
            PHASE_SETTLED if s in state.settled else PHASE_CLEARED if s <= last else PHASE_OPEN,
            prices.get(s),
            members[s].root,
        )
        for s in live
    )
    slots_root = tree_root([leaf_hash(e) for e in entries])
    record = root_record(state, accounts.root, (len(entries), slots_root), _prices(state))
    _forget(state, live)
    return StateTree(accounts, tuple(live), entries, members, record, _sha256(record).digest())


def _forget(state: LedgerState, live: Sequence[int]) -> None:
    """Drop memoised members trees of slots that left the state (keeps up to two, for the state
    before: a slot leaves one block after it settles). A memoised settled slot holds its ~1 bill
    and trade list per member, which every full garbage collection walks while it is kept."""
    memo = state.memo
    keys = [k for k in memo if isinstance(k, tuple) and k[0] == "mt:slot"]
    if len(keys) <= len(live) + 2:
        return
    keep = set(live)
    for k in keys:
        if k[1] not in keep:
            del memo[k]
