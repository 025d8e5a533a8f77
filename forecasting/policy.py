"""The automatic bidding policy: forecast quantiles → order curves for the upcoming slots.

Rules of this module (all pure: same inputs, same orders, byte for byte):

* **Input per slot**: the household's net-surplus forecast for the slot as integer Wh quantiles
  ``(P10, P50, P90)`` (``+`` surplus, ``-`` shortfall), its battery (optional), the community's
  feed-in and retail prices, and how long until the slot's gate closure.
* **One side per slot**: the sign of P50 decides. The ledger refuses a household's buy and sell for
  the same slot, so the policy never emits both.
* **Selling** (P50 ≥ 0): the confident part ``max(P10, 0)`` is offered cheapest, the part up to P50
  at a middle price, the uncertain part up to P90 dearest (missing it costs a retail-priced
  imbalance, so it must earn more); the battery's dischargeable energy (above its reserve, within
  one slot of its power) is offered last, at the highest price. **Invariant: the offered energy
  never exceeds ``max(P90, 0)`` plus the available battery energy.**
* **Buying** (P50 < 0): the shortfall quantiles are ``d_q = -P_(1-q)``. The battery's available
  energy covers the shortfall first. The sure part (up to ``max(d10, 0)``) is bid highest, the part
  up to ``d50`` at a middle price, the part up to ``d90`` lowest; battery headroom (within one slot
  of its power) is bid for last at the lowest price, to store cheap energy. **Invariant: the bid
  energy never exceeds ``max(d90, 0)`` plus the battery's headroom.**
* **Prices** are ``feed_in + permille × (retail − feed_in) // 1000``, so always within
  ``[feed_in, retail]``. The permilles come from :class:`PolicyConfig`. **Re-quoting**: the closer
  the slot's gate closure (within ``requote_window_s``), the more every permille moves towards 500
  (by up to ``converge_permille``/1000 of the way), trading margin for the certainty of a fill
  while the forecast is also at its sharpest; call the policy again whenever the forecast updates.
* Steps with the same price are merged, zero-energy steps dropped; an order with no energy is not
  emitted. Order ids are ``sha256(household|slot|side|nonce)``; nonces are ``nonce, nonce+1, …`` in
  slot order.

Known limit: the battery's energy is offered in every planned slot at once; after fills the caller
re-plans with the new state of charge (a fill in one slot reduces what later slots can offer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from forecasting.models import QUANTILES, FittedForecaster, QuantileForecast
from forecasting.series import MeterHistory, energy_wh
from market.errors import UsageError
from market.orders import Order, Side, Step
from market.slots import SlotClock

__all__ = [
    "BatteryState",
    "PolicyConfig",
    "SlotQuantiles",
    "forecast_slots",
    "median_only_order",
    "order_id",
    "plan_orders",
    "quote_slot",
    "slot_quantiles",
]


@dataclass(frozen=True, slots=True)
class BatteryState:
    """A household battery now: stored energy, capacity, power limit and a reserve kept back."""

    energy_wh: int
    capacity_wh: int
    max_power_w: int
    reserve_wh: int = 0

    def __post_init__(self) -> None:
        if (
            not 0 <= self.reserve_wh <= self.capacity_wh
            or not 0 <= self.energy_wh <= self.capacity_wh
        ):
            raise UsageError(f"battery state out of range: {self}")
        if self.max_power_w < 0:
            raise UsageError(f"battery max_power_w must be >= 0, got {self.max_power_w}")

    def available_wh(self, slot_seconds: int) -> int:
        """Energy it can deliver in one slot (above the reserve, within its power)."""
        return max(
            0, min(self.energy_wh - self.reserve_wh, self.max_power_w * slot_seconds // 3600)
        )

    def headroom_wh(self, slot_seconds: int) -> int:
        """Energy it can absorb in one slot."""
        return max(
            0, min(self.capacity_wh - self.energy_wh, self.max_power_w * slot_seconds // 3600)
        )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Prices and the positions (‰ of the way from feed-in to retail) of each step."""

    feed_in_micro_per_kwh: int
    retail_micro_per_kwh: int
    sell_permille: tuple[int, int, int] = (200, 500, 800)  # confident, median, uncertain part
    buy_permille: tuple[int, int, int] = (800, 500, 200)  # sure, median, uncertain part
    battery_sell_permille: int = 900
    battery_buy_permille: int = 100
    requote_window_s: int = 3600
    converge_permille: int = 500

    def __post_init__(self) -> None:
        if not 0 <= self.feed_in_micro_per_kwh <= self.retail_micro_per_kwh:
            raise UsageError("need 0 <= feed-in <= retail")
        permilles = (
            *self.sell_permille,
            *self.buy_permille,
            self.battery_sell_permille,
            self.battery_buy_permille,
            self.converge_permille,
        )
        if not all(0 <= p <= 1000 for p in permilles):
            raise UsageError(f"permilles must lie in [0, 1000], got {permilles}")
        if self.requote_window_s < 0:
            raise UsageError("requote_window_s must be >= 0")

    def price(self, permille: int, *, lead_s: int) -> int:
        """Price at ``permille`` of the spread, moved towards the middle as gate closure nears."""
        window = self.requote_window_s
        urgency = 0 if window == 0 else max(0, window - max(lead_s, 0)) * 1000 // window  # ‰
        moved = permille + (500 - permille) * self.converge_permille * urgency // 1_000_000
        spread = self.retail_micro_per_kwh - self.feed_in_micro_per_kwh
        return self.feed_in_micro_per_kwh + spread * moved // 1000


