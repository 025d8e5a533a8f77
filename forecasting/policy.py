"""The automatic bidding policy: a slot's forecast distribution and prices → one order curve.

Rules of this module (all pure: same inputs, same orders, byte for byte):

* **Input per slot**: the household's net-surplus forecast for the slot as integer Wh quantiles
  ``(P10, P50, P90)`` (``+`` surplus, ``-`` shortfall), its battery (optional), the community's
  prices (:class:`PolicyConfig`: retail, feed-in, grid fee) and, when known, the slot's
  **expected clearing price** (e.g. from the ledger's recent clearing prices).
* **The forecast distribution** (:class:`NetDistribution`): the CDF is linear between P10, P50
  and P90, with exponential (Laplace) tails beyond them whose scale is the neighbouring half-band
  over ``ln 5`` (the Laplace distribution's own P10→P50 distance), so a forecast with P10 = P50 =
  P90 (perfect foresight) is a point mass.
* **Settlement, as :mod:`market.settlement` does it** (no netting): energy contracted but not
  delivered is bought from the grid at retail ``R``; energy delivered but not contracted is sold
  at feed-in ``F``; a buyer pays the grid fee ``g`` on what it bought. So a seller who over-sells
  buys the shortfall at ``R``, a buyer who over-buys sells the excess at ``F``.
* **Each Wh's reservation price.** Contracting one more Wh (the ``k``-th) changes the household's
  expected bill by a known amount, so each Wh has a price at which it is worth contracting:

  - selling the ``k``-th Wh costs ``F`` if the surplus turns out ≥ ``k`` (it would have been
    exported) and ``R`` if not (bought back): **ask** ``a(k) = F·P(X ≥ k) + R·P(X < k)``;
  - buying the ``k``-th Wh saves ``R`` if the shortfall turns out ≥ ``k`` and is worth only ``F``
    if not (sold back): **bid** ``b(k) = R·P(D ≥ k) + F·P(D < k) − g`` (``D = −X``).

  With a battery (available energy ``A`` and headroom ``H`` within one slot of its power, each
  stored or drawn Wh valued at ``v`` = ``battery_value_permille`` of the spread), the battery
  absorbs deviations first: ``b(k) = R·P(D > k + A) + v·P(k − H < D ≤ k + A) + F·P(D ≤ k − H) − g``
  and ``a(k) = F·P(X > k + H) + v·P(k − A < X ≤ k + H) + R·P(X ≤ k − A)``.
* **The order curve is these reservation prices**, bid low / asked high to whole price levels:
  the Wh whose reservation lies between two levels are quoted at the less favourable level (a bid
  rounds down, an ask up), so **every Wh that fills does so at a price no worse than its
  reservation: whatever the clearing price and fill, the expected bill is never above not trading**
  (under the forecast distribution). At any clearing price ``p`` the filled quantity is the
  newsvendor critical-ratio quantile for ``p``: a seller sells its ``(p − F)/(R − F)`` quantile, a
  buyer buys the ``(R − p − g)/(R − F)`` quantile of its shortfall, not the median. Levels: the
  survival probabilities :data:`LEVELS` (99 %, 95 %, 90 %, 80 % … 10 %) and the expected clearing
  price, so the quantity the household most likely gets is exactly the newsvendor quantity.
* **Bounds**: offered energy ≤ ``max(P90, 0) + A``, bid energy ≤ ``max(−P10, 0) + H`` (nothing
  beyond the 10 % tail: a household without PV never bids for more than it plausibly uses); bid
  steps below feed-in are dropped (no seller sells below what the grid pays); every price lies in
  ``[F, R]``; at most 12 steps (14 with a battery).
* **One side per slot** (the ledger refuses a buy and a sell for one slot): the side whose curve
  gains more in expectation at the expected clearing price (the midpoint of feed-in and retail when
  none is known); ties and nothing to gain: the side of the P50.
* **Calibration from the household's own record** (:class:`BandCalibration`): a forecaster can be
  wrong in a way its history did not show (a PV system repaired, a house emptied). The agent keeps
  each quoted slot's forecast and its meter's reading; once :data:`CALIBRATION_MIN` slots are in,
  the factors by which the lower and the upper half-band would have had to be widened about the
  P50 to keep all but 10 % of the last :data:`CALIBRATION_DAYS` days' readings above the P10
  (below the P90) are ``widen`` (never below 1, at most :data:`CALIBRATION_MAX_SCALE`). Each side
  uses the one that makes it more careful: the **sell** curve is laid out on the distribution with
  its *lower* half-band widened (a seller fears a shortfall), the **buy** curve on the one with its
  *upper* half-band widened (a buyer fears not needing it). A calibrated forecast is left as it is.
* Steps are at distinct prices in ascending order, none empty; an order with no energy is not
  emitted. Order ids are ``sha256(household|slot|side|nonce)``; nonces are ``nonce, nonce+1, …``
  in slot order.

Known limits: the reservation prices price imbalances at retail and feed-in, which is exact without
community netting and conservative with it (netting settles part of them at the midpoint); a
household is treated as a price taker (its order does not move the clearing price); the battery's
value ``v`` is one number, not a forecast of what stored energy will displace later; the battery's
energy is offered in every planned slot at once (the caller re-plans after fills).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from forecasting.models import QUANTILES, FittedForecaster, QuantileForecast
from forecasting.series import MeterHistory, energy_wh
from market.errors import UsageError
from market.orders import Order, Side, Step
from market.slots import SlotClock

__all__ = [
    "CALIBRATION_DAYS",
    "CALIBRATION_MAX_SCALE",
    "CALIBRATION_MIN",
    "LEVELS",
    "BandCalibration",
    "BatteryState",
    "Curves",
    "NetDistribution",
    "PolicyConfig",
    "SlotQuantiles",
    "buy_reservation",
    "forecast_slots",
    "median_only_order",
    "order_curves",
    "order_id",
    "plan_orders",
    "quote_slot",
    "sell_reservation",
    "slot_quantiles",
]

#: Survival probabilities (‰) at which the curve's price levels sit (see the module rules).
LEVELS: Final = (990, 950, 900, 800, 700, 600, 500, 400, 300, 200, 100)
#: the least likely Wh a curve contracts: a seller offers up to its (1000 − TAIL)‰ quantile, a
#: buyer bids for up to its (1000 − TAIL)‰ shortfall (the last of :data:`LEVELS`)
TAIL: Final = LEVELS[-1]
_LN5: Final = math.log(5.0)
#: the household's own record that calibrates its bands: the last this many days of quoted slots
CALIBRATION_DAYS: Final = 7
#: ... once at least this many slots are in
CALIBRATION_MIN: Final = 24
#: the widest a band is widened
CALIBRATION_MAX_SCALE: Final = 4.0


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
    """The prices a household faces (µ¤ per kWh) and the value it puts on stored energy."""

    feed_in_micro_per_kwh: int
    retail_micro_per_kwh: int
    grid_fee_micro_per_kwh: int = 0
    battery_value_permille: int = 500  # a stored Wh is worth feed-in + permille × spread

    def __post_init__(self) -> None:
        if not 0 <= self.feed_in_micro_per_kwh <= self.retail_micro_per_kwh:
            raise UsageError("need 0 <= feed-in <= retail")
        if self.grid_fee_micro_per_kwh < 0:
            raise UsageError("the grid fee must be >= 0")
        if not 0 <= self.battery_value_permille <= 1000:
            raise UsageError(
                f"battery_value_permille must lie in [0, 1000], got {self.battery_value_permille}"
            )

    @property
    def spread(self) -> int:
        return self.retail_micro_per_kwh - self.feed_in_micro_per_kwh

    @property
    def midpoint_micro_per_kwh(self) -> int:
        """Halfway between feed-in and retail (rounded down): the naive policy's price."""
        return self.feed_in_micro_per_kwh + self.spread // 2

    @property
    def battery_value_micro_per_kwh(self) -> float:
        return self.feed_in_micro_per_kwh + self.spread * self.battery_value_permille / 1000


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


