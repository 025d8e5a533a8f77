"""Two runs side by side: ``gridnode sim compare A B`` (A, B = run directories or results.json files).

:func:`compare` prints the community KPIs of both runs and the difference B − A (e.g. forecast-driven vs
perfect-foresight bidding, pay-as-clear vs pay-as-bid, in-process vs daemons), plus how much of B's
savings A captures — with B the perfect-foresight run of the same scenario, the share of perfect
foresight's savings. The training rows follow (``docs/sims.md``, *Training*): per history group
(established, cold-start-14d, …) the forecast MAE and savings, with B's change relative to A — local
vs federated training side by side — and the federated rounds' cost. The economics rows (P2P gains, imbalance cost's share of them, over-contracted
energy, household-weeks worse off than grid-only) are defined in ``docs/sims.md``, *Economics*. When
the runs were made together with ``--policies``, every policy's economics follow the table. It reads
only :class:`~sims.results.SimResult`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from market.errors import UsageError
from sims import economics
from sims.results import SimResult

__all__ = ["compare", "load_result", "register"]


def load_result(path: Path) -> SimResult:
    """A run directory (with ``results.json``) or a ``results.json`` file."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path}: no results.json (give a run directory or a results.json file)")
    try:
        return SimResult.read_json(file)
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{file}: not a simulation result: {exc}") from None


def _m(x: Any) -> str:
    return "–" if x is None else f"{x / 1_000_000:,.2f} ¤"


def _k(x: Any) -> str:
    return "–" if x is None else f"{x / 1000:,.1f} kWh"


