"""What a simulation run produces, whichever engine ran it (in-process or real daemons).

Both engines fill the same :class:`SimResult`; the report, ``results.json``, the Parquet/CSV tables and
``gridnode sim compare`` read only this. Energy in Wh and money in µ¤ as integers; derived ratios
(self-sufficiency, …) are floats computed at the end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from market.kpis import self_consumption, self_sufficiency

__all__ = [
    "FaultEvent",
    "HouseholdKPI",
    "RoundRecord",
    "SimResult",
    "SlotRecord",
    "economics",
    "history_group",
]

#: 2: imbalance energy and cost; 3: over-contract, weekly savings, homes; 4: training (rounds,
#: per-household forecast error, history groups). Version 3 files are still read.
RESULTS_VERSION = 4
_READS = (3, 4)


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One delivery slot, community-wide."""

    slot: int
    start_s: int
    clearing_price_micro_per_kwh: int | None
    volume_wh: int  # traded P2P
    trades: int
    orders: int  # orders that reached the ledger for this slot
    orders_submitted: int  # orders the households tried to place for this slot
    pv_wh: int  # community PV generation (0 if not metered)
    load_wh: int  # community consumption (0 if not metered)
    net_wh: int  # community natural net, PV − load (+ export), before any battery
    grid_import_wh: int
    grid_export_wh: int
    # Σ over the households that traded in the slot of |measured − contracted| (Wh) and of its
    # imbalance cost (µ¤, signed): market.settlement.imbalance_energy_wh / imbalance_cost_micro
    imbalance_wh: int
    imbalance_cost_micro: int
    forecast_abs_error_wh: int  # Σ |P50 forecast − natural net| over households that quoted
    commit_height: int  # ledger height when the slot was cleared
    battery_charged_wh: int = 0  # Σ AC energy into the households' batteries in the slot
    battery_discharged_wh: int = 0  # Σ AC energy out of them


@dataclass(frozen=True, slots=True)
class HouseholdKPI:
    household: str  # public key hex
    name: str  # scenario name (e.g. "h017")
    pv_kwp: float
    battery_kwh: float
    bought_p2p_wh: int
    sold_p2p_wh: int
    grid_import_wh: int
    grid_export_wh: int
    pv_wh: int
    load_wh: int
    bill_micro: int
    grid_only_bill_micro: int
    # Σ over the slots it traded in of |measured − contracted| (Wh) and of what that cost beyond
    # trading the same energy at the slot's market price (µ¤, signed; market.settlement's rules)
    imbalance_wh: int
    imbalance_cost_micro: int
    # the battery (all 0 without one); charged/discharged are AC energies at the meter, so
    # Σ metered net = pv − load − charged + discharged and charged − discharged = Δsoc + loss
    battery_kw: float = 0.0
    battery_charged_wh: int = 0
    battery_discharged_wh: int = 0
    battery_loss_wh: int = 0
    battery_soc_start_wh: int = 0
    battery_soc_end_wh: int = 0
    # the contract it could not honour (seller short / buyer long) and what that cost against the
    # market price (sims.ledger_kpis.over_contracted), and its savings per week of the run
    over_contracted_wh: int = 0
    over_contract_cost_micro: int = 0
    weekly_savings_micro: tuple[int, ...] = ()
    home: str = ""  # whose meter data it replays ("shipped", "citylearn-3", a meter file's name)
    # cold start: its meter history began this many days before the run (0: all the data)
    history_days: int = 0
    # Σ |P50 forecast − natural net| over the slots it quoted (that were delivered), and how many
    forecast_abs_error_wh: int = 0
    forecast_slots: int = 0

    @property
    def savings_micro(self) -> int:
        return self.grid_only_bill_micro - self.bill_micro


def history_group(history_days: int) -> str:
    """The KPI group of a household by its history: ``established`` or ``cold-start-14d``."""
    return "established" if history_days == 0 else f"cold-start-{history_days}d"


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One federated training round (``sims.training``): who took part, what it cost, which model
    it committed (``model_hash`` hex, empty when the round aborted) and the previous model's
    held-back error on the contributors' data since the previous round (scale units: 1.0 is a
    household's mean load; skill against seasonal naive)."""

    round: int
    at_s: int  # simulated unix seconds: the history it trained on ends here
    members: int
    contributors: int
    attempts: int
    bytes_per_member: int  # the most any member sent (masked update + seed reveals)
    total_bytes: int
    cpu_s: float  # CPU seconds of the whole in-process round (varies between runs)
    model_hash: str
    validation_samples: int = 0
    validation_mae: float | None = None
    validation_skill: float | None = None