@dataclass(frozen=True, slots=True)
class NetDistribution:
    """The forecast distribution of a slot's net surplus X (Wh) from its P10, P50 and P90: linear
    CDF between them, exponential tails outside (module rules)."""

    p10: float
    p50: float
    p90: float

    @classmethod
    def of(cls, q: SlotQuantiles) -> NetDistribution:
        return cls(float(q.p10_wh), float(q.p50_wh), float(q.p90_wh))

    @property
    def point_mass(self) -> bool:
        return self.p10 == self.p90

    def quantile(self, u: float) -> float:
        """The value X stays at or below with probability ``u`` (``±inf`` at 0 and 1 unless the
        tail is empty)."""
        if u <= 0.1:
            b = (self.p50 - self.p10) / _LN5
            if b == 0 or u >= 0.1:
                return self.p10
            return self.p10 - b * math.log(0.1 / u) if u > 0 else -math.inf
        if u >= 0.9:
            b = (self.p90 - self.p50) / _LN5
            if b == 0 or u <= 0.9:
                return self.p90
            return self.p90 + b * math.log(0.1 / (1.0 - u)) if u < 1 else math.inf
        if u <= 0.5:
            return self.p10 + (self.p50 - self.p10) * (u - 0.1) / 0.4
        return self.p50 + (self.p90 - self.p50) * (u - 0.5) / 0.4

    def cdf(self, x: float) -> float:
        """``P(X ≤ x)``."""
        if self.point_mass:
            return 1.0 if x >= self.p10 else 0.0
        if x < self.p10:
            b = (self.p50 - self.p10) / _LN5
            return 0.1 * math.exp((x - self.p10) / b) if b > 0 else 0.0
        if x >= self.p90:
            b = (self.p90 - self.p50) / _LN5
            return 1.0 - 0.1 * math.exp(-(x - self.p90) / b) if b > 0 else 1.0
        if x < self.p50:
            return 0.1 + 0.4 * (x - self.p10) / (self.p50 - self.p10)
        return 0.5 + 0.4 * (x - self.p50) / (self.p90 - self.p50)

    def below(self, x: float) -> float:
        """``P(X < x)`` (equal to :meth:`cdf` except at an atom: P10 = P50 or P50 = P90)."""
        if self.point_mass:
            return 1.0 if x > self.p10 else 0.0
        if x == self.p10 and self.p10 == self.p50:
            return 0.0  # the lower tail is empty: P10 is an atom of mass 0.5
        if x == self.p90 and self.p50 == self.p90:
            return 0.5
        return self.cdf(x)


