"""The household agent: what one household does at every slot boundary, as a pure object.

One copy of the household's logic for every driver: the daemon's household driver
(:mod:`gridnode.household_driver`, one agent, its own meter, libp2p) and the in-process simulation
engine (:mod:`sims.inproc`, one agent per household, a batched forecast). No I/O, no clock: time
comes in as ``now_s`` (unix seconds of the community clock), meter data, committed trades and
forecasts as arguments; what the household wants done comes out as frozen values that the driver
signs (:func:`gridnode.core.ledger.sign_reading` / ``sign_order``) and submits.

Rules of this module:

* **The boundary protocol**, sans-IO in two steps. ``needs = agent.needs(now_s)`` says which
  delivered slots it needs the meter's natural net (PV − load, Wh) and the committed contract for
  (:attr:`Needs.read`), and which open slots it will quote (:attr:`Needs.quote`, the slots to
  forecast). The driver gathers them and calls :meth:`HouseholdAgent.on_slot_boundary`, which
  returns :class:`Actions`: the readings to sign, then the quotes. Readings are taken first, so
  the quotes see the state of charge after the delivered slots' dispatch.
* **Readings: exactly one per delivered slot.** A slot is delivered once ``now_s`` reaches its end.
  Every delivered slot from ``first_slot`` (to ``last_slot``, if set) is read once, in ascending
  order: its battery (if any) is dispatched once against the slot's contract
  (:func:`gridnode.household.battery.dispatch`; the contract is Wh sold − bought in the slot's
  committed trades, 0 when absent), and the :class:`Reading`'s ``net_wh`` is the *metered* net
  after dispatch. A slot the meter has no data for (``None``) is skipped for good. A reading the
  driver could not deliver is handed back with :meth:`~HouseholdAgent.readings_lost` and comes out
  again, unchanged, at the next boundary (before the new ones): the battery never moves twice for
  one slot and a slot never gets two different readings.
* **Quotes: one per quoted slot, re-quoting replaces.** At every boundary the agent quotes the
  first ``quoted_slots`` slots whose gate is still open (within ``first_slot``..``last_slot``;
  ``0``: no bidding), each from its forecast (:class:`~gridnode.household.forecast.SlotForecast`)
  with the bidding policy: ``forecast`` and ``perfect-foresight`` use
  :func:`forecasting.policy.quote_slot` (the reservation-price curve of the forecast distribution)
  with the current state of charge and the slot's expected clearing price;
  ``naive-fixed-price`` uses :func:`forecasting.policy.median_only_order`. A later quote for a
  slot is meant to replace the earlier order (the ledger keeps the highest nonce). Orders come out
  with nonce 0 and the policy's order id; the driver sets the household's next nonce and signs.
  Every :class:`Quote` keeps the forecast, the expected price and the model that produced it.
* **Calibration**: every reading of a slot it quoted from a forecast goes into the agent's
  :class:`~forecasting.policy.BandCalibration`, whose factors widen the bands of its next quotes
  (the side each curve fears) when its forecasts have been missing their P10–P90 more often than
  they should (the policy's rules; perfect foresight's never miss, so never widen).
* **Expected clearing price** (:func:`expected_clearing_price`): the median of the ledger's
  clearing prices at the same time of day on the last :data:`PRICE_DAYS` days, else of the last
  :data:`PRICE_SLOTS` slots' prices, else none (the policy then assumes the midpoint of feed-in
  and retail). The drivers pass the ledger's clearing prices as they hold them (the daemon its
  node's state, the in-process engine the highest honest validator's); slots without a price (no
  book, or a book that did not cross) are left out.
* **Battery**: the agent owns the state of charge (half full when it starts, unless given);
  :attr:`~HouseholdAgent.battery_state` is what the bidding policy sees.

Known limits: the state of charge is not persisted (a restarted daemon starts half full again);
the forecast is of the natural net, which is what the battery-aware policy expects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from forecasting.policy import (
    BandCalibration,
    BatteryState,
    PolicyConfig,
    SlotQuantiles,
    median_only_order,
    quote_slot,
)
from gridnode.core.ledger import Genesis
from gridnode.household.battery import Battery, Dispatch, dispatch
from gridnode.household.forecast import HISTORY_DAYS, SlotForecast
from market.errors import UsageError
from market.orders import Order
from market.slots import SlotClock

__all__ = [
    "BOUNDARY_DELAY_MS",
    "HISTORY_DAYS",
    "PRICE_DAYS",
    "PRICE_SLOTS",
    "QUOTED_SLOTS",
    "Actions",
    "AgentConfig",
    "Bidding",
    "HouseholdAgent",
    "Needs",
    "Quote",
    "Reading",
    "expected_clearing_price",
]

#: open slots a household quotes at every slot boundary, the earliest first; the scenario's
#: ``[bidding] horizon_slots`` default (the real-daemon engine runs only this)
QUOTED_SLOTS: Final = 1
#: the expected clearing price: same time of day on this many past days ...
PRICE_DAYS: Final = 7
#: ... or, when none of them cleared at a price, the last this many slots
PRICE_SLOTS: Final = 8
#: drivers call the agent this long after each slot boundary (the community clock's ms)
BOUNDARY_DELAY_MS: Final = 50


class Bidding(StrEnum):
    """Where a household's quantities and prices come from (``bidding.policy``)."""

    FORECAST = "forecast"  # forecast quantiles -> order curve (quote_slot)
    NAIVE_FIXED_PRICE = "naive-fixed-price"  # the P50 in one step at the midpoint price
    PERFECT_FORESIGHT = "perfect-foresight"  # quote_slot on the actual net (simulations)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One household's fixed settings."""

    household: str  # its public key hex (the orders' household)
    clock: SlotClock
    policy: PolicyConfig  # the community's prices and the policy's price positions
    bidding: Bidding = Bidding.FORECAST
    battery: Battery | None = None
    first_slot: int = 0  # the first slot it reads (e.g. the slot the daemon started in)
    last_slot: int | None = None  # the last slot it reads and quotes (None: no end)
    quoted_slots: int = QUOTED_SLOTS  # 0: it only reads its meter

    @classmethod
    def of_member(
        cls,
        genesis: Genesis,
        household: str,
        *,
        bidding: Bidding,
        battery: Battery | None,
        first_slot: int,
        last_slot: int | None = None,
        quoted_slots: int = QUOTED_SLOTS,
    ) -> AgentConfig:
        """A member's settings with its community's slot clock and prices (``genesis``)."""
        policy = PolicyConfig(
            feed_in_micro_per_kwh=genesis.feed_in_micro_per_kwh,
            retail_micro_per_kwh=genesis.retail_micro_per_kwh,
            grid_fee_micro_per_kwh=genesis.grid_fee_micro_per_kwh,
        )
        return cls(
            household, genesis.clock, policy, bidding, battery, first_slot, last_slot, quoted_slots
        )

    def __post_init__(self) -> None:
        if self.quoted_slots < 0:
            raise UsageError(f"quoted_slots must be >= 0, got {self.quoted_slots}")
        if self.last_slot is not None and self.last_slot < self.first_slot:
            raise UsageError(f"last_slot {self.last_slot} is before first_slot {self.first_slot}")


