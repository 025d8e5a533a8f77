"""Is the bidding policy the limit? Its knobs moved one at a time, on weeks it was not reported on.

    python benchmarks/policy_ablation.py                  # the tuning weeks (~3 min)
    python benchmarks/policy_ablation.py --reported       # the reported scenarios' own weeks

For each real-home scenario (``homes-winter``, ``-spring``, ``-summer``; by default their **tuning
weeks**, ``benchmarks/economics.py``'s ``TUNING``: other weeks and another draw of which homes keep
their PV than the reported ones) it

1. builds the in-process engine's community (:class:`sims.inproc._Engine`: the same households,
   agents, meter data and forecasters) and asks its forecaster, at every slot boundary, for what
   each household quotes, exactly as the engine does (one batched forecast per boundary);
2. replays the market on those forecasts without consensus: fresh household agents
   (:class:`gridnode.household.agent.HouseholdAgent`, the one agent) quote every slot from them,
   :func:`market.clearing.clear` clears each slot's book, :func:`market.settlement.settle` settles
   it on the meters — the ledger's own rules, so the forecast run's and the perfect-foresight run's
   savings equal the engine's (``benchmarks/economics.py --tune``) to the µ¤;
3. repeats the replay with one knob of the policy moved (band calibration off; offers and bids out
   to the 95 % / 98 % tail; 90 price levels instead of 11; no expected clearing price) and prints
   each variant's share of perfect foresight's savings, imbalance cost over P2P gains and
   household-weeks worse off — and, as an oracle, with the forecast's errors and bands scaled by
   0.75 and 0.5 (every quantile moved towards the reading): how much sharper the forecast would
   have to be; then the forecast's error statistics that bound it: per season, the
   PV homes' mean surplus in a surplus slot against their forecast's P10–P90 band there, and the
   correlation of a slot's P50 error with the error two slots earlier (the last one known when
   quoting).

The in-process engine's private ``_Engine`` is used read-only to get the very same community and
forecasts; nothing of it is changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import forecasting.policy as policy_module  # noqa: E402 - after the path fix
from benchmarks.economics import SEASONS, TUNING, TUNING_SEED, _path  # noqa: E402
from forecasting.policy import SlotQuantiles  # noqa: E402
from gridnode.household.agent import HouseholdAgent  # noqa: E402
from gridnode.household.forecast import SlotForecast, foresight  # noqa: E402
from market.clearing import clear  # noqa: E402
from market.settlement import (  # noqa: E402
    imbalance_cost_micro,
    imbalance_reference_price_micro_per_kwh,
    settle,
)
from sims.inproc import _Engine  # noqa: E402
from sims.ledger_kpis import over_contracted  # noqa: E402
from sims.scenario import Scenario, load_scenario  # noqa: E402

Captured = tuple[list[tuple[int, list[SlotForecast | None]]], dict[int, list[int]]]


def capture(sc: Scenario) -> tuple[_Engine, Captured]:
    """Every boundary's ``(now_s, forecasts)`` and every slot's meter (natural net, Wh)."""
    e = _Engine(sc)
    c = e.clock
    boundaries = [c.start(e.first_slot - 1)] + [
        c.start(b) for b in range(e.first_slot, e.last_slot + 1)
    ]
    out = []
    for now_s in boundaries:
        needs = [a.needs(now_s) for a in e.agents]
        out.append((now_s, e._forecasts(now_s, needs)))  # read-only use
    meters = {s: e.slot_energy(s)[0].tolist() for s in range(e.first_slot, e.last_slot + 1)}
    return e, (out, meters)


class _NoCalibration:
    scales = (1.0, 1.0)

    def record(self, *_: Any) -> None:
        pass


def replay(
    e: _Engine,
    cap: Captured,
    *,
    pf: bool = False,
    calibrate: bool = True,
    prices: bool = True,
    sharpen: float = 1.0,
) -> dict[str, Any]:
    """The market on the captured forecasts (module docstring); ``pf``: quote the meter instead;
    ``sharpen`` < 1: every quantile moved that far towards the meter's reading (an oracle: the
    forecast's errors and band scaled by it — how sharp the forecast would have to be)."""
    boundaries, meters = cap
    agents = [HouseholdAgent(a.config) for a in e.agents]
    if not calibrate:
        for a in agents:
            a.calibration = _NoCalibration()  # type: ignore[assignment]
    cleared: dict[int, Any] = {}
    clearing_prices: dict[int, int | None] = {}
    names = [a.config.household for a in agents]
    tariff = e.genesis.tariff
    sums = dict.fromkeys(("savings", "imbalance", "over", "volume"), 0)
    per_household = [0] * len(agents)
    for now_s, forecasts in boundaries:
        orders: dict[int, list[Any]] = {}
        for i, a in enumerate(agents):
            needs = a.needs(now_s)
            fc = forecasts[i]
            if pf:
                fc = foresight((s, meters[s][i]) for s in needs.quote if s in meters)
            elif sharpen != 1.0 and fc is not None:
                fc = _sharpened(fc, meters, i, sharpen)
            actions = a.on_slot_boundary(
                now_s,
                natural_wh={s: meters[s][i] for s in needs.read},
                contract_wh={},
                forecast=fc,
                clearing_prices=clearing_prices if prices and not pf else {},
            )
            for q in actions.quotes:
                if q.order is not None:
                    orders.setdefault(q.slot, []).append(q.order)
        for slot, book in orders.items():
            result = clear(book, slot=slot, rule=e.sc.rule)
            cleared[slot] = result
            clearing_prices[slot] = result.clearing_price_micro_per_kwh
    for slot, result in cleared.items():
        if slot not in meters:
            continue
        st = settle(slot, result.trades, dict(zip(names, meters[slot], strict=True)), tariff,
                    netting=e.sc.netting)  # fmt: skip
        ref = imbalance_reference_price_micro_per_kwh(
            result.trades, result.clearing_price_micro_per_kwh
        )
        for b in st.bills:
            i = names.index(b.household)
            per_household[i] += b.savings_micro
            sums["savings"] += b.savings_micro
            sums["imbalance"] += imbalance_cost_micro(b, ref)
            sums["over"] += over_contracted(b, ref, tariff)[1]
            sums["volume"] += b.bought_p2p_wh
    sums["worse"] = sum(s < 0 for s in per_household)
    sums["households"] = len(per_household)
    sums["per_household"] = per_household
    return sums


