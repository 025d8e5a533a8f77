"""The market half of a simulation's KPIs, from the chain's facts alone: one pipeline, both engines.

:class:`MarketKPIs` is fed every :class:`gridnode.chain.BlockFacts` of a run's chain in height
order (the sample full node does it: :mod:`sims.fullnode`); :meth:`MarketKPIs.finish` gives the
:class:`MarketOutcome` of the measured slots ``first..last`` (up to ``through``, the last slot the
run reached):

* per slot (:class:`SlotMarket`): the height of the block that cleared it, its clearing price and
  trades (0, ``None`` and none for a slot without any order: the ledger clears no book for it), how
  many orders the ledger cleared (its book at gate closure; for a slot not cleared by the end of
  the chain, the orders it holds open), and from the slot's settlement — the ledger's own
  (:class:`~gridnode.core.ledger.SlotSettled`), or, for a slot traded or read but not settled by the
  end of the chain (the run stopped first), the ledger's rule applied to the readings so far
  (:func:`gridnode.core.ledger.settle_slot`) — the grid import and export and the imbalance energy
  and cost (:mod:`market.settlement`'s KPI rules);
* per household (:class:`HouseholdMarket`): those settlements' P2P and grid energy, bills and
  imbalance, summed over the measured slots; its **over-contracted** energy and cost (the part of
  its contract it could not honour: a seller short of what it sold, ``max(0, sold − bought −
  max(measured, 0))``, bought back at retail instead of the price it was paid; a buyer long on what
  it bought, ``max(0, bought − sold − max(−measured, 0))``, sold back at feed-in after paying the
  price and the grid fee; at the slot's market price, the no-netting rule); and its **weekly
  savings** vs grid-only, one sum per :data:`WEEK_S` from the first measured slot (the last week may
  be partial);
* ``totals_agree``: the ledger's settlements of every slot it settled (measured or not) sum exactly
  to the totals its final state holds.

:func:`slot_record`, :func:`household_kpi` and :func:`trade_rows` join these with what each engine
measures on its own (meters, forecasts, batteries, submissions) into the rows of
:mod:`sims.results`.

Memory (a year's run keeps every measured slot's trades until :meth:`MarketKPIs.finish`): each
slot's trades are kept as columns (:func:`compact_trades`: a :class:`market.clearing.Trades` of
machine integers, the households' keys interned once for the whole run, 64-hex order ids packed as
32 bytes), not as a tuple of :class:`~market.clearing.Trade` objects: ≈ 60 against ≈ 200 bytes a
trade. They read back as the same trades, in the same order (tested).

Known limit: a measured slot after ``through`` that the ledger settled would count in the
households' sums but get no slot record; it cannot happen (a slot settles only after its delivery,
and ``through`` is the last slot delivered).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload

from gridnode.chain import BlockFacts, trade_row
from gridnode.core.ledger import Genesis, HouseholdTotals, LedgerState, settle_slot
from market.clearing import Trade, Trades
from market.settlement import (
    HouseholdBill,
    Settlement,
    Tariff,
    imbalance_cost_micro,
    imbalance_energy_wh,
    imbalance_reference_price_micro_per_kwh,
)
from market.units import amount_micro
from sims.results import HouseholdKPI, SlotRecord
from sims.scenario import HouseholdSpec

__all__ = [
    "WEEK_S",
    "HouseholdMarket",
    "MarketKPIs",
    "MarketOutcome",
    "SlotMarket",
    "compact_trades",
    "household_kpi",
    "over_contracted",
    "slot_record",
    "trade_rows",
]


@dataclass(frozen=True, slots=True)
class SlotMarket:
    """One measured slot, as the chain says (see the module rules)."""

    slot: int
    height: int  # the block that cleared it; 0: no book cleared (no order, or not yet)
    clearing_price_micro_per_kwh: int | None
    trades: Sequence[Trade]  # compact_trades' columns: iterates as the ledger's trades
    orders: int
    settled: bool  # the ledger settled it; else the settlement figures are provisional
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    imbalance_wh: int = 0
    imbalance_cost_micro: int = 0


#: a household-week: savings are also summed per week of the measured slots
WEEK_S: Final = 7 * 86_400


@dataclass(frozen=True, slots=True)
class HouseholdMarket:
    """One household's settlements summed over the measured slots: P2P and grid energy and bills
    (as the ledger's own :class:`~gridnode.core.ledger.HouseholdTotals`), imbalance, over-contracted
    energy and cost, and savings per week (module rules)."""

    totals: HouseholdTotals = field(default_factory=HouseholdTotals)
    imbalance_wh: int = 0
    imbalance_cost_micro: int = 0
    over_contracted_wh: int = 0
    over_contract_cost_micro: int = 0
    weekly_savings_micro: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MarketOutcome:
    slots: tuple[SlotMarket, ...]  # first..through, one per slot
    households: Mapping[str, HouseholdMarket]  # every household settled in a measured slot
    totals_agree: bool


#: a household's running sums: HouseholdTotals' fields in order, then imbalance Wh and µ¤, then
#: over-contracted Wh and µ¤
_Sums = list[int]
_SUMS: Final = 11
#: a slot's settlement figures: grid import, grid export, imbalance Wh, imbalance µ¤
_Figures = tuple[int, int, int, int]


@dataclass(slots=True)
class MarketKPIs:
    """The fold over a chain's facts (see the module rules)."""

    genesis: Genesis
    first_slot: int
    last_slot: int
    _cleared: dict[int, tuple[int, int | None, Sequence[Trade], int]] = field(
        default_factory=dict
    )  # slot -> (height, price, trades, orders)
    _readings: dict[int, dict[str, int]] = field(default_factory=dict)  # measured, not settled
    _figures: dict[int, _Figures] = field(default_factory=dict)  # measured, settled
    _households: dict[str, _Sums] = field(default_factory=dict)  # over settled measured slots
    _weeks: dict[str, dict[int, int]] = field(default_factory=dict)  # household -> week -> savings
    _totals: dict[str, list[int]] = field(default_factory=dict)  # over every settled slot

    def _measured(self, slot: int) -> bool:
        return self.first_slot <= slot <= self.last_slot

    def add(self, facts: BlockFacts) -> None:
        """Take one block's facts (in height order; a block's readings come before what it
        settles, as in :func:`~gridnode.core.ledger.apply`)."""
        for r in facts.readings:
            if self._measured(r.slot):
                self._readings.setdefault(r.slot, {})[r.household] = r.net_wh
        for c in facts.cleared:
            if self._measured(c.slot):
                self._cleared[c.slot] = (
                    facts.height,
                    c.clearing_price_micro_per_kwh,
                    compact_trades(c.trades),
                    len(c.book),
                )
        for s in facts.settled:
            for b in s.settlement.bills:
                _add(self._totals.setdefault(b.household, [0] * 7), _bill_totals(b))
            if self._measured(s.slot):
                self._readings.pop(s.slot, None)
                self._figures[s.slot] = self._settled_figures(
                    s.slot, s.settlement, self._households, self._weeks
                )

    def _settled_figures(
        self,
        slot: int,
        settlement: Settlement,
        households: dict[str, _Sums],
        weeks: dict[str, dict[int, int]],
    ) -> _Figures:
        _, price, trades, _ = self._cleared.get(slot, (0, None, (), 0))
        ref = imbalance_reference_price_micro_per_kwh(trades, price)
        tariff = self.genesis.tariff
        week = (slot - self.first_slot) * self.genesis.slot_seconds // WEEK_S
        imported = exported = imb_wh = imb_micro = 0
        for b in settlement.bills:
            wh, micro = imbalance_energy_wh(b), imbalance_cost_micro(b, ref)
            over = over_contracted(b, ref, tariff)
            _add(households.setdefault(b.household, [0] * _SUMS),
                 (*_bill_totals(b), wh, micro, *over))  # fmt: skip
            by_week = weeks.setdefault(b.household, {})
            by_week[week] = by_week.get(week, 0) + b.savings_micro
            imported += b.grid_import_wh
            exported += b.grid_export_wh
            imb_wh += wh
            imb_micro += micro
        return imported, exported, imb_wh, imb_micro

    def finish(self, state: LedgerState, *, through: int | None = None) -> MarketOutcome:
        """The outcome of slots ``first..through`` (default: ``last``), ``state`` being the ledger
        state after the last block added. Repeatable: it changes nothing."""
        end = self.last_slot if through is None else min(through, self.last_slot)
        households = {h: list(v) for h, v in self._households.items()}
        weeks = {h: dict(v) for h, v in self._weeks.items()}
        slots = []
        for slot in range(self.first_slot, end + 1):
            cleared = self._cleared.get(slot)
            if cleared is not None:
                height, price, trades, orders = cleared
            else:
                height, price, trades, orders = 0, None, (), len(state.orders.get(slot, {}))
            settled = slot in self._figures
            figures: _Figures = (0, 0, 0, 0)
            if settled:
                figures = self._figures[slot]
            else:
                readings = self._readings.get(slot, {})
                if trades or readings:  # provisional: the ledger's rule on the readings so far
                    provisional = settle_slot(self.genesis, slot, trades, readings)
                    figures = self._settled_figures(slot, provisional, households, weeks)
            slots.append(SlotMarket(slot, height, price, trades, orders, settled, *figures))
        agree = {h: HouseholdTotals(*v) for h, v in self._totals.items()} == dict(state.totals)
        n_weeks = -(-(end + 1 - self.first_slot) * self.genesis.slot_seconds // WEEK_S)
        return MarketOutcome(
            tuple(slots),
            {
                h: HouseholdMarket(
                    HouseholdTotals(*v[:7]),
                    v[7],
                    v[8],
                    v[9],
                    v[10],
                    tuple(weeks.get(h, {}).get(w, 0) for w in range(n_weeks)),
                )
                for h, v in households.items()
            },
            agree,
        )


def over_contracted(bill: HouseholdBill, price: int | None, tariff: Tariff) -> tuple[int, int]:
    """``(Wh, µ¤)`` of the contract a household could not honour in a slot, and what that cost it
    against the market ``price`` it traded at (module rules; ``(0, 0)`` when it did not)."""
    contract = bill.sold_p2p_wh - bill.bought_p2p_wh
    if contract == 0 or price is None:
        return 0, 0
    if contract > 0:  # a seller short: bought back at retail what it was paid the price for
        over = max(0, contract - max(bill.measured_net_wh, 0))
        cost = amount_micro(over, tariff.retail_micro_per_kwh) - amount_micro(over, price)
        return over, cost
    over = max(0, -contract - max(-bill.measured_net_wh, 0))  # a buyer long: sold back at feed-in
    cost = (
        amount_micro(over, price)
        + amount_micro(over, tariff.grid_fee_micro_per_kwh)
        - amount_micro(over, tariff.feed_in_micro_per_kwh)
    )
    return over, cost


def _bill_totals(b: HouseholdBill) -> tuple[int, ...]:
    """What one slot's bill adds to a household's :class:`HouseholdTotals`, in its field order."""
    return (b.bought_p2p_wh, b.sold_p2p_wh, b.grid_import_wh, b.grid_export_wh, b.bill_micro,
            b.grid_only_bill_micro, 1)  # fmt: skip


def _add(acc: list[int], values: tuple[int, ...]) -> None:
    for i, v in enumerate(values):
        acc[i] += v


class _HexIds(Sequence[str]):
    """Order ids that are 64 lowercase hex digits, packed as 32 bytes each; read back as the same
    strings."""

    __slots__ = ("_packed",)

    def __init__(self, ids: Sequence[str]) -> None:
        self._packed = b"".join(bytes.fromhex(i) for i in ids)

    def __len__(self) -> int:
        return len(self._packed) // 32

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        k = index % len(self) * 32
        return self._packed[k : k + 32].hex()


def _is_hex_id(order_id: str) -> bool:
    if len(order_id) != 64:
        return False
    try:
        return bytes.fromhex(order_id).hex() == order_id
    except ValueError:
        return False


def compact_trades(trades: Sequence[Trade]) -> Sequence[Trade]:
    """``trades`` as columns (module rules: what a year's run keeps per slot): equal to ``trades``
    item by item, in order. Households' keys are interned (one string per household for the whole
    run); order ids that are 64 lowercase hex digits (the ledger's) are packed; an amount outside
    a signed 64-bit integer keeps the trades as they are."""
    if not trades:
        return ()
    index: dict[str, int] = {}
    ids: list[str] = []
    homes: list[str] = []
    buy, sell = array("q"), array("q")
    for t in trades:
        for order, home, column in ((t.buy_order, t.buyer, buy), (t.sell_order, t.seller, sell)):
            k = index.get(order)
            if k is None:
                k = index[order] = len(ids)
                ids.append(order)
                homes.append(sys.intern(home))
            column.append(k)
    try:
        energy = array("q", [t.energy_wh for t in trades])
        price = array("q", [t.price_micro_per_kwh for t in trades])
        amount = array("q", [t.amount_micro for t in trades])
    except OverflowError:
        return tuple(trades)
    return Trades(
        buy=buy,
        sell=sell,
        energy_wh=energy,
        price_micro_per_kwh=price,
        amount_micro=amount,
        order_ids=_HexIds(ids) if all(_is_hex_id(i) for i in ids) else tuple(ids),
        households=tuple(homes),
    )


def trade_rows(m: SlotMarket, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """The slot's trades as rows of the run's trade table (``trades.parquet``): the slot, the
    trade (:func:`gridnode.chain.trade_row`), the households' scenario names, the clearing height."""
    return [
        {
            "slot": m.slot,
            **trade_row(t),
            "buyer_name": names.get(t.buyer, ""),
            "seller_name": names.get(t.seller, ""),
            "height": m.height,
        }
        for t in m.trades
    ]


def slot_record(
    m: SlotMarket,
    *,
    start_s: int,
    orders_submitted: int,
    pv_wh: int,
    load_wh: int,
    net_wh: int,
    forecast_abs_error_wh: int,
    battery_charged_wh: int,
    battery_discharged_wh: int,
) -> SlotRecord:
    """A slot's record: the chain's figures and the engine's own measurements."""
    return SlotRecord(
        slot=m.slot,
        start_s=start_s,
        clearing_price_micro_per_kwh=m.clearing_price_micro_per_kwh,
        volume_wh=sum(t.energy_wh for t in m.trades),
        trades=len(m.trades),
        orders=m.orders,
        orders_submitted=orders_submitted,
        pv_wh=pv_wh,
        load_wh=load_wh,
        net_wh=net_wh,
        grid_import_wh=m.grid_import_wh,
        grid_export_wh=m.grid_export_wh,
        imbalance_wh=m.imbalance_wh,
        imbalance_cost_micro=m.imbalance_cost_micro,
        forecast_abs_error_wh=forecast_abs_error_wh,
        commit_height=m.height,
        battery_charged_wh=battery_charged_wh,
        battery_discharged_wh=battery_discharged_wh,
    )


def household_kpi(
    household: str,
    spec: HouseholdSpec,
    m: HouseholdMarket | None,
    *,
    pv_wh: int,
    load_wh: int,
    battery_charged_wh: int,
    battery_discharged_wh: int,
    battery_loss_wh: int,
    battery_soc_start_wh: int,
    battery_soc_end_wh: int,
) -> HouseholdKPI:
    """A household's KPIs: its measured slots' settlements and the engine's own measurements."""
    m = m or HouseholdMarket()
    t = m.totals
    return HouseholdKPI(
        household=household,
        name=spec.name,
        pv_kwp=spec.pv_kwp,
        battery_kwh=spec.battery_kwh,
        bought_p2p_wh=t.bought_p2p_wh,
        sold_p2p_wh=t.sold_p2p_wh,
        grid_import_wh=t.grid_import_wh,
        grid_export_wh=t.grid_export_wh,
        pv_wh=pv_wh,
        load_wh=load_wh,
        bill_micro=t.bill_micro,
        grid_only_bill_micro=t.grid_only_bill_micro,
        imbalance_wh=m.imbalance_wh,
        imbalance_cost_micro=m.imbalance_cost_micro,
        over_contracted_wh=m.over_contracted_wh,
        over_contract_cost_micro=m.over_contract_cost_micro,
        weekly_savings_micro=m.weekly_savings_micro,
        home=spec.home,
        battery_kw=spec.battery_kw,
        battery_charged_wh=battery_charged_wh,
        battery_discharged_wh=battery_discharged_wh,
        battery_loss_wh=battery_loss_wh,
        battery_soc_start_wh=battery_soc_start_wh,
        battery_soc_end_wh=battery_soc_end_wh,
    )