class BandCalibration:
    """A household's record of forecasts and readings, and the band widths it calls for (module
    rules). Pure and deterministic: its state is the record, in slot order.

    Each side's errors are kept twice: in slot order (to forget the oldest) and sorted (kept so by
    insertion and removal, ``O(log n)`` search), so :attr:`scales` reads its 90 % tail without
    sorting the window again (it is read for every quote). Equal errors keep their slot order in
    the sorted list (inserted after, removed from the front of their run), as a stable sort of the
    window would order them: the tail read is the same element."""

    def __init__(self, *, slot_seconds: int) -> None:
        self._size = CALIBRATION_DAYS * 86_400 // slot_seconds
        self._below: deque[float] = deque()  # (P50 − reading) / (P50 − P10) of the last slots
        self._above: deque[float] = deque()  # (reading − P50) / (P90 − P50)
        self._below_sorted: list[float] = []
        self._above_sorted: list[float] = []

    def record(self, q: SlotQuantiles, actual_wh: int) -> None:
        """Slot ``q.slot`` read ``actual_wh``: how far below and above its P50 it fell, in lower
        and upper half-bands (≤ 1 on both: inside P10–P90)."""
        below = (q.p50_wh - actual_wh) / max(q.p50_wh - q.p10_wh, 1)
        above = (actual_wh - q.p50_wh) / max(q.p90_wh - q.p50_wh, 1)
        for window, ordered, error in (
            (self._below, self._below_sorted, below),
            (self._above, self._above_sorted, above),
        ):
            window.append(error)
            bisect.insort_right(ordered, error)
            if len(window) > self._size:
                oldest = window.popleft()
                del ordered[bisect.bisect_left(ordered, oldest)]

    @staticmethod
    def _scale(ordered: list[float]) -> float:
        if len(ordered) < CALIBRATION_MIN:
            return 1.0
        tail = ordered[math.ceil(0.9 * len(ordered)) - 1]  # 90 % of readings within it
        return min(max(tail, 1.0), CALIBRATION_MAX_SCALE)

    @property
    def scales(self) -> tuple[float, float]:
        """The factors to widen the lower and the upper half-band by: each so that no more than
        10 % of the recorded readings would have fallen beyond it (1 until
        :data:`CALIBRATION_MIN` slots are in)."""
        return self._scale(self._below_sorted), self._scale(self._above_sorted)