def _sharpened(fc: SlotForecast, meters: dict[int, list[int]], i: int, k: float) -> SlotForecast:
    def towards(q: SlotQuantiles) -> SlotQuantiles:
        a = meters.get(q.slot, [q.p50_wh] * (i + 1))[i]
        return SlotQuantiles(
            q.slot, *(round(a + k * (v - a)) for v in (q.p10_wh, q.p50_wh, q.p90_wh))
        )

    return SlotForecast(fc.model, tuple(towards(q) for q in fc.quantiles))


@contextmanager
def _levels(levels: tuple[int, ...]) -> Iterator[None]:
    """The policy's price levels and tail moved for the duration (restored after)."""
    old = policy_module.LEVELS, policy_module.TAIL
    policy_module.LEVELS, policy_module.TAIL = levels, levels[-1]
    try:
        yield
    finally:
        policy_module.LEVELS, policy_module.TAIL = old


def _variants() -> list[tuple[str, Callable[[_Engine, Captured], dict[str, Any]]]]:
    def with_levels(levels: tuple[int, ...]) -> Callable[[_Engine, Captured], dict[str, Any]]:
        def run(e: _Engine, cap: Captured) -> dict[str, Any]:
            with _levels(levels):
                return replay(e, cap)

        return run

    base = policy_module.LEVELS
    return [
        ("the policy as shipped", replay),
        ("without the band calibration", lambda e, c: replay(e, c, calibrate=False)),
        ("offers/bids out to the 95 % tail", with_levels((*base, 50))),
        ("offers/bids out to the 98 % tail", with_levels((*base, 50, 20))),
        ("90 price levels instead of 11", with_levels(tuple(range(990, 99, -10)))),
        ("no expected clearing price", lambda e, c: replay(e, c, prices=False)),
        ("oracle: forecast errors x 0.75", lambda e, c: replay(e, c, sharpen=0.75)),
        ("oracle: forecast errors x 0.5", lambda e, c: replay(e, c, sharpen=0.5)),
    ]