@dataclass(frozen=True, slots=True)
class Needs:
    """What the agent needs from its driver at a boundary (ascending slots)."""

    read: tuple[int, ...]  # delivered slots: the meter's natural net and the committed contract
    quote: tuple[int, ...]  # open slots to forecast


@dataclass(frozen=True, slots=True)
class Reading:
    """A delivered slot's meter reading, ready to sign: ``net_wh`` is after the battery."""

    slot: int
    net_wh: int  # metered: natural − charged + discharged
    natural_net_wh: int  # PV − load as the meter measured it without the battery
    contract_wh: int  # the committed position it was dispatched against (Wh sold − bought)
    dispatch: Dispatch | None  # what the battery did (None: no battery)


@dataclass(frozen=True, slots=True)
class Quote:
    """An open slot's forecast and the order the policy made of it (``None``: nothing to trade)."""

    slot: int
    forecast: SlotQuantiles
    model: str  # the model version that produced the forecast
    order: Order | None  # nonce 0: the driver sets the household's next nonce and signs
    expected_price_micro_per_kwh: int | None = None  # what the policy expected it to clear at


@dataclass(frozen=True, slots=True)
class Actions:
    """What to send after a boundary: readings first, then quotes."""

    readings: tuple[Reading, ...]
    quotes: tuple[Quote, ...]


