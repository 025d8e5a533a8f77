"""Every bidding policy on one scenario, side by side: what trading saved and what it risked.

``gridnode sim SCENARIO --policies forecast,naive-fixed-price,perfect-foresight`` runs the scenario
once per policy (same seed: same households, keys and data; the engine and its ledger each time)
and :func:`comparison` puts the runs together. Per policy (``docs/sims.md``, *Economics*):

* ``savings_micro``: the community's bill against grid-only, and ``share_of_perfect_foresight``:
  that over the perfect-foresight run's savings (perfect foresight is the same policy quoting the
  net the meter will read, so the share measures what the forecast's errors cost);
* ``imbalance_wh`` / ``imbalance_cost_micro`` (:mod:`market.settlement`'s KPI: every trader's
  deviation from its contract, priced against the slot's market price), ``p2p_gains_micro`` =
  savings + imbalance cost, and ``imbalance_share_of_gains``;
* ``over_contracted_wh`` / ``over_contract_cost_micro`` (the contracts not honoured: a seller
  short, a buyer long) and ``over_contract_share`` of (savings + that cost);
* household-weeks: how many of the households' weekly savings were negative (worse off than
  grid-only), and the worst one.

Pure: it reads only :class:`~sims.results.SimResult` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sims.results import SimResult

__all__ = ["comparison", "table"]

_FIELDS = (
    "savings_micro",
    "p2p_volume_wh",
    "imbalance_wh",
    "imbalance_cost_micro",
    "p2p_gains_micro",
    "imbalance_share_of_gains",
    "over_contracted_wh",
    "over_contract_cost_micro",
    "over_contract_share",
    "household_weeks",
    "household_weeks_worse_off",
    "household_weeks_worse_off_share",
    "worst_household_week_micro",
    "homes",
)


def comparison(results: Mapping[str, SimResult]) -> dict[str, dict[str, Any]]:
    """Per policy (in the order given): its economics, and its share of perfect foresight's
    savings when a perfect-foresight run is among ``results`` and saved something."""
    pf = results.get("perfect-foresight")
    pf_savings = pf.community()["savings_micro"] if pf is not None else 0
    out: dict[str, dict[str, Any]] = {}
    for policy, result in results.items():
        c = result.community()
        row: dict[str, Any] = {k: c[k] for k in _FIELDS}
        row["share_of_perfect_foresight"] = (
            c["savings_micro"] / pf_savings if pf_savings > 0 else None
        )
        row["scenario"] = result.scenario
        row["engine"] = result.engine
        row["slots_done"] = result.slots_done
        out[policy] = row
    return out


def _m(x: Any) -> str:
    return "–" if x is None else f"{x / 1_000_000:,.2f}"


def _k(x: Any) -> str:
    return "–" if x is None else f"{x / 1000:,.1f}"


def _p(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def table(comp: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table of :func:`comparison` (money in ¤, energy in kWh)."""
    head = (
        "policy",
        "savings ¤",
        "share of PF",
        "P2P kWh",
        "imbalance kWh",
        "imbalance ¤",
        "P2P gains ¤",
        "imb/gains",
        "over-contracted kWh / ¤",
        "hh-weeks worse off",
    )
    rows = [head]
    for policy, r in comp.items():
        worse = f"{r['household_weeks_worse_off']}/{r['household_weeks']}"
        if r["household_weeks"]:
            worse += f" ({_p(r['household_weeks_worse_off_share'])})"
        rows.append(
            (
                policy,
                _m(r["savings_micro"]),
                _p(r["share_of_perfect_foresight"]),
                _k(r["p2p_volume_wh"]),
                _k(r["imbalance_wh"]),
                _m(r["imbalance_cost_micro"]),
                _m(r["p2p_gains_micro"]),
                _p(r["imbalance_share_of_gains"]),
                f"{_k(r['over_contracted_wh'])} / {_m(r['over_contract_cost_micro'])}",
                worse,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
