"""One household's recent slots as its node saw them, kept after settlement (bounded).

The ledger keeps a slot's trades only until the slot settles; an owner wants to see yesterday's.
:class:`History` keeps, per slot, what the community's market did and what it meant for this
household, computed once on the node's thread and published in its status snapshot (the API and the
page only read :class:`HistoryView`).

Rules of this module:

* **Facts from the ledger's own step.** :meth:`History.on_block` takes each committed block with the
  state before it and applies it with :func:`gridnode.core.ledger.apply_with_outcome` — the
  function the chain reader (:mod:`gridnode.chain`) uses: the books it cleared exactly as the ledger
  held them at gate closure, the trades, the readings and the bills. Nothing about clearing or
  settlement is derived a second time here. The resulting head hash must be the one committed
  (a mismatch is a bug: the block's facts are then not recorded and the mismatch is logged once).
* **What the meter and agent saw** comes from the household driver (:meth:`History.record_metered`):
  PV and load where the meter knows them, the natural net, the signed reading, the battery; and the
  forecast quantiles last quoted for a slot (:meth:`History.note_forecast`).
* **A missed reading** (the slot settled without this household's reading: the ledger counted it as
  0 Wh, :func:`gridnode.core.ledger.settle_slot`) is marked, with what it cost: the bill the ledger
  made minus the bill the same rule gives with the reading the meter had (the household driver's
  record of the slot), or, when the node knows none, with the household's contracted position
  delivered exactly (``basis`` says which).
* **Bounded.** Slots older than ``keep_slots`` before the newest one are dropped (default: 31 days
  of 15-minute slots); the books (supply and demand, aggregated per price) and every trade of a slot
  are kept only for the newest ``keep_books`` slots. The history starts where the node started
  reading (its snapshot's height at boot): older days are in the ledger's running totals only.
* **Local days** (``today``, per-day bills) are calendar days in the household's zone
  (:class:`~gridnode.localtime.LocalTime`).
* Not thread-safe: the node's thread writes; :meth:`History.view` returns an immutable view, rebuilt
  only after a change, that any thread may read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from gridnode.core.ledger import Block, LedgerState, apply_with_outcome, settle_slot
from gridnode.localtime import LocalTime
from market.clearing import Trade
from market.errors import InvalidInput
from market.orders import Order, Side
from market.settlement import HouseholdBill, Netting
from market.slots import SlotClock

__all__ = [
    "DayTotals",
    "History",
    "HistoryView",
    "HouseholdSlot",
    "MeteredSlot",
    "aggregate_curve",
]

log = logging.getLogger("gridnode.history")

DEFAULT_KEEP_SLOTS: Final = 31 * 96
DEFAULT_KEEP_BOOKS: Final = 96


@dataclass(frozen=True, slots=True)
class MeteredSlot:
    """What the household's meter and agent saw of one delivered slot (Wh; ``None``: not known)."""

    slot: int
    natural_wh: int  # PV − load as the meter measured it, before the battery (+ export)
    reading_wh: int  # what the node signed: natural − charged + discharged
    pv_wh: int | None = None
    load_wh: int | None = None
    charged_wh: int = 0
    discharged_wh: int = 0
    soc_wh: int | None = None  # the battery's state of charge after the slot (None: no battery)


@dataclass(frozen=True, slots=True)
class HouseholdSlot:
    """One slot: the community's market and this household's part in it (see the module rules)."""

    slot: int
    cleared_height: int = 0  # the block that cleared the slot's book (0: none, no orders)
    price_micro_per_kwh: int | None = None
    volume_wh: int = 0
    trade_count: int = 0
    orders: int = 0  # orders in the book at gate closure
    supply: tuple[tuple[int, int], ...] = ()  # (price, Wh) per price level, ascending
    demand: tuple[tuple[int, int], ...] = ()  # (price, Wh) per price level, descending
    trades: tuple[Trade, ...] | None = None  # every trade of the slot (None: not kept)
    my_order: Order | None = None  # this household's order in the book at gate closure
    my_trades: tuple[Trade, ...] = ()
    settled_height: int = 0  # the block that settled it (0: not yet)
    bill: HouseholdBill | None = None  # this household's bill (None: not settled, or not in it)
    missed: bool = False  # settled without this household's reading (counted as 0 Wh)
    missed_cost_micro: int = 0  # what that cost, against ``missed_basis``
    missed_basis: str = ""  # "meter" (the reading the meter had) or "contract"
    metered: MeteredSlot | None = None
    #: the forecast (P10, P50, P90) of the natural net last quoted for the slot
    forecast: tuple[int, int, int] | None = None

    @property
    def settled(self) -> bool:
        return self.settled_height > 0