class HouseholdAgent:
    """One household's meter readings, battery and quotes (see the module rules)."""

    def __init__(self, config: AgentConfig, *, soc_wh: int | None = None) -> None:
        battery = config.battery
        if soc_wh is None:
            soc_wh = battery.capacity_wh // 2 if battery is not None else 0  # starts half full
        capacity = battery.capacity_wh if battery is not None else 0
        if not 0 <= soc_wh <= capacity:
            raise UsageError(f"soc_wh must lie in [0, {capacity}], got {soc_wh}")
        self.config = config
        self._naive = config.bidding is Bidding.NAIVE_FIXED_PRICE
        self.soc_wh = soc_wh
        self._next_read = config.first_slot  # every slot before it was read
        self._lost: dict[int, Reading] = {}  # readings handed back by the driver, to send again
        self._quoted: dict[int, SlotQuantiles] = {}  # the last forecast quoted for each slot
        self.calibration = BandCalibration(slot_seconds=config.clock.slot_seconds)
        self._needs: tuple[int, int, Needs] | None = None  # (now_s, _next_read, needs): the last

    # ------------------------------------------------------------------ the boundary
    def needs(self, now_s: int) -> Needs:
        """The delivered slots to read and the open slots to quote at ``now_s``."""
        last = self._needs
        if last is not None and last[0] == now_s and last[1] == self._next_read:
            return last[2]  # the driver asked just before on_slot_boundary asks again
        c = self.config
        delivered = c.clock.slot_at(now_s)  # slots before it are delivered
        first_open = c.clock.first_open_slot(now_s)
        quote_end = first_open + c.quoted_slots
        if c.last_slot is not None:
            delivered = min(delivered, c.last_slot + 1)
            quote_end = min(quote_end, c.last_slot + 1)
        needs = _needs(self._next_read, delivered, max(first_open, c.first_slot), quote_end)
        self._needs = (now_s, self._next_read, needs)
        return needs

    def on_slot_boundary(
        self,
        now_s: int,
        *,
        natural_wh: Mapping[int, int | None],
        contract_wh: Mapping[int, int],
        forecast: SlotForecast | None,
        clearing_prices: Mapping[int, int | None] | None = None,
        expected_prices: Mapping[int, int | None] | None = None,
    ) -> Actions:
        """Read every slot of ``needs(now_s).read`` (``natural_wh`` must hold each, ``None`` when the
        meter has no data; ``contract_wh`` the committed position, absent = 0), then quote from
        ``forecast`` (``None``: no forecast, no quotes) at the prices ``clearing_prices`` (the
        ledger's, by slot) lead it to expect. See the module rules. ``expected_prices``: what
        :func:`expected_clearing_price` gives for the quoted slots from these ``clearing_prices``
        on this clock, if the driver already computed it (it is the same for every household: a
        driver of many agents computes it once a slot); slots it lacks are computed here."""
        needs = self.needs(now_s)
        readings = [self._lost.pop(s) for s in sorted(self._lost)] if self._lost else []
        for slot in needs.read:
            if slot not in natural_wh:
                raise UsageError(f"slot {slot} is delivered: its natural net is needed (or None)")
            reading = self._read(slot, natural_wh[slot], contract_wh.get(slot, 0))
            if reading is not None:
                readings.append(reading)
        if needs.read:
            self._next_read = needs.read[-1] + 1
        quotes = (
            ()
            if forecast is None
            else self._quotes(needs.quote, forecast, clearing_prices or {}, expected_prices or {})
        )
        return Actions(tuple(readings), quotes)

    def readings_lost(self, readings: Iterable[Reading]) -> None:
        """The driver could not deliver ``readings``: they come out again at the next boundary."""
        for r in readings:
            self._lost[r.slot] = r

    # ------------------------------------------------------------------ readings
    def _read(self, slot: int, natural_net_wh: int | None, contract: int) -> Reading | None:
        quoted = self._quoted.pop(slot, None)
        if natural_net_wh is None:
            return None
        if quoted is not None:
            self.calibration.record(quoted, natural_net_wh)
        battery = self.config.battery
        if battery is None:
            return Reading(slot, natural_net_wh, natural_net_wh, contract, None)
        d = dispatch(
            battery,
            soc_wh=self.soc_wh,
            natural_net_wh=natural_net_wh,
            contract_wh=contract,
            slot_seconds=self.config.clock.slot_seconds,
        )
        self.soc_wh = d.soc_wh
        return Reading(slot, d.metered_net_wh, natural_net_wh, contract, d)

    # ------------------------------------------------------------------ quotes
    @property
    def battery_state(self) -> BatteryState | None:
        """The battery now, as the bidding policy sees it (``None``: no battery)."""
        b = self.config.battery
        if b is None:
            return None
        return BatteryState(self.soc_wh, b.capacity_wh, b.power_w, b.reserve_wh)

    def _quotes(
        self,
        slots: tuple[int, ...],
        forecast: SlotForecast,
        clearing_prices: Mapping[int, int | None],
        expected_prices: Mapping[int, int | None],
    ) -> tuple[Quote, ...]:
        c = self.config
        battery = self.battery_state
        out = []
        for q in forecast.quantiles:
            if q.slot not in slots:
                continue
            order: Order | None
            expected = None
            if self._naive:
                order = median_only_order(q, household=c.household, config=c.policy)
            else:
                if q.slot in expected_prices:
                    expected = expected_prices[q.slot]
                else:
                    expected = expected_clearing_price(q.slot, clearing_prices, c.clock)
                self._quoted[q.slot] = q
                order = quote_slot(
                    q,
                    household=c.household,
                    config=c.policy,
                    slot_seconds=c.clock.slot_seconds,
                    battery=battery,
                    expected_price_micro_per_kwh=expected,
                    widen=self.calibration.scales,
                )
            out.append(Quote(q.slot, q, forecast.model, order, expected))
        return tuple(out)