@dataclass(frozen=True, slots=True)
class SlotQuantiles:
    """Forecast net surplus of one slot in Wh at P10 ≤ P50 ≤ P90."""

    slot: int
    p10_wh: int
    p50_wh: int
    p90_wh: int

    def __post_init__(self) -> None:
        if not self.p10_wh <= self.p50_wh <= self.p90_wh:
            raise UsageError(f"quantiles must be ordered, got {self}")


def order_id(household: str, slot: int, side: Side, nonce: int) -> str:
    """Content-derived order id (never random)."""
    data = f"{household}|{slot}|{side.value}|{nonce}".encode()
    return hashlib.sha256(data).hexdigest()[:32]


def _steps(parts: list[tuple[int, int]]) -> tuple[Step, ...]:
    merged: dict[int, int] = {}
    for price, energy in parts:
        if energy > 0:
            merged[price] = merged.get(price, 0) + energy
    return tuple(Step(price, e) for price, e in sorted(merged.items()))


def quote_slot(
    q: SlotQuantiles,
    *,
    household: str,
    config: PolicyConfig,
    slot_seconds: int,
    lead_s: int,
    battery: BatteryState | None = None,
    nonce: int = 0,
) -> Order | None:
    """The order for one slot (see the module rules), or ``None`` when there is nothing to trade."""
    avail = battery.available_wh(slot_seconds) if battery else 0
    room = battery.headroom_wh(slot_seconds) if battery else 0

    def price(permille: int) -> int:
        return config.price(permille, lead_s=lead_s)

    if q.p50_wh >= 0:
        side = Side.SELL
        sure = max(q.p10_wh, 0)
        mid = max(q.p50_wh, 0) - sure
        upper = max(q.p90_wh, 0) - sure - mid
        s1, s2, s3 = config.sell_permille
        parts = [(price(s1), sure), (price(s2), mid), (price(s3), upper)]
        parts.append((price(config.battery_sell_permille), avail))
    else:
        side = Side.BUY
        d10, d50, d90 = -q.p90_wh, -q.p50_wh, -q.p10_wh
        covered = min(avail, max(d90, 0))  # the battery covers the shortfall first

        def need(d: int) -> int:
            return max(d - covered, 0)

        sure = need(d10)
        mid = need(d50) - sure
        upper = need(d90) - sure - mid
        b1, b2, b3 = config.buy_permille
        parts = [(price(b1), sure), (price(b2), mid), (price(b3), upper)]
        parts.append((price(config.battery_buy_permille), room))
    steps = _steps(parts)
    if not steps:
        return None
    return Order(order_id(household, q.slot, side, nonce), household, side, q.slot, steps, nonce)