def sell_reservation(
    dist: NetDistribution, k: float, config: PolicyConfig, *, avail_wh: int = 0, room_wh: int = 0
) -> float:
    """The lowest price (µ¤/kWh) at which selling the ``k``-th Wh does not raise the expected bill
    (module rules; ``avail_wh``/``room_wh``: the battery's energy and headroom this slot)."""
    f, r = config.feed_in_micro_per_kwh, config.retail_micro_per_kwh
    exported = 1.0 - dist.below(k + room_wh)  # X ≥ k + H: the Wh would have been exported
    bought = dist.below(k - avail_wh)  # X < k − A: the shortfall is bought at retail
    rest = max(0.0, 1.0 - exported - bought)  # the battery takes it or gives it
    return f * exported + r * bought + config.battery_value_micro_per_kwh * rest


def buy_reservation(
    dist: NetDistribution, k: float, config: PolicyConfig, *, avail_wh: int = 0, room_wh: int = 0
) -> float:
    """The highest price (µ¤/kWh) the buyer pays for the ``k``-th Wh, the grid fee on top, without
    raising its expected bill (module rules; the shortfall is ``D = −X``)."""
    f, r = config.feed_in_micro_per_kwh, config.retail_micro_per_kwh
    displaced = dist.cdf(-k - avail_wh)  # D ≥ k + A: the Wh replaces a retail import
    spilled = 1.0 - dist.cdf(room_wh - k)  # D < k − H: the Wh ends up exported at feed-in
    rest = max(0.0, 1.0 - displaced - spilled)  # the battery would have given or taken it
    v = config.battery_value_micro_per_kwh
    return r * displaced + f * spilled + v * rest - config.grid_fee_micro_per_kwh


def order_id(household: str, slot: int, side: Side, nonce: int) -> str:
    """Content-derived order id (never random)."""
    data = f"{household}|{slot}|{side.value}|{nonce}".encode()
    return hashlib.sha256(data).hexdigest()[:32]


def _last_k(ok: Callable[[int], bool], cap: int) -> int:
    """The largest ``k`` in ``0..cap`` for which ``ok(k)`` (the ``k``-th Wh's reservation is
    acceptable at the price; it is monotone in ``k``, so bisection finds it), 0 if none."""
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _ratio(num: int, spread: int) -> float:
    """``num / spread``; with no spread (feed-in = retail) 0, or ``inf`` for a positive ``num``."""
    if spread:
        return num / spread
    return math.inf if num > 0 else 0.0


def _floor(wh: float) -> int:
    """Whole Wh at or below ``wh`` (a hair of float noise forgiven); ``−inf`` → −1, ``+inf`` is
    not asked for (the callers cap quantities first)."""
    return math.floor(wh + 1e-9) if -1e18 < wh < 1e18 else -1