@dataclass(frozen=True, slots=True)
class DayTotals:
    """One local day's settled slots for this household (Wh, µ¤)."""

    day: str  # ISO date, local
    start_s: int  # local midnight, unix seconds
    slots_settled: int = 0
    bill_micro: int = 0
    grid_only_bill_micro: int = 0
    bought_p2p_wh: int = 0
    sold_p2p_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    pv_wh: int = 0  # over the settled slots whose PV and load the meter knows
    load_wh: int = 0
    grid_import_metered_wh: int = 0  # grid import / export over those same slots
    grid_export_metered_wh: int = 0
    metered_slots: int = 0
    readings_missed: int = 0
    missed_cost_micro: int = 0

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.bill_micro


@dataclass(frozen=True, slots=True)
class HistoryView:
    """The history as published: slots ascending, days ascending."""

    household: str
    since_slot: int | None  # the first slot the history holds (None: empty)
    slots: tuple[HouseholdSlot, ...] = ()
    days: tuple[DayTotals, ...] = ()
    version: int = 0

    def slot(self, slot: int) -> HouseholdSlot | None:
        lo, hi = 0, len(self.slots)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.slots[mid].slot < slot:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.slots) and self.slots[lo].slot == slot:
            return self.slots[lo]
        return None


def aggregate_curve(orders: Iterable[Order], side: Side) -> tuple[tuple[int, int], ...]:
    """The ``side``'s steps of ``orders`` as (price, Wh) per price level: ascending prices for
    sells (the supply curve's order), descending for buys (demand)."""
    levels: dict[int, int] = {}
    for o in orders:
        if o.side is side:
            for s in o.steps:
                levels[s.price_micro_per_kwh] = levels.get(s.price_micro_per_kwh, 0) + s.energy_wh
    return tuple(sorted(levels.items(), reverse=side is Side.BUY))


