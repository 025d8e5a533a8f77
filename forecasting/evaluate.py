"""Offline evaluation of bidding policies on real data, settled by the market's own rules.

Rules of this module:

* A **community** is built from one real metered household (:func:`community_from`): household
  ``i`` uses the real load shifted by ``7·i`` days (weekdays stay aligned) and the real PV shifted by
  ``i`` days (season kept, weather differs) and scaled by ``pv_scale[i]`` (``0`` = no PV, a pure
  consumer). Shifts wrap around the series' ends. Every number is still a real measurement.
* Each policy is run over whole days from ``start_s``: at every day's first slot (its origin) the
  forecaster (refitted every ``refit_every_days`` on the past only) forecasts all households at once
  and the policy quotes every slot of that day; each slot is cleared with
  :func:`market.clearing.clear` and settled with :func:`market.settlement.settle` against the
  *measured* net energy (integer Wh). Costs are sums of the settlement's bills, exact µ¤.
* Policies: ``quantile-steps`` (:func:`forecasting.policy.quote_slot`, the reservation-price
  curve of the forecast distribution), ``median-one-step`` (the P50 at the midpoint price), and
  the references ``grid-only`` (no orders: every bill is the grid-only counterfactual) and
  ``perfect-foresight`` (:func:`~forecasting.policy.quote_slot` on the measured net: the same
  policy with a forecast that is never wrong).
* Pure and deterministic: same inputs → same report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.models import QUANTILES, Forecaster, QuantileRegression
from forecasting.policy import (
    BatteryState,
    PolicyConfig,
    SlotQuantiles,
    median_only_order,
    quote_slot,
)
from forecasting.series import FloatArray, MeterHistory, energy_wh
from market.clearing import Rule, clear
from market.errors import UsageError
from market.orders import Order
from market.settlement import Netting, Tariff, settle
from market.slots import SlotClock

__all__ = [
    "POLICIES",
    "PolicyResult",
    "community_from",
    "evaluate_policies",
]

#: Policy names :func:`evaluate_policies` knows.
POLICIES = ("grid-only", "median-one-step", "quantile-steps", "perfect-foresight")

QuoteFn = Callable[[SlotQuantiles, str, int], Order | None]


def community_from(history: MeterHistory, pv_scale: Sequence[float]) -> MeterHistory:
    """A community of ``len(pv_scale)`` households from one metered household (module rules)."""
    if history.pv_w is None or history.load_w is None or history.households != 1:
        raise UsageError("community_from needs one household with PV and load metered")
    day = history.steps_per_day
    pv = np.stack([np.roll(history.pv_w[0], i * day) * s for i, s in enumerate(pv_scale)])
    load = np.stack([np.roll(history.load_w[0], 7 * i * day) for i in range(len(pv_scale))])
    return MeterHistory.from_components(
        pv, load, start_s=history.start_s, step_s=history.step_s, utc_offset_s=history.utc_offset_s
    )


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A policy's outcome over the evaluated slots (money in µ¤, energy in Wh, all exact)."""

    policy: str
    community_bill_micro: int
    grid_only_bill_micro: int
    traded_wh: int
    imbalance_abs_wh: int
    bills_micro: tuple[int, ...]  # per household

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.community_bill_micro

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "community_bill_micro": self.community_bill_micro,
            "grid_only_bill_micro": self.grid_only_bill_micro,
            "savings_micro": self.savings_micro,
            "traded_wh": self.traded_wh,
            "imbalance_abs_wh": self.imbalance_abs_wh,
            "bills_micro": list(self.bills_micro),
        }


def _slot_quantiles(values_w: FloatArray, slot: int, seconds: int) -> SlotQuantiles:
    wh = energy_wh(values_w, seconds)
    lo, mid, hi = (QUANTILES.index(v) for v in (0.1, 0.5, 0.9))
    return SlotQuantiles(slot, int(wh[lo]), int(wh[mid]), int(wh[hi]))


def evaluate_policies(
    history: MeterHistory,
    *,
    start_s: int,
    days: int,
    tariff: Tariff,
    forecaster: Forecaster | None = None,
    policies: Sequence[str] = POLICIES,
    config: PolicyConfig | None = None,
    refit_every_days: int = 28,
    rule: Rule = Rule.PAY_AS_CLEAR,
    netting: Netting = Netting.NONE,
    batteries: Sequence[BatteryState | None] | None = None,
) -> tuple[PolicyResult, ...]:
    """Run each policy over ``days`` days of ``history`` (one slot per history interval)."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UsageError(f"unknown policies {unknown}; known: {POLICIES}")
    if start_s % history.step_s:
        raise UsageError("start_s must lie on the history's grid")
    phase = int(history.step_of_day(history.index_at(start_s)))
    model = forecaster or QuantileRegression(
        horizon=history.steps_per_day, origin_steps_of_day=(phase,)
    )
    cfg = config or PolicyConfig(
        tariff.feed_in_micro_per_kwh,
        tariff.retail_micro_per_kwh,
        grid_fee_micro_per_kwh=tariff.grid_fee_micro_per_kwh,
    )
    seconds = history.step_s
    clock = SlotClock(slot_seconds=seconds, gate_lead_seconds=0)
    names = [f"h{i:03d}" for i in range(history.households)]
    batt = list(batteries) if batteries is not None else [None] * history.households
    first = history.index_at(start_s)
    day = history.steps_per_day
    measured = energy_wh(history.net_w[:, first : first + days * day], seconds)  # (n, slots)
    forecasts: FloatArray | None = None
    if any(p in ("median-one-step", "quantile-steps") for p in policies):
        forecasts = np.zeros((history.households, days * day, len(QUANTILES)))
        fitted = None
        for d in range(days):
            origin_s = start_s + d * day * seconds
            past = history.until(origin_s)
            if fitted is None or d % refit_every_days == 0:
                fitted = model.fit(past)
            forecasts[:, d * day : (d + 1) * day] = fitted.predict(past, day).values_w
    results = []
    for policy in policies:
        bills = [0] * history.households
        grid_only = traded = imbalance = 0
        for k in range(days * day):
            slot = clock.slot_at(start_s) + k
            orders: list[Order] = []
            for i, name in enumerate(names):
                order = None
                if policy == "perfect-foresight":
                    m = int(measured[i, k])
                    order = quote_slot(
                        SlotQuantiles(slot, m, m, m), household=name, config=cfg,
                        slot_seconds=seconds, battery=batt[i], nonce=k,
                    )  # fmt: skip
                elif policy != "grid-only":
                    assert forecasts is not None
                    q = _slot_quantiles(forecasts[i, k], slot, seconds)
                    if policy == "quantile-steps":
                        order = quote_slot(
                            q, household=name, config=cfg, slot_seconds=seconds,
                            battery=batt[i], nonce=k,
                        )  # fmt: skip
                    else:
                        order = median_only_order(q, household=name, config=cfg, nonce=k)
                if order is not None:
                    orders.append(order)
            trades = clear(orders, slot=slot, rule=rule).trades if orders else ()
            readings = {name: int(measured[i, k]) for i, name in enumerate(names)}
            st = settle(slot, trades, readings, tariff, netting=netting)
            for i, b in enumerate(st.bills):
                bills[i] += b.bill_micro
                grid_only += b.grid_only_bill_micro
                traded += b.sold_p2p_wh
                imbalance += abs(b.imbalance_wh)
        results.append(PolicyResult(policy, sum(bills), grid_only, traded, imbalance, tuple(bills)))
    return tuple(results)
