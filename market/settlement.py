"""Settlement of one delivered slot: contracts vs meters, imbalances, the grid, and who pays whom.

Rules of this module:

* **Signs.** A household's measured net energy for the slot is ``+`` when it exported (fed energy
  in) and ``-`` when it imported. Its contracted net is ``sold_p2p_wh - bought_p2p_wh``. Its
  imbalance is ``measured - contracted``: negative means it delivered less / used more than it
  contracted (it is *short*), positive means *long*.
* **Trades** are paid as cleared: the buyer pays each trade's ``amount_micro`` to the seller, the
  same integer both ways. With a grid fee, the buyer also pays ``amount_micro(energy, fee)`` per trade
  to the grid. A household matched with itself (a wash trade) counts the energy as bought and sold
  and moves no trade money (the fee is still due).
* **Imbalances without netting** (:attr:`Netting.NONE`): a short household buys its shortfall from the
  grid at retail; a long household sells its excess to the grid at feed-in.
* **Community netting** (:attr:`Netting.COMMUNITY`): first, ``N = min(Σ short, Σ long)`` Wh of the
  community's shortfalls are covered by its excesses at the netting price (midpoint of retail and
  feed-in, rounded down). Short and long households get their part of ``N`` pro rata to their
  imbalance; the money ``amount_micro(N, netting price)`` is paid by the short ones into the
  community pool and paid out of it to the long ones, each split pro rata to netted energy. All
  splits use :func:`market.units.largest_remainder` over households in id order, so the pool nets to
  exactly zero. Whatever is left is settled with the grid as above.
* **Bills.** A household's bill is what it pays minus what it receives (negative: it earned money).
  Its grid-only counterfactual bill is what its measured net would have cost with no P2P market:
  ``amount_micro(import, retail)`` or ``-amount_micro(export, feed-in)``. Savings are the difference,
  exact to the µ¤.
* **Conservation** (checked by :func:`check_settlement` on every result): Σ energy bought = Σ sold;
  every transfer moves the same integer out of one account and into another, so Σ over all parties
  (households, the grid :data:`GRID`, the pool :data:`POOL`) of net payments is 0 and the pool ends at 0;
  every bill equals the sum of its own transfers.
* Every household in a trade must have a reading; a missing reading is the ledger's business (it
  applies its documented rule before calling :func:`settle`).
* **Imbalance energy and cost** (a KPI, not money that moves): a household with a P2P position in the
  slot (bought or sold > 0) has imbalance energy ``|imbalance_wh|``; one that did not trade is a plain
  grid customer and has 0. Its imbalance cost is what settling the imbalance actually cost it
  (``netting_micro + grid_import_micro - grid_export_micro``) minus what the same energy would have
  cost at the slot's market price ``p``: ``amount_micro(-imbalance_wh, p)`` when short,
  ``-amount_micro(imbalance_wh, p)`` when long (:func:`imbalance_cost_micro`). Positive: the deviation
  cost money compared with trading it. ``p`` is the clearing price under pay-as-clear, else the
  volume-weighted mean trade price ``Σ energy x price / Σ energy`` rounded half up to a whole µ¤/kWh
  (the :mod:`market.units` rule; under pay-as-clear the two are equal), and there is none when
  nothing traded (:func:`imbalance_reference_price_micro_per_kwh`). Both amounts use
  :func:`market.units.amount_micro`, so the cost is an exact integer and, for a trader,
  ``bill = paid - received + fee + (market value of the imbalance) + imbalance cost`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from market.clearing import Trade
from market.errors import GridnodeError, InvalidInput, OrderReason, UsageError, WireReason
from market.units import amount_micro, largest_remainder

__all__ = [
    "GRID",
    "POOL",
    "HouseholdBill",
    "InvariantViolation",
    "Netting",
    "Settlement",
    "Tariff",
    "Transfer",
    "TransferKind",
    "check_settlement",
    "grid_only_bill_micro",
    "imbalance_cost_micro",
    "imbalance_energy_wh",
    "imbalance_reference_price_micro_per_kwh",
    "settle",
]

#: The grid's account in transfers.
GRID: Final = "grid"
#: The community netting pool's account (always ends a slot at exactly zero).
POOL: Final = "community-pool"


class InvariantViolation(GridnodeError):
    """A conservation rule failed: a bug in our code, never bad input."""


class Netting(Enum):
    """How imbalances are settled."""

    NONE = "none"
    COMMUNITY = "community"


class TransferKind(Enum):
    TRADE = "trade"
    GRID_FEE = "grid-fee"
    GRID_IMPORT = "grid-import"
    GRID_EXPORT = "grid-export"
    NETTING = "netting"


_TRADE: Final = TransferKind.TRADE
_GRID_FEE: Final = TransferKind.GRID_FEE
_GRID_IMPORT: Final = TransferKind.GRID_IMPORT
_GRID_EXPORT: Final = TransferKind.GRID_EXPORT
_NETTING: Final = TransferKind.NETTING
#: a household without a reading (:func:`settle` looks each one up once)
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class Tariff:
    """The community's prices, µ¤ per kWh."""

    retail_micro_per_kwh: int
    feed_in_micro_per_kwh: int
    grid_fee_micro_per_kwh: int = 0

    def __post_init__(self) -> None:
        for name in ("retail_micro_per_kwh", "feed_in_micro_per_kwh", "grid_fee_micro_per_kwh"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"tariff {name} must be an integer >= 0, got {value!r}")
        if self.feed_in_micro_per_kwh > self.retail_micro_per_kwh:
            raise UsageError(
                f"tariff feed-in ({self.feed_in_micro_per_kwh}) must not exceed retail "
                f"({self.retail_micro_per_kwh})"
            )

    @property
    def netting_price_micro_per_kwh(self) -> int:
        return (self.retail_micro_per_kwh + self.feed_in_micro_per_kwh) // 2