def _error_stats(e: _Engine, cap: Captured, shipped: dict[str, Any], pf: dict[str, Any]) -> str:
    boundaries, meters = cap
    pv = [i for i, s in enumerate(e.specs) if s.pv_kwp > 0]
    rows: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for _, forecasts in boundaries:
        for i, fc in enumerate(forecasts):
            for q in fc.quantiles if fc is not None else ():
                if q.slot in meters:
                    rows[(q.slot, i)] = (q.p10_wh, q.p50_wh, q.p90_wh, meters[q.slot][i])
    surplus = [(v[3], v[2] - v[0]) for (s, i), v in rows.items() if i in pv and v[3] > 0]
    pairs = [
        (rows[(s - 2, i)][3] - rows[(s - 2, i)][1], v[3] - v[1])
        for (s, i), v in rows.items()
        if (s - 2, i) in rows
    ]
    a = np.array(pairs, dtype=float)
    corr = float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) if len(a) > 2 else float("nan")
    mean_surplus = np.mean([x for x, _ in surplus]) if surplus else 0.0
    band = np.mean([w for _, w in surplus]) if surplus else 0.0
    lines = [
        f"  PV homes in slots with surplus: mean surplus {mean_surplus:,.0f} Wh, forecast P10-P90 "
        f"band {band:,.0f} Wh ({band / max(mean_surplus, 1):.1f}x); P50 error vs the error two "
        f"slots earlier: correlation {corr:+.3f}"
    ]
    by_side = {True: [0, 0], False: [0, 0]}
    for i in range(len(e.specs)):
        by_side[i in pv][0] += shipped["per_household"][i]
        by_side[i in pv][1] += pf["per_household"][i]
    for side, (got, best) in by_side.items():
        lines.append(
            f"  {'with PV' if side else 'without PV'}: {got / 1e6:.2f} ¤ of perfect foresight's "
            f"{best / 1e6:.2f} ¤ ({100 * got / best if best else 0:.0f} %)"
        )
    for i in pv:
        mine = [(v[3], v[2] - v[0]) for (s, j), v in rows.items() if j == i and v[3] > 0]
        got, best = shipped["per_household"][i], pf["per_household"][i]
        lines.append(
            f"    {e.specs[i].home:14s} {got / 1e6:6.2f} of {best / 1e6:6.2f} ¤ "
            f"({100 * got / best if best else 0:3.0f} %); mean surplus "
            f"{np.mean([x for x, _ in mine]) if mine else 0:5.0f} Wh, band "
            f"{np.mean([w for _, w in mine]) if mine else 0:5.0f} Wh"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default=",".join(SEASONS), help="comma-separated names or paths")
    ap.add_argument("--reported", action="store_true", help="the scenarios' own (reported) weeks")
    args = ap.parse_args()
    for name in [n.strip() for n in args.scenarios.split(",") if n.strip()]:
        sc = load_scenario(_path(name))
        if not args.reported and sc.name in TUNING:
            sc = dataclasses.replace(sc, start_day=TUNING[sc.name], seed=TUNING_SEED, days=7)
        sc = dataclasses.replace(sc, policy="forecast")
        t0 = time.perf_counter()
        e, cap = capture(sc)
        pf = replay(e, cap, pf=True)
        print(f"\n{sc.name}: {sc.days:g} days from {sc.start_day}, seed {sc.seed}, "
              f"{len(e.specs)} households; perfect foresight saves {pf['savings'] / 1e6:.2f} ¤ "
              f"(captured in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        shipped: dict[str, Any] = {}
        for label, run in _variants():
            r = run(e, cap)
            shipped = shipped or r  # the first variant: the policy as shipped
            gains = r["savings"] + r["imbalance"]
            print(f"  {label:36s} savings {r['savings'] / 1e6:7.2f} ¤  share of PF "
                  f"{100 * r['savings'] / pf['savings']:5.1f} %  imbalance/gains "
                  f"{100 * r['imbalance'] / max(gains, 1):5.1f} %  households worse off "
                  f"{r['worse']}/{r['households']}")  # fmt: skip
        print(_error_stats(e, cap, shipped, pf))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