def _p(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _n(x: Any) -> str:
    return "–" if x is None else f"{x:,.0f}" if isinstance(x, int) else f"{x:,.1f}"


def _price(x: Any) -> str:
    return "–" if x is None else f"{x / 1_000_000:.4f} ¤/kWh"


def _b(x: Any) -> str:
    return "–" if x is None else ("yes" if x else "NO")


# (label, getter, formatter of a value, formatter of a difference or None)
_Row = tuple[str, Callable[[SimResult], Any], Callable[[Any], str], Callable[[Any], str] | None]


def _diff(fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    def f(d: Any) -> str:
        text = fmt(abs(d))
        return ("+" if d >= 0 else "-") + text

    return f


_ROWS: list[_Row] = [
    ("engine", lambda r: r.engine, str, None),
    ("rule", lambda r: r.rule, str, None),
    ("policy", lambda r: r.policy, str, None),
    ("seed", lambda r: r.seed, str, None),
    ("households", lambda r: len(r.households), _n, _diff(_n)),
    ("slots done", lambda r: r.slots_done, _n, _diff(_n)),
    ("community bill", lambda r: r.community()["bill_micro"], _m, _diff(_m)),
    ("grid-only bill", lambda r: r.community()["grid_only_bill_micro"], _m, _diff(_m)),
    ("savings vs grid-only", lambda r: r.community()["savings_micro"], _m, _diff(_m)),
    ("savings %", lambda r: r.community()["savings_pct"], lambda x: f"{x:.1f} %", None),
    ("self-sufficiency", lambda r: r.community()["self_sufficiency"], _p, _diff(_p)),
    ("self-consumption", lambda r: r.community()["self_consumption"], _p, _diff(_p)),
    ("P2P volume", lambda r: r.community()["p2p_volume_wh"], _k, _diff(_k)),
    ("grid import", lambda r: r.community()["grid_import_wh"], _k, _diff(_k)),
    ("grid export", lambda r: r.community()["grid_export_wh"], _k, _diff(_k)),
    ("imbalance energy (traders)", lambda r: r.community()["imbalance_wh"], _k, _diff(_k)),
    ("imbalance cost", lambda r: r.community()["imbalance_cost_micro"], _m, _diff(_m)),
    (
        "P2P gains (savings + imbalance cost)",
        lambda r: r.community()["p2p_gains_micro"],
        _m,
        _diff(_m),
    ),
    (
        "imbalance cost / P2P gains",
        lambda r: r.community()["imbalance_share_of_gains"],
        _p,
        _diff(_p),
    ),
    (
        "over-contracted (short sellers, long buyers)",
        lambda r: r.community()["over_contracted_wh"],
        _k,
        _diff(_k),
    ),
    ("over-contract cost", lambda r: r.community()["over_contract_cost_micro"], _m, _diff(_m)),
    ("household-weeks", lambda r: r.community()["household_weeks"], _n, _diff(_n)),
    (
        "household-weeks worse off than grid-only",
        lambda r: r.community()["household_weeks_worse_off"],
        _n,
        _diff(_n),
    ),
    ("distinct homes", lambda r: r.community()["homes"], _n, _diff(_n)),
    ("battery charged", lambda r: r.community()["battery_charged_wh"], _k, _diff(_k)),
    ("battery discharged", lambda r: r.community()["battery_discharged_wh"], _k, _diff(_k)),
    ("battery losses", lambda r: r.community()["battery_loss_wh"], _k, _diff(_k)),
    (
        "mean clearing price",
        lambda r: r.community()["mean_clearing_price_micro_per_kwh"],
        _price,
        _diff(_price),
    ),
    ("orders committed share", lambda r: r.community()["orders_committed_share"], _p, _diff(_p)),
    (
        "forecast MAE (Wh/household-slot)",
        lambda r: r.community()["forecast_mae_wh_per_household_slot"],
        _n,
        _diff(_n),
    ),
    ("blocks committed", lambda r: r.blocks_committed, _n, _diff(_n)),
    ("commit latency p50 (ms)", lambda r: r.commit_latency_ms_p50, _n, _diff(_n)),
    ("ledger agreement", lambda r: r.ledger_agreement, _b, None),
    ("conservation", lambda r: r.conservation_ok, _b, None),
    ("wall seconds", lambda r: r.wall_seconds, _n, _diff(_n)),
]


def _group(label: str, key: str) -> Callable[[SimResult], Any]:
    return lambda r: r.groups().get(label, {}).get(key)


def _training_rows(a: SimResult, b: SimResult) -> list[_Row]:
    """Training (``docs/sims.md``): per history group (established, cold-start-14d, …) its
    forecast MAE and savings; then the federated rounds' cost."""
    labels = sorted(set(a.groups()) | set(b.groups()))
    rows: list[_Row] = [("training", lambda r: r.training, str, None)]
    for label in labels:
        rows += [
            (f"[{label}] households", _group(label, "households"), _n, _diff(_n)),
            (
                f"[{label}] forecast MAE (Wh/household-slot)",
                _group(label, "forecast_mae_wh"),
                _n,
                _diff(_n),
            ),
            (f"[{label}] savings vs grid-only", _group(label, "savings_micro"), _m, _diff(_m)),
            (f"[{label}] savings %", _group(label, "savings_pct"), _pc, _diff(_pc)),
        ]
    summary = [
        ("rounds completed", "rounds_completed", _n),
        ("bytes per member per round", "bytes_per_member_per_round", _n),
        ("bytes per round (all members)", "bytes_per_round", _n),
        ("round CPU s (mean, in process)", "round_cpu_s_mean", _s),
    ]
    for label, key, fmt in summary:
        rows.append((label, _summary(key), fmt, _diff(fmt)))
    return rows


def _summary(key: str) -> Callable[[SimResult], Any]:
    return lambda r: r.training_summary()[key]


def _pc(x: Any) -> str:
    return "–" if x is None else f"{x:.1f} %"


def _s(x: Any) -> str:
    return "–" if x is None else f"{x:.3f} s"


#: rows whose values may differ without a "differs" mark
_SAME_OR_NOT = ("engine", "rule", "policy", "seed", "training")
#: rows whose relative change B vs A is shown too (lower or higher is better: the reader judges)
_RELATIVE = ("forecast MAE", "savings vs grid-only")


def compare(a: SimResult, b: SimResult) -> str:
    """A fixed-width table: KPI, run A, run B, B − A (and, for forecast MAE and savings, B's
    change relative to A)."""
    rows = [("KPI", f"A: {a.scenario}"[:28], f"B: {b.scenario}"[:28], "B − A")]
    for label, get, fmt, dfmt in [*_ROWS, *_training_rows(a, b)]:
        va, vb = get(a), get(b)
        diff = ""
        if dfmt is not None and va is not None and vb is not None:
            diff = dfmt(vb - va)
            if any(k in label for k in _RELATIVE) and va:
                diff += f" ({100 * (vb - va) / abs(va):+.1f} %)"
        elif dfmt is None and va != vb and label not in _SAME_OR_NOT:
            diff = "differs"
        rows.append(
            (label, fmt(va) if va is not None else "–", fmt(vb) if vb is not None else "–", diff)
        )
    sa, sb = a.community()["savings_micro"], b.community()["savings_micro"]
    if sb > 0:
        rows.append(("A's savings as share of B's", "", "", f"{100 * sa / sb:.1f} %"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]

    def line(r: tuple[str, str, str, str]) -> str:
        return (
            f"{r[0]:<{widths[0]}} │ {r[1]:>{widths[1]}} │ {r[2]:>{widths[2]}} │ {r[3]:>{widths[3]}}"
        )

    out = [line(rows[0]), "─" * len(line(rows[0]))]
    out += [line(r) for r in rows[1:]]
    for r in (a, b):
        if r.policies:
            out += ["", f"policies run on {r.scenario} ({r.engine}):", economics.table(r.policies)]
            break
    return "\n".join(out)


def register(sub: Any) -> None:
    """Add ``compare A B`` to an argparse sub-parser set (e.g. ``gridnode sim``'s)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "compare",
        help="put two simulation runs side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", type=Path, help="run directory or results.json (A)")
    p.add_argument("b", type=Path, help="run directory or results.json (B)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(compare(load_result(args.a), load_result(args.b)))
    return 0