@dataclass(frozen=True, slots=True)
class Transfer:
    """``amount_micro`` moves from ``payer`` to ``payee``."""

    payer: str
    payee: str
    amount_micro: int
    kind: TransferKind


@dataclass(frozen=True, slots=True)
class HouseholdBill:
    """One household's slot, in energy and money. ``bill_micro > 0`` means it pays."""

    household: str
    measured_net_wh: int
    bought_p2p_wh: int
    sold_p2p_wh: int
    imbalance_wh: int
    netted_wh: int  # + covered by the community (short), - supplied to it (long)
    grid_import_wh: int
    grid_export_wh: int
    paid_p2p_micro: int
    received_p2p_micro: int
    grid_fee_micro: int
    netting_micro: int  # + paid into the pool, - received from it
    grid_import_micro: int
    grid_export_micro: int
    bill_micro: int
    grid_only_bill_micro: int

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.bill_micro


@dataclass(frozen=True, slots=True)
class Settlement:
    """A slot's settlement: bills in household-id order and every transfer in canonical order."""

    slot: int
    bills: tuple[HouseholdBill, ...]
    transfers: tuple[Transfer, ...]

    def bill(self, household: str) -> HouseholdBill:
        for b in self.bills:
            if b.household == household:
                return b
        raise KeyError(household)

    @property
    def grid_net_micro(self) -> int:
        """What the grid received net (negative: it paid out)."""
        return sum(
            t.amount_micro if t.payee == GRID else -t.amount_micro
            for t in self.transfers
            if GRID in (t.payee, t.payer)
        )


def grid_only_bill_micro(measured_net_wh: int, tariff: Tariff) -> int:
    """What a household's measured net would cost with no P2P market."""
    if measured_net_wh < 0:
        return amount_micro(-measured_net_wh, tariff.retail_micro_per_kwh)
    return -amount_micro(measured_net_wh, tariff.feed_in_micro_per_kwh)


def imbalance_reference_price_micro_per_kwh(
    trades: Iterable[Trade], clearing_price_micro_per_kwh: int | None
) -> int | None:
    """The slot's market price that imbalances are valued at (see the module rules): the clearing
    price if there is one, else the volume-weighted mean trade price rounded half up; ``None`` when
    nothing traded."""
    if clearing_price_micro_per_kwh is not None:
        return clearing_price_micro_per_kwh
    energy = value = 0
    for t in trades:
        energy += t.energy_wh
        value += t.energy_wh * t.price_micro_per_kwh
    if energy == 0:
        return None
    return (2 * value + energy) // (2 * energy)