@dataclass
class History:
    """The accumulator on the node's thread (see the module rules)."""

    household: str
    clock: SlotClock
    zone: LocalTime
    keep_slots: int = DEFAULT_KEEP_SLOTS
    keep_books: int = DEFAULT_KEEP_BOOKS
    verified: set[bytes] | None = None  # the node's cache of verified transaction signatures
    _slots: dict[int, HouseholdSlot] = field(default_factory=dict)
    _forecasts: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    _version: int = 0
    _view: HistoryView | None = None
    _broken: bool = False

    # ------------------------------------------------------------------ inputs
    def on_block(
        self, before: LedgerState, block: Block, committed_hash: bytes
    ) -> LedgerState | None:
        """Record what ``block`` (committed on top of ``before``) cleared and settled; return the
        state after it (``None``, logged once, if it does not give ``committed_hash``)."""
        try:
            outcome = apply_with_outcome(before, block, verified=self.verified)
        except InvalidInput as exc:  # pragma: no cover - the node applied the same block
            self._broken_once(f"block {block.height} does not apply here: {exc}")
            return None
        if outcome.state.head_hash != committed_hash:  # pragma: no cover - see above
            self._broken_once(f"block {block.height}: a different head hash than committed")
            return None
        me = self.household
        for c in outcome.cleared:
            mine = c.book.get(me)
            trades = tuple(c.trades)
            self._put(
                replace(
                    self._get(c.slot),
                    cleared_height=block.height,
                    price_micro_per_kwh=c.clearing_price_micro_per_kwh,
                    volume_wh=c.volume_wh,
                    trade_count=len(trades),
                    orders=len(c.book),
                    supply=aggregate_curve((so.order for so in c.book.values()), Side.SELL),
                    demand=aggregate_curve((so.order for so in c.book.values()), Side.BUY),
                    trades=trades,
                    my_order=None if mine is None else mine.order,
                    my_trades=tuple(t for t in trades if me in (t.buyer, t.seller)),
                )
            )
        for s in outcome.settled:
            try:
                bill = s.settlement.bill(me)
            except KeyError:
                bill = None
            record = replace(self._get(s.slot), settled_height=block.height, bill=bill)
            if bill is not None and me not in s.readings:
                record = self._missed(record, s.readings, before)
            self._put(record)
        self._trim()
        return outcome.state

    def record_metered(self, metered: MeteredSlot) -> None:
        """What the meter and agent saw of a delivered slot (the household driver calls this)."""
        self._put(replace(self._get(metered.slot), metered=metered))
        self._trim()

    def note_forecast(self, quotes: Sequence[tuple[int, int, int, int]]) -> None:
        """The household driver's latest forecast ``(slot, P10, P50, P90)``: each slot keeps the
        last one quoted for it."""
        changed = False
        for slot, p10, p50, p90 in quotes:
            if self._forecasts.get(slot) != (p10, p50, p90):
                self._forecasts[slot] = (p10, p50, p90)
                changed = True
        if changed:
            for slot, q in list(self._forecasts.items()):
                if slot in self._slots:
                    self._slots[slot] = replace(self._slots[slot], forecast=q)
            self._version += 1
            self._trim()

    # ------------------------------------------------------------------ output
    def view(self) -> HistoryView:
        """The immutable view (the same object until something changes)."""
        if self._view is None or self._view.version != self._version:
            slots = tuple(self._slots[s] for s in sorted(self._slots))
            self._view = HistoryView(
                household=self.household,
                since_slot=slots[0].slot if slots else None,
                slots=slots,
                days=self._days(slots),
                version=self._version,
            )
        return self._view

    def upcoming_forecast(self, after_slot: int) -> tuple[tuple[int, int, int, int], ...]:
        """The forecasts kept for slots after ``after_slot``."""
        return tuple((s, *q) for s, q in sorted(self._forecasts.items()) if s > after_slot)

    # ------------------------------------------------------------------ internals
    def _get(self, slot: int) -> HouseholdSlot:
        record = self._slots.get(slot)
        if record is None:
            record = HouseholdSlot(slot, forecast=self._forecasts.get(slot))
        return record

    def _put(self, record: HouseholdSlot) -> None:
        self._slots[record.slot] = record
        self._version += 1

    def _newest(self) -> int:
        return max(self._slots)

    def _missed(
        self, record: HouseholdSlot, readings: Mapping[str, int], before: LedgerState
    ) -> HouseholdSlot:
        """Mark a settlement without this household's reading, and what it cost (module rules)."""
        assert record.bill is not None
        me = self.household
        metered = record.metered
        if metered is not None:
            value, basis = metered.reading_wh, "meter"
        else:
            value = sum(t.energy_wh for t in record.my_trades if t.seller == me) - sum(
                t.energy_wh for t in record.my_trades if t.buyer == me
            )
            basis = "contract"
        trades = record.trades if record.trades is not None else record.my_trades
        if record.trades is None and before.genesis.netting is not Netting.NONE:
            return replace(record, missed=True)  # the cost needs every trade: not kept
        counterfactual = settle_slot(before.genesis, record.slot, trades, {**readings, me: value})
        cost = record.bill.bill_micro - counterfactual.bill(me).bill_micro
        return replace(record, missed=True, missed_cost_micro=cost, missed_basis=basis)

    def _trim(self) -> None:
        if not self._slots:
            return
        newest = self._newest()
        for slot in [s for s in self._slots if s <= newest - self.keep_slots]:
            del self._slots[slot]
        for slot in [s for s in self._forecasts if s <= newest - self.keep_slots]:
            del self._forecasts[slot]
        for slot in [
            s
            for s, r in self._slots.items()
            if s <= newest - self.keep_books and (r.trades is not None or r.supply or r.demand)
        ]:
            self._slots[slot] = replace(self._slots[slot], trades=None, supply=(), demand=())

    def _broken_once(self, why: str) -> None:
        if not self._broken:
            log.error("history: %s; later facts may be missing", why)
            self._broken = True

    def _days(self, slots: Sequence[HouseholdSlot]) -> tuple[DayTotals, ...]:
        days: dict[str, list[int]] = {}
        starts: dict[str, int] = {}
        for r in slots:
            if not r.settled or r.bill is None:
                continue
            day = self.zone.date(self.clock.start(r.slot))
            key = day.isoformat()
            if key not in days:
                days[key] = [0] * 14
                starts[key] = self.zone.day_start_s(day)
            b, m = r.bill, r.metered
            known = m is not None and m.pv_wh is not None and m.load_wh is not None
            _add(
                days[key],
                (
                    1,
                    b.bill_micro,
                    b.grid_only_bill_micro,
                    b.bought_p2p_wh,
                    b.sold_p2p_wh,
                    b.grid_import_wh,
                    b.grid_export_wh,
                    (m.pv_wh or 0) if known and m else 0,
                    (m.load_wh or 0) if known and m else 0,
                    b.grid_import_wh if known else 0,
                    b.grid_export_wh if known else 0,
                    1 if known else 0,
                    1 if r.missed else 0,
                    r.missed_cost_micro,
                ),
            )
        return tuple(DayTotals(k, starts[k], *days[k]) for k in sorted(days))


def _add(acc: list[int], values: Sequence[int]) -> None:
    for i, v in enumerate(values):
        acc[i] += v