@functools.lru_cache(maxsize=64)
def _needs(next_read: int, delivered: int, quote_from: int, quote_end: int) -> Needs:
    """``Needs`` of the slots ``next_read ..< delivered`` and ``quote_from ..< quote_end``, one
    shared value per distinct range (frozen: agents of one community at one boundary mostly ask
    for the same, and a driver of a thousand agents built a thousand equal values a slot)."""
    return Needs(tuple(range(next_read, delivered)), tuple(range(quote_from, quote_end)))


def expected_clearing_price(
    slot: int, clearing_prices: Mapping[int, int | None], clock: SlotClock
) -> int | None:
    """The price ``slot`` is expected to clear at, from the ledger's clearing prices by slot (the
    module rules): the median (the lower middle one of an even count) of the same time of day on the
    last :data:`PRICE_DAYS` days, else of the last :data:`PRICE_SLOTS` slots before ``slot``."""
    per_day = 86_400 // clock.slot_seconds
    same_time = [clearing_prices.get(slot - d * per_day) for d in range(1, PRICE_DAYS + 1)]
    prices = sorted(p for p in same_time if p is not None)
    if not prices:
        recent = [clearing_prices.get(slot - k) for k in range(1, PRICE_SLOTS + 1)]
        prices = sorted(p for p in recent if p is not None)
    return prices[(len(prices) - 1) // 2] if prices else None