def imbalance_energy_wh(bill: HouseholdBill) -> int:
    """``|imbalance_wh|`` for a household with a P2P position in the slot, else 0."""
    if bill.bought_p2p_wh == 0 and bill.sold_p2p_wh == 0:
        return 0
    return abs(bill.imbalance_wh)


def imbalance_cost_micro(bill: HouseholdBill, reference_price_micro_per_kwh: int | None) -> int:
    """What the household's imbalance cost it beyond trading the same energy at the reference price
    (µ¤, signed; see the module rules). 0 for a household without a P2P position or imbalance."""
    if imbalance_energy_wh(bill) == 0:
        return 0
    if reference_price_micro_per_kwh is None:
        raise UsageError(
            f"slot imbalance of {bill.household}: a household that traded needs the slot's "
            "reference price, got None"
        )
    actual = bill.netting_micro + bill.grid_import_micro - bill.grid_export_micro
    if bill.imbalance_wh < 0:
        at_market = amount_micro(-bill.imbalance_wh, reference_price_micro_per_kwh)
    else:
        at_market = -amount_micro(bill.imbalance_wh, reference_price_micro_per_kwh)
    return actual - at_market


def settle(
    slot: int,
    trades: Iterable[Trade],
    measured_net_wh: Mapping[str, int],
    tariff: Tariff,
    *,
    netting: Netting = Netting.NONE,
) -> Settlement:
    """Settle one slot (see the module rules)."""
    trades = tuple(trades)
    bought: dict[str, int] = {}
    sold: dict[str, int] = {}
    paid: dict[str, int] = {}
    received: dict[str, int] = {}
    fees: dict[str, int] = {}
    transfers: list[Transfer] = []
    add = transfers.append
    fee_price = tariff.grid_fee_micro_per_kwh
    for t in trades:
        buyer, seller, energy = t.buyer, t.seller, t.energy_wh
        bought[buyer] = bought.get(buyer, 0) + energy
        sold[seller] = sold.get(seller, 0) + energy
        if buyer != seller:  # a wash trade moves no money (see the module rules)
            amount = t.amount_micro
            add(Transfer(buyer, seller, amount, _TRADE))
            paid[buyer] = paid.get(buyer, 0) + amount
            received[seller] = received.get(seller, 0) + amount
        fee = amount_micro(energy, fee_price)
        if fee:
            add(Transfer(buyer, GRID, fee, _GRID_FEE))
            fees[buyer] = fees.get(buyer, 0) + fee

    households = sorted(set(measured_net_wh) | set(bought) | set(sold))
    for h in households:
        value = measured_net_wh.get(h, _MISSING)
        if type(value) is int:  # the plain case at once; anything else is checked below
            continue
        if value is _MISSING:
            raise InvalidInput(
                reason=OrderReason.MISSING_READING,
                subject=f"slot {slot}",
                field=h,
                expected="a meter reading for every household that traded",
                found="none",
            )
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(
                reason=WireReason.BAD_TYPE,
                subject=f"slot {slot}",
                field=h,
                expected="int Wh",
                found=repr(value),
            )
    if GRID in households or POOL in households:
        raise InvalidInput(
            reason=OrderReason.RESERVED_NAME,
            subject=f"slot {slot}",
            expected="household ids other than 'grid'/'community-pool'",
        )

    imbalance = {h: measured_net_wh[h] - (sold.get(h, 0) - bought.get(h, 0)) for h in households}
    netted: dict[str, int] = {}
    netting_money: dict[str, int] = {}
    if netting is Netting.COMMUNITY:
        shorts = [h for h in households if imbalance[h] < 0]
        longs = [h for h in households if imbalance[h] > 0]
        volume = min(sum(-imbalance[h] for h in shorts), sum(imbalance[h] for h in longs))
        if volume:
            money = amount_micro(volume, tariff.netting_price_micro_per_kwh)
            short_e = largest_remainder(volume, [-imbalance[h] for h in shorts])
            long_e = largest_remainder(volume, [imbalance[h] for h in longs])
            for h, e, m in zip(shorts, short_e, largest_remainder(money, short_e), strict=True):
                netted[h] = e
                netting_money[h] = m
                if m:
                    add(Transfer(h, POOL, m, _NETTING))
            for h, e, m in zip(longs, long_e, largest_remainder(money, long_e), strict=True):
                netted[h] = -e
                netting_money[h] = -m
                if m:
                    add(Transfer(POOL, h, m, _NETTING))

    bills: list[HouseholdBill] = []
    retail, feed_in = tariff.retail_micro_per_kwh, tariff.feed_in_micro_per_kwh
    for h in households:
        e_net = netted.get(h, 0)
        residual = imbalance[h] + e_net  # what is left for the grid
        grid_import_wh = -residual if residual < 0 else 0
        grid_export_wh = residual if residual > 0 else 0
        import_micro = amount_micro(grid_import_wh, retail)
        export_micro = amount_micro(grid_export_wh, feed_in)
        if import_micro:
            add(Transfer(h, GRID, import_micro, _GRID_IMPORT))
        if export_micro:
            add(Transfer(GRID, h, export_micro, _GRID_EXPORT))
        h_paid, h_received, h_fees = paid.get(h, 0), received.get(h, 0), fees.get(h, 0)
        m_net = netting_money.get(h, 0)
        measured = measured_net_wh[h]
        bills.append(
            HouseholdBill(  # positional, in the fields' order (a third faster than keywords)
                h,
                measured,
                bought.get(h, 0),
                sold.get(h, 0),
                imbalance[h],
                e_net,
                grid_import_wh,
                grid_export_wh,
                h_paid,
                h_received,
                h_fees,
                m_net,
                import_micro,
                export_micro,
                h_paid - h_received + h_fees + m_net + import_micro - export_micro,
                grid_only_bill_micro(measured, tariff),
            )
        )
    result = Settlement(slot=slot, bills=tuple(bills), transfers=tuple(transfers))
    check_settlement(result, trades)
    return result