def forecast_slots(
    history: MeterHistory,
    fitted: FittedForecaster,
    *,
    now: int,
    clock: SlotClock,
    horizon: int,
    row: int = 0,
) -> list[SlotQuantiles]:
    """Forecast the open slots covered by the next ``horizon`` intervals after ``history`` ends
    (household ``row``; :func:`slot_quantiles` has the rules)."""
    fc = fitted.predict(history, horizon)
    return slot_quantiles(replace(fc, values_w=fc.values_w[row : row + 1]), now=now, clock=clock)[0]


def slot_quantiles(
    fc: QuantileForecast, *, now: int, clock: SlotClock
) -> list[list[SlotQuantiles]]:
    """Every household's (row's) quantiles of the open slots that forecast ``fc`` covers.

    Each slot takes the forecast mean power of the interval containing its start, times the slot
    length (so hourly forecasts serve 15-minute slots). Slots whose gate already closed at ``now``
    are skipped. Vectorised over the rows (one call for a whole community).
    """
    first = clock.first_open_slot(now)
    last_s = fc.origin_s + fc.horizon * fc.step_s
    slots: list[int] = []
    intervals: list[int] = []
    slot = max(first, clock.slot_at(fc.origin_s))
    while clock.start(slot) < last_s:
        h = (clock.start(slot) - fc.origin_s) // fc.step_s
        if h >= 0:
            slots.append(slot)
            intervals.append(h)
        slot += 1
    levels = [QUANTILES.index(v) for v in (0.1, 0.5, 0.9)]
    wh = energy_wh(fc.values_w[:, intervals][:, :, levels], clock.slot_seconds).tolist()
    return [[SlotQuantiles(s, *q) for s, q in zip(slots, row, strict=True)] for row in wh]


def plan_orders(
    history: MeterHistory,
    fitted: FittedForecaster,
    *,
    now: int,
    clock: SlotClock,
    config: PolicyConfig,
    household: str,
    horizon: int,
    battery: BatteryState | None = None,
    nonce: int = 0,
) -> list[Order]:
    """What the daemon calls every slot: forecast from the meter history known at ``now``
    (``history`` must end at or before ``now``), then one order per open slot with energy to trade.

    Nonces are ``nonce, nonce + 1, …`` in slot order; pass the household's next free nonce.
    """
    if history.end_s > now:
        raise UsageError(f"history ends at {history.end_s}, after now={now}: that is the future")
    if history.households != 1:
        raise UsageError("plan_orders plans for one household; select its row first")
    orders: list[Order] = []
    for q in forecast_slots(history, fitted, now=now, clock=clock, horizon=horizon):
        order = quote_slot(
            q,
            household=household,
            config=config,
            slot_seconds=clock.slot_seconds,
            lead_s=clock.gate_closure(q.slot) - now,
            battery=battery,
            nonce=nonce + len(orders),
        )
        if order is not None:
            orders.append(order)
    return orders


def median_only_order(
    q: SlotQuantiles, *, household: str, config: PolicyConfig, nonce: int = 0
) -> Order | None:
    """A naive comparison policy: the P50 energy in one step at the midpoint price."""
    if q.p50_wh == 0:
        return None
    side = Side.SELL if q.p50_wh > 0 else Side.BUY
    price = config.price(500, lead_s=config.requote_window_s)
    step = (Step(price, abs(q.p50_wh)),)
    return Order(order_id(household, q.slot, side, nonce), household, side, q.slot, step, nonce)
