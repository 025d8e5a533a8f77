"""A household battery, dispatched one delivery slot at a time to make the meter match the contract.

Pure: integers in, integers out; no clock, no I/O, no randomness. Rules of this module:

* **Units.** Energy in integer Wh, power in integer W, efficiencies in permille. ``capacity_wh`` is
  the usable storage, ``power_w`` the AC-side limit for charging and for discharging, ``reserve_wh``
  the state of charge (SoC) the battery never discharges below (it may still charge from below it).
  Charge and discharge efficiencies default to 950 ‰ each, so a round trip returns about 90 %
  (0.95 × 0.95 = 0.9025) of what went in.
* **Signs.** A household's *natural* net for a slot is PV − load (``+`` surplus). Its *contract*
  is its committed position for the slot, Wh sold − Wh bought (``0`` with no trades). The *metered*
  net is what its meter reads after the battery acted: ``metered = natural − charged + discharged``,
  exactly (``charged``/``discharged`` are AC-side energies at the household's connection).
* **Dispatch** (:func:`dispatch`), one slot: the gap is ``natural − contract``. A positive gap
  (surplus beyond what was sold, or less bought than needed) is charged; a negative gap (a shortfall
  against the contract) is discharged; nothing else. The energy is limited by one slot of power
  (``power_w × slot_seconds // 3600`` Wh, AC side), by the room up to ``capacity_wh`` when
  charging, and by the energy above ``reserve_wh`` when discharging. The battery therefore never
  makes ``|metered − contract|`` larger than ``|natural − contract|``, never overshoots the
  contract, and never changes sign of the gap.
* **Rounding** is always against the battery (losses round up), so stored energy is never created:
  charging ``charged`` Wh stores ``charged × η_c // 1000``; discharging ``discharged`` Wh draws
  ``ceil(discharged × 1000 / η_d)`` from the cells. ``charged`` is the smallest AC energy that stores
  the chosen amount (a 1 Wh surplus at 950 ‰ stores nothing and is not charged); ``discharged`` is the
  largest AC energy the cells above the reserve can give. Hence a battery with no room (or no
  capacity, or no power) is the identity: ``metered = natural``.
* ``loss_wh = (charged − stored) + (drawn − discharged) ≥ 0``, and ``soc_after = soc + stored − drawn``,
  always within ``[0, capacity_wh]``, and ``≥ reserve_wh`` whenever it started there.
* **The contract** of a household for a slot (:func:`contract_wh`) is Σ energy of the slot's trades
  it sells in minus Σ of those it buys in; the household's drivers read the trades from a ledger
  state (``LedgerState.trades[slot]``, present from clearing until settlement) and use 0 when the
  slot has not been cleared there. The household agent (:mod:`gridnode.household.agent`) owns the
  state of charge and calls :func:`dispatch` once per delivered slot.

Known limits: one efficiency per direction (no SoC- or power-dependent losses), no self-discharge,
no ageing; a battery either charges or discharges within a slot, by the slot's energy only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from market.clearing import Trade
from market.errors import UsageError

__all__ = ["Battery", "Dispatch", "battery_from_sizes", "contract_wh", "contracts_wh", "dispatch"]

DEFAULT_EFFICIENCY_PERMILLE = 950


@dataclass(frozen=True, slots=True)
class Battery:
    """A battery's fixed parameters (see the module rules)."""

    capacity_wh: int
    power_w: int
    charge_permille: int = DEFAULT_EFFICIENCY_PERMILLE
    discharge_permille: int = DEFAULT_EFFICIENCY_PERMILLE
    reserve_wh: int = 0

    def __post_init__(self) -> None:
        if self.capacity_wh < 0 or self.power_w < 0:
            raise UsageError(
                f"battery capacity_wh and power_w must be >= 0, got {self.capacity_wh}, "
                f"{self.power_w}"
            )
        if not 0 <= self.reserve_wh <= self.capacity_wh:
            raise UsageError(
                f"battery reserve_wh must lie in [0, {self.capacity_wh}], got {self.reserve_wh}"
            )
        for name, p in (("charge", self.charge_permille), ("discharge", self.discharge_permille)):
            if not 1 <= p <= 1000:
                raise UsageError(f"battery {name}_permille must lie in [1, 1000], got {p}")

    def slot_limit_wh(self, slot_seconds: int) -> int:
        """AC energy it can move in one slot at full power (rounded down)."""
        return self.power_w * slot_seconds // 3600

    def stored_wh(self, charged_wh: int) -> int:
        """Energy the cells gain from ``charged_wh`` of AC charging (losses round up)."""
        return charged_wh * self.charge_permille // 1000

    def drawn_wh(self, discharged_wh: int) -> int:
        """Energy the cells give for ``discharged_wh`` of AC discharging (losses round up)."""
        return -(-discharged_wh * 1000 // self.discharge_permille)


def battery_from_sizes(capacity_kwh: float, power_kw: float) -> Battery | None:
    """A household's battery from its kWh / kW sizes (rounded to Wh / W, the module's default
    efficiencies, no reserve), or ``None`` when it has no capacity."""
    capacity_wh = round(capacity_kwh * 1000)
    if capacity_wh <= 0:
        return None
    return Battery(capacity_wh=capacity_wh, power_w=round(power_kw * 1000))


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What the battery did in one slot (all Wh)."""

    metered_net_wh: int  # natural − charged + discharged
    charged_wh: int  # AC energy into the battery (>= 0)
    discharged_wh: int  # AC energy out of the battery (>= 0)
    soc_wh: int  # state of charge after the slot
    loss_wh: int  # conversion losses this slot (>= 0)


def dispatch(
    battery: Battery,
    *,
    soc_wh: int,
    natural_net_wh: int,
    contract_wh: int,
    slot_seconds: int,
) -> Dispatch:
    """Dispatch ``battery`` (holding ``soc_wh``) over one slot towards ``contract_wh`` (module rules)."""
    if not 0 <= soc_wh <= battery.capacity_wh:
        raise UsageError(f"battery soc_wh must lie in [0, {battery.capacity_wh}], got {soc_wh}")
    if slot_seconds <= 0:
        raise UsageError(f"slot_seconds must be > 0, got {slot_seconds}")
    limit = battery.slot_limit_wh(slot_seconds)
    gap = natural_net_wh - contract_wh
    charged = discharged = stored = drawn = 0
    if gap > 0:
        eta = battery.charge_permille
        stored = min(battery.capacity_wh - soc_wh, battery.stored_wh(min(gap, limit)))
        charged = -(-stored * 1000 // eta)  # the least AC energy that stores `stored`
    elif gap < 0:
        eta = battery.discharge_permille
        above_reserve = max(0, soc_wh - battery.reserve_wh)
        discharged = min(-gap, limit, above_reserve * eta // 1000)
        drawn = battery.drawn_wh(discharged)
    return Dispatch(
        metered_net_wh=natural_net_wh - charged + discharged,
        charged_wh=charged,
        discharged_wh=discharged,
        soc_wh=soc_wh + stored - drawn,
        loss_wh=(charged - stored) + (drawn - discharged),
    )


def contracts_wh(trades: Iterable[Trade]) -> dict[str, int]:
    """Every household's committed position in ``trades`` (one slot's): Wh sold − Wh bought."""
    out: dict[str, int] = {}
    for t in trades:
        out[t.seller] = out.get(t.seller, 0) + t.energy_wh
        out[t.buyer] = out.get(t.buyer, 0) - t.energy_wh
    return out


def contract_wh(trades: Iterable[Trade], household: str) -> int:
    """``household``'s committed position in ``trades`` (one slot's): Wh sold − Wh bought."""
    return contracts_wh(trades).get(household, 0)