@functools.lru_cache(maxsize=256)
def _levels(config: PolicyConfig, expected: int, *, sell: bool, battery: bool) -> tuple[int, ...]:
    """The curve's price levels (module rules): a sell ask ``F + (1 − u)·spread`` rounded up, a
    bid ``F − g + u·spread`` rounded down, for ``u`` in :data:`LEVELS`; the expected clearing price;
    with a battery also the stored energy's value ``v`` and a level just past it (the battery's
    plateau, where a sliver of tail probability moves a Wh's reservation off ``v``). Memoised: a
    pure function of its arguments, asked for by every household's quote of a slot alike."""
    f, r, spread = config.feed_in_micro_per_kwh, config.retail_micro_per_kwh, config.spread
    g = config.grid_fee_micro_per_kwh
    if sell:
        prices = {f + -(-(1000 - u) * spread // 1000) for u in LEVELS}
    else:
        prices = {f - g + u * spread // 1000 for u in LEVELS}
    if f <= expected <= r:
        prices.add(expected)
    if battery:
        v = config.battery_value_micro_per_kwh
        if sell:
            prices |= {math.ceil(v), math.ceil(v + (r - v) / 50)}
        else:
            prices |= {math.floor(v) - g, math.floor(v - (v - f) / 50) - g}
    return tuple(sorted(p for p in prices if f <= p <= r))


@functools.lru_cache(maxsize=256)
def _rungs(
    config: PolicyConfig, expected: int, *, sell: bool, battery: bool
) -> tuple[tuple[int, float], ...]:
    """:func:`_levels` in the order a curve walks them (asks up, bids down), each with the
    survival probability ``u`` its price stands for on a curve without a battery (a seller's
    ``(R − price)/spread``, a buyer's ``(price + g − F)/spread``). Memoised like :func:`_levels`:
    the curves read the table instead of recomputing it for every quote (same numbers)."""
    f, r, spread = config.feed_in_micro_per_kwh, config.retail_micro_per_kwh, config.spread
    g = config.grid_fee_micro_per_kwh
    levels = _levels(config, expected, sell=sell, battery=battery)
    if sell:
        return tuple((price, _ratio(r - price, spread)) for price in levels)
    return tuple((price, _ratio(price + g - f, spread)) for price in reversed(levels))


#: a curve's step at a price level with an energy, shared (steps are immutable values; building
#: the frozen dataclass was a third of a quote's time): the same steps, fewer objects
_step: Callable[[int, int], Step] = functools.lru_cache(maxsize=1 << 14)(Step)


def _sell_curve(
    dist: NetDistribution, config: PolicyConfig, avail: int, room: int, expected: int, *, cap: int
) -> tuple[Step, ...]:
    """The sell steps (ascending asks): at each price level the Wh whose reservation it covers,
    at most ``cap`` Wh of the forecast (its P90) and the battery's energy."""
    cap = max(cap, 0) + avail
    if cap == 0:
        return ()
    battery = bool(avail or room)
    tail = TAIL / 1000
    quantile = dist.quantile
    steps, done = [], 0
    for price, u in _rungs(config, expected, sell=True, battery=battery):
        if battery:

            def cheap_enough(k: int, price: int = price) -> bool:
                ask = sell_reservation(dist, k, config, avail_wh=avail, room_wh=room)
                return ask <= price + 1e-6

            k = _last_k(cheap_enough, cap)
        elif u <= tail:  # P(X ≥ k) ≥ u: k up to the (1 − u) quantile
            k = cap
        else:
            k = _floor(quantile(1.0 - u))
        if k > done:
            k = min(k, cap)
            steps.append(_step(price, k - done))
            done = k
            if done == cap:
                break  # dearer asks offer nothing more
    return tuple(steps)


def _buy_curve(
    dist: NetDistribution, config: PolicyConfig, avail: int, room: int, expected: int, *, cap: int
) -> tuple[Step, ...]:
    """The buy steps (in ascending price order): at each price level the Wh whose reservation
    covers it, at most ``cap`` Wh of the forecast shortfall (its 90 % one) and the headroom."""
    cap = max(cap, 0) + room
    if cap == 0:
        return ()
    battery = bool(avail or room)
    tail = TAIL / 1000
    quantile = dist.quantile
    steps, done = [], 0
    for price, u in _rungs(config, expected, sell=False, battery=battery):
        if battery:

            def worth_it(k: int, price: int = price) -> bool:
                bid = buy_reservation(dist, k, config, avail_wh=avail, room_wh=room)
                return bid >= price - 1e-6

            k = _last_k(worth_it, cap)
        elif u > 1.0:  # P(D ≥ k) ≥ u: k up to minus the u quantile of X
            k = 0
        elif u <= tail:
            k = cap
        else:
            k = _floor(-quantile(u))
        if k > done:
            k = min(k, cap)
            steps.append(_step(price, k - done))
            done = k
            if done == cap:
                break  # cheaper bids ask for nothing more
    steps.reverse()
    return tuple(steps)


def _gain(steps: tuple[Step, ...], price: int, *, sell: bool) -> int:
    """What the curve's steps gain at clearing ``price`` (µ¤·Wh/kWh; a lower bound of the expected
    gain: each Wh is valued at its step's price, not at its exact reservation)."""
    if sell:
        return sum(s.energy_wh * (price - s.price_micro_per_kwh)
                   for s in steps if s.price_micro_per_kwh <= price)  # fmt: skip
    return sum(s.energy_wh * (s.price_micro_per_kwh - price)
               for s in steps if s.price_micro_per_kwh >= price)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Curves:
    """Both sides' order curves for one slot (steps in price order) and the price they were laid
    out around (the expected clearing price, clamped to [feed-in, retail])."""

    sell: tuple[Step, ...]
    buy: tuple[Step, ...]
    expected_price_micro_per_kwh: int

    @property
    def side(self) -> Side | None:
        """The side that gains more at the expected price (module rules; ``None``: nothing to
        trade). Ties go to the side of the P50, which :func:`quote_slot` knows."""
        if not self.sell and not self.buy:
            return None
        gain_sell = _gain(self.sell, self.expected_price_micro_per_kwh, sell=True)
        gain_buy = _gain(self.buy, self.expected_price_micro_per_kwh, sell=False)
        if gain_sell == gain_buy:
            return None
        return Side.SELL if gain_sell > gain_buy else Side.BUY


def order_curves(
    q: SlotQuantiles,
    *,
    config: PolicyConfig,
    slot_seconds: int,
    battery: BatteryState | None = None,
    expected_price_micro_per_kwh: int | None = None,
    widen: tuple[float, float] = (1.0, 1.0),
) -> Curves:
    """The sell and the buy curve of one slot's forecast (module rules), before a side is chosen;
    ``widen``: the calibration's factors for the lower and the upper half-band."""
    avail = battery.available_wh(slot_seconds) if battery else 0
    room = battery.headroom_wh(slot_seconds) if battery else 0
    expected = (
        config.midpoint_micro_per_kwh
        if expected_price_micro_per_kwh is None
        else min(
            max(expected_price_micro_per_kwh, config.feed_in_micro_per_kwh),
            config.retail_micro_per_kwh,
        )
    )
    lo, hi = widen
    if lo < 1.0 or hi < 1.0:
        raise UsageError(f"widen factors must be >= 1, got {widen}")
    p10, p50, p90 = float(q.p10_wh), float(q.p50_wh), float(q.p90_wh)
    fearing_short = NetDistribution(p50 - lo * (p50 - p10), p50, p90)
    fearing_long = NetDistribution(p10, p50, p50 + hi * (p90 - p50))
    sell_cap = _floor(fearing_short.quantile(1 - TAIL / 1000))
    buy_cap = _floor(-fearing_long.quantile(TAIL / 1000))
    return Curves(
        _sell_curve(fearing_short, config, avail, room, expected, cap=sell_cap),
        _buy_curve(fearing_long, config, avail, room, expected, cap=buy_cap),
        expected,
    )


def quote_slot(
    q: SlotQuantiles,
    *,
    household: str,
    config: PolicyConfig,
    slot_seconds: int,
    battery: BatteryState | None = None,
    expected_price_micro_per_kwh: int | None = None,
    widen: tuple[float, float] = (1.0, 1.0),
    nonce: int = 0,
) -> Order | None:
    """The order for one slot (see the module rules), or ``None`` when there is nothing to trade."""
    curves = order_curves(
        q,
        config=config,
        slot_seconds=slot_seconds,
        battery=battery,
        expected_price_micro_per_kwh=expected_price_micro_per_kwh,
        widen=widen,
    )
    side = curves.side
    if side is None:  # a tie: the side of the P50, if it has a curve
        side = Side.SELL if q.p50_wh >= 0 else Side.BUY
    steps = curves.sell if side is Side.SELL else curves.buy
    if not steps:
        side = Side.BUY if side is Side.SELL else Side.SELL
        steps = curves.sell if side is Side.SELL else curves.buy
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
    expected_price_micro_per_kwh: int | None = None,
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
            battery=battery,
            expected_price_micro_per_kwh=expected_price_micro_per_kwh,
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
    step = (Step(config.midpoint_micro_per_kwh, abs(q.p50_wh)),)
    return Order(order_id(household, q.slot, side, nonce), household, side, q.slot, step, nonce)