@dataclass(frozen=True, slots=True)
class FaultEvent:
    at_s: int  # simulated unix seconds
    kind: str  # "partition", "heal", "crash", "restart", "byzantine", "drop", ...
    detail: str = ""


@dataclass
class SimResult:
    """A finished (or interrupted) run."""

    scenario: str
    engine: str  # "inproc" | "daemons"
    seed: int
    rule: str
    policy: str
    slot_seconds: int
    slots_planned: int
    slots_done: int
    interrupted: bool
    wall_seconds: float
    households: list[HouseholdKPI] = field(default_factory=list)
    slots: list[SlotRecord] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    blocks_committed: int = 0
    commit_latency_ms_p50: float | None = None
    commit_latency_ms_p99: float | None = None
    ledger_agreement: bool | None = None  # all nodes: same head hash and state digest
    head_hash: str = ""
    state_digest: str = ""
    conservation_ok: bool | None = None  # Σ balances = 0 and Σ bought = Σ sold, re-checked
    notes: list[str] = field(default_factory=list)
    #: when the run is one of several policies on the same scenario (``--policies``): every
    #: policy's economics by name (:func:`sims.economics.comparison`), this one's included
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: str = "local"  # "local" | "federated" (the scenario's [training] mode)
    rounds: list[RoundRecord] = field(default_factory=list)  # federated training rounds

    # ------------------------------------------------------------------ KPIs
    def groups(self) -> dict[str, dict[str, Any]]:
        """KPIs per history group (:func:`history_group`: established, cold-start-14d, …):
        households, forecast MAE (Wh per household-slot, P50 vs the natural net), bill, grid-only
        bill, savings (µ¤ and %), imbalance cost."""
        out: dict[str, dict[str, Any]] = {}
        for label in sorted({history_group(h.history_days) for h in self.households}):
            hh = [h for h in self.households if history_group(h.history_days) == label]
            bill = sum(h.bill_micro for h in hh)
            grid_only = sum(h.grid_only_bill_micro for h in hh)
            slots = sum(h.forecast_slots for h in hh)
            out[label] = {
                "households": len(hh),
                "history_days": hh[0].history_days,
                "forecast_mae_wh": (
                    sum(h.forecast_abs_error_wh for h in hh) / slots if slots else None
                ),
                "forecast_slots": slots,
                "bill_micro": bill,
                "grid_only_bill_micro": grid_only,
                "savings_micro": grid_only - bill,
                "savings_pct": 100.0 * (grid_only - bill) / grid_only if grid_only else None,
                "imbalance_cost_micro": sum(h.imbalance_cost_micro for h in hh),
            }
        return out

    def training_summary(self) -> dict[str, Any]:
        """The federated rounds in brief: how many completed, contributors, bytes each member sent
        per round (mean of the rounds' most), total bytes per round, round CPU (mean and most),
        the last model's hash and held-back skill (all ``None`` without rounds)."""
        done = [r for r in self.rounds if r.model_hash]
        n = len(done)
        last = done[-1] if done else None
        return {
            "mode": self.training,
            "rounds": len(self.rounds),
            "rounds_completed": n,
            "contributors_mean": sum(r.contributors for r in done) / n if n else None,
            "bytes_per_member_per_round": sum(r.bytes_per_member for r in done) / n if n else None,
            "bytes_per_round": sum(r.total_bytes for r in done) / n if n else None,
            "round_cpu_s_mean": sum(r.cpu_s for r in done) / n if n else None,
            "round_cpu_s_max": max((r.cpu_s for r in done), default=None),
            "last_model_hash": last.model_hash if last else None,
            "last_validation_skill": last.validation_skill if last else None,
        }

    def community(self) -> dict[str, Any]:
        hh = self.households
        bill = sum(h.bill_micro for h in hh)
        grid_only = sum(h.grid_only_bill_micro for h in hh)
        load = sum(h.load_wh for h in hh)
        pv = sum(h.pv_wh for h in hh)
        imported = sum(h.grid_import_wh for h in hh)
        exported = sum(h.grid_export_wh for h in hh)
        p2p = sum(h.bought_p2p_wh for h in hh)
        return {
            "households": len(hh),
            "bill_micro": bill,
            "grid_only_bill_micro": grid_only,
            "savings_micro": grid_only - bill,
            "savings_pct": 100.0 * (grid_only - bill) / grid_only if grid_only else 0.0,
            "p2p_volume_wh": p2p,
            "grid_import_wh": imported,
            "grid_export_wh": exported,
            "imbalance_wh": sum(h.imbalance_wh for h in hh),
            "imbalance_cost_micro": sum(h.imbalance_cost_micro for h in hh),
            **economics(hh),
            "pv_wh": pv,
            "load_wh": load,
            "battery_charged_wh": sum(h.battery_charged_wh for h in hh),
            "battery_discharged_wh": sum(h.battery_discharged_wh for h in hh),
            "battery_loss_wh": sum(h.battery_loss_wh for h in hh),
            # share of consumption not imported from the grid; share of PV not exported. Both come
            # from the metered (after-battery) grid import/export, so energy shifted through a
            # battery counts as self-consumed (its conversion losses too) and as self-supplied.
            "self_sufficiency": self_sufficiency(load_wh=load, import_wh=imported) or 0.0,
            "self_consumption": self_consumption(pv_wh=pv, export_wh=exported) or 0.0,
            "mean_clearing_price_micro_per_kwh": _mean(
                [
                    s.clearing_price_micro_per_kwh
                    for s in self.slots
                    if s.clearing_price_micro_per_kwh is not None
                ]
            ),
            "orders_committed_share": (
                sum(s.orders for s in self.slots) / sum(s.orders_submitted for s in self.slots)
                if sum(s.orders_submitted for s in self.slots)
                else None
            ),
            "forecast_mae_wh_per_household_slot": _mean_ratio(
                sum(s.forecast_abs_error_wh for s in self.slots), len(self.slots) * max(1, len(hh))
            ),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RESULTS_VERSION,
            **{
                k: v
                for k, v in asdict(self).items()
                if k not in ("households", "slots", "faults", "rounds")
            },
            "community": self.community(),
            "households": [asdict(h) | {"savings_micro": h.savings_micro} for h in self.households],
            "slots": [asdict(s) for s in self.slots],
            "faults": [asdict(f) for f in self.faults],
            "rounds": [asdict(r) for r in self.rounds],
            "groups": self.groups(),
            "training_summary": self.training_summary(),
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: Path) -> SimResult:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") not in _READS:
            raise ValueError(f"{path}: results version {doc.get('version')} is not one of {_READS}")
        doc.pop("version")
        doc.pop("community", None)
        doc.pop("groups", None)
        doc.pop("training_summary", None)
        rounds = [RoundRecord(**r) for r in doc.pop("rounds", [])]
        hh = [
            HouseholdKPI(
                **{k: v for k, v in h.items() if k != "savings_micro"}
                | {"weekly_savings_micro": tuple(h.get("weekly_savings_micro", ()))}
            )
            for h in doc.pop("households")
        ]
        slots = [SlotRecord(**s) for s in doc.pop("slots")]
        faults = [FaultEvent(**f) for f in doc.pop("faults")]
        return cls(**doc, households=hh, slots=slots, faults=faults, rounds=rounds)