def check_settlement(settlement: Settlement, trades: Iterable[Trade]) -> None:
    """Assert the conservation rules; raise :class:`InvariantViolation` naming the broken one."""
    trades = list(trades)
    traded = sum(t.energy_wh for t in trades)  # each trade is bought and sold in the same amount
    if sum(b.bought_p2p_wh for b in settlement.bills) != traded:
        raise InvariantViolation(
            f"slot {settlement.slot}: household bought totals != traded {traded}"
        )
    if sum(b.sold_p2p_wh for b in settlement.bills) != traded:
        raise InvariantViolation(
            f"slot {settlement.slot}: household sold totals != traded {traded}"
        )
    balance: dict[str, int] = {}
    get = balance.get
    for t in settlement.transfers:
        amount, payer, payee = t.amount_micro, t.payer, t.payee
        if amount < 0 or payer == payee:
            raise InvariantViolation(f"slot {settlement.slot}: bad transfer {t}")
        balance[payer] = get(payer, 0) - amount
        balance[payee] = get(payee, 0) + amount
    if sum(balance.values()) != 0:
        raise InvariantViolation(
            f"slot {settlement.slot}: money not conserved: {sum(balance.values())}"
        )
    if balance.get(POOL, 0) != 0:
        raise InvariantViolation(f"slot {settlement.slot}: netting pool left {balance[POOL]}")
    for b in settlement.bills:
        if -get(b.household, 0) != b.bill_micro:
            raise InvariantViolation(
                f"slot {settlement.slot}: bill of {b.household} {b.bill_micro} != its transfers "
                f"{-balance.get(b.household, 0)}"
            )
        short = b.imbalance_wh + b.netted_wh
        if b.grid_import_wh - b.grid_export_wh != -short:
            raise InvariantViolation(
                f"slot {settlement.slot}: grid energy of {b.household} inconsistent"
            )