def economics(households: list[HouseholdKPI]) -> dict[str, Any]:
    """What trading was worth and what it risked (``docs/sims.md``, *Economics*):

    * ``p2p_gains_micro`` = savings + imbalance cost: what the community would have saved had every
      trader's deviation from its contract been settled at the slot's market price rather than at
      retail / feed-in (so ``savings = p2p_gains − imbalance_cost`` exactly), and
      ``imbalance_share_of_gains`` = imbalance cost / P2P gains;
    * ``over_contracted_wh`` / ``over_contract_cost_micro``: the contracts not honoured (seller short,
      buyer long) and what they cost against the market price, ``over_contract_share`` of
      (savings + that cost);
    * household-weeks: every household's savings per week of the run (a shorter run or last week
      counts as one), how many of them were negative (worse off than grid-only) and their share;
    * ``homes``: how many distinct homes' meter data the households replay.
    """
    savings = sum(h.savings_micro for h in households)
    imbalance = sum(h.imbalance_cost_micro for h in households)
    over = sum(h.over_contract_cost_micro for h in households)
    weeks = [w for h in households for w in h.weekly_savings_micro]
    worse = sum(w < 0 for w in weeks)
    gains = savings + imbalance
    return {
        "p2p_gains_micro": gains,
        "imbalance_share_of_gains": imbalance / gains if gains > 0 else None,
        "over_contracted_wh": sum(h.over_contracted_wh for h in households),
        "over_contract_cost_micro": over,
        "over_contract_share": over / (savings + over) if savings + over > 0 else None,
        "household_weeks": len(weeks),
        "household_weeks_worse_off": worse,
        "household_weeks_worse_off_share": worse / len(weeks) if weeks else None,
        "worst_household_week_micro": min(weeks) if weeks else None,
        "homes": len({h.home for h in households}),
    }


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_ratio(total: int, n: int) -> float | None:
    return total / n if n else None
