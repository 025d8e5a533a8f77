"""Collecting a daemon-engine run: the market from the chain, the households from their API.

The measurements are described in :mod:`sims.daemon_engine`. Here: :func:`read_store` reads a node's
SQLite store from genesis with the sample full node (:mod:`sims.fullnode`, the one chain reader
under it) and keeps what the engine needs beyond the market KPIs (the books the ledger cleared, the
signed readings, each order's commit time); :func:`save_submissions` saves each household daemon's
``GET /api/submissions`` into its directory before the daemons stop; :func:`collect` joins the
chain's market outcome (:mod:`sims.ledger_kpis`, the same fold as the in-process engine's) with the
replay meters, the submissions and the batteries into a :class:`~sims.results.SimResult` and the
trade rows. :func:`collect_run` does the same from copied-back directories alone.
:func:`round_records` gives a federated run's rounds (the ledger's model commitments joined with
the aggregators' ``fedrounds.jsonl``).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from forecasting.data import load_meter_history
from forecasting.series import energy_wh
from gridnode.chain import stored_blocks
from gridnode.core.ledger import CommittedModel, Genesis, LedgerState, OpenOrder
from gridnode.files import json_lines
from gridnode.household.battery import battery_from_sizes
from gridnode.household.forecast import SlotForecaster, bidding_forecaster
from gridnode.meter import ReplayMeter, shipped_replay
from gridnode.store import NodeStore
from market.errors import InvalidInput, UsageError
from market.settlement import GRID, POOL
from market.slots import SlotClock
from sims.daemons import LocalCommunity
from sims.fullnode import ChainSummary, SampleFullNode
from sims.ledger_kpis import household_kpi, slot_record, trade_rows
from sims.results import RoundRecord, SimResult, SlotRecord
from sims.scenario import HouseholdSpec, Scenario

__all__ = [
    "FATES",
    "SUBMISSIONS_FILE",
    "ChainReplay",
    "OrderFates",
    "collect",
    "collect_run",
    "order_fates",
    "read_store",
    "round_records",
    "save_submissions",
]

#: where the harness saves a household daemon's ``/api/submissions`` before stopping it
SUBMISSIONS_FILE = "submissions.json"


@dataclass
class ChainReplay:
    """What a node's store says (:func:`read_store`), beyond the sample full node's summary."""

    summary: ChainSummary  # digests, problem, the measured slots' market outcome
    state: LedgerState  # after the last block read
    books: dict[int, Mapping[str, OpenOrder]] = field(default_factory=dict)  # measured, cleared
    readings: dict[int, dict[str, int]] = field(default_factory=dict)  # measured slots, as signed
    committed_ms: dict[str, int] = field(default_factory=dict)  # placing tx id (hex) -> block time
    digests: dict[int, tuple[str, str]] = field(default_factory=dict)  # height -> (head, digest)


# --------------------------------------------------------------------------------------- chain


def read_store(
    path: Path,
    genesis: Genesis,
    *,
    slots: tuple[int, int],
    digest_at: frozenset[int] = frozenset(),
) -> ChainReplay:
    """Read the chain of the SQLite store at ``path`` from genesis with the sample full node.

    ``slots``: the measured slots (first, last); ``digest_at``: heights at which to record the head
    hash and state digest (to compare with what the daemons served at those heights). Besides the
    summary, keeps for the measured slots the book the ledger cleared and the signed readings, and
    each committed order's block time (by transaction id). A block that does not read ends the
    replay (the summary's ``problem``)."""
    node = SampleFullNode(genesis, slots, keep=1)
    first, last = slots
    books: dict[int, Mapping[str, OpenOrder]] = {}
    readings: dict[int, dict[str, int]] = {}
    committed_ms: dict[str, int] = {}
    digests: dict[int, tuple[str, str]] = {}
    store = NodeStore.open(path)
    try:
        for height, block, commit in stored_blocks(store):
            facts = node.feed(height, block, commit)
            if facts is None:
                break
            for so in facts.orders:
                committed_ms[so.id.hex()] = facts.time_ms  # the placing tx's id
            for r in facts.readings:
                if first <= r.slot <= last:
                    readings.setdefault(r.slot, {})[r.household] = r.net_wh
            for c in facts.cleared:
                if first <= c.slot <= last:
                    books[c.slot] = c.book
            if height in digest_at:
                digests[height] = (node.state.head_hash.hex(), node.state.digest().hex())
    finally:
        store.close()
    return ChainReplay(node.summary([]), node.state, books, readings, committed_ms, digests)


# --------------------------------------------------------------------------------------- meters


def _slot_pv_load(meter: ReplayMeter, slot: int, clock: SlotClock) -> tuple[int, int]:
    shift = meter.node_anchor_s - meter.data_anchor_s
    start, end = clock.start(slot) - shift, clock.end(slot) - shift
    d = meter.data
    step = d.step_s
    if start < d.start_s or end > d.end_s:
        return 0, 0
    w = d.window(start - (start - d.start_s) % step, end + (-(end - d.start_s)) % step)
    assert w.pv_w is not None and w.load_w is not None
    first = (start - w.start_s) // step
    last = -(-(end - w.start_s) // step)
    pv = int(energy_wh(w.pv_w[0, first:last] * meter.pv_scale, step).sum())
    load = int(energy_wh(w.load_w[0, first:last] * meter.load_scale, step).sum())
    return pv, load


def _p50_for(
    meter: ReplayMeter, forecaster: SlotForecaster, slot: int, clock: SlotClock, policy: str
) -> int | None:
    """The P50 of the daemon's last quote for ``slot`` (made at the start of ``slot - 1``, with a
    forecaster like the daemon's: its fit depends only on the day and the data)."""
    if policy == "perfect-foresight":
        return meter.slot_net_wh(slot, clock)
    now_s = clock.start(slot - 1)
    try:
        history = meter.history_before(now_s, days=forecaster.history_days)
        (fc,) = forecaster.forecast(history, now_s=now_s, slots=[slot], clock=clock)
    except (InvalidInput, UsageError):
        return None
    return fc.quantiles[0].p50_wh if fc.quantiles else None


def _meter_of(h: Any, scenario: Scenario, spec: HouseholdSpec, genesis: Genesis) -> ReplayMeter:
    """What a household daemon's meter reads, for the harness: the shipped household's replay
    (the daemon's own), or the meter file the engine wrote for it, read as the daemon reads it
    (already in node time: a replay with no shift)."""
    if scenario.home_source == "shipped":
        return shipped_replay(
            node_anchor_s=genesis.genesis_time_ms // 1000,
            day=scenario.start_day,
            day_offset=spec.day_offset,
            hour=scenario.start_hour,
            pv_scale=spec.pv_scale,
            load_scale=spec.load_scale,
        )
    from sims.daemon_engine import METER_FILE  # noqa: PLC0415 - the engine imports this module

    return ReplayMeter(load_meter_history(h.dir / METER_FILE), 0, 0)


# --------------------------------------------------------------------------------------- rounds


def round_records(
    validator_dirs: Iterable[Path], models: Mapping[bytes, CommittedModel]
) -> list[RoundRecord]:
    """The federated rounds of a daemon run (``training = federated``), one record per round an
    aggregator ran, in round order. What the ledger committed (``gn.tx.model``: round, model hash,
    contributors, the summed held-back validation) comes from the ledger's ``models``; what only
    the aggregator saw (members that joined, attempts, round wall seconds, payload bytes in all and
    the most one member answered with) from the ``data/fedrounds.jsonl`` each validator daemon
    under ``validator_dirs`` writes (:data:`gridnode.daemon.federation.ROUNDS_FILE`). A committed
    model without a record (its aggregator's directory is gone) still counts, with zeros for the
    costs; an aborted round has an empty ``model_hash``. ``cpu_s`` is the round's *wall* seconds here (the daemons' CPU is not
    separable per round): the in-process engine's is CPU seconds."""
    from gridnode.daemon.federation import ROUNDS_FILE  # noqa: PLC0415
    from gridnode.explain import model_json  # noqa: PLC0415

    reports = [r for d in validator_dirs for r in json_lines(d / "data" / ROUNDS_FILE)]
    by_hash = {r["model"]: r for r in reports if r.get("model")}
    out: list[RoundRecord] = []
    for model_hash, committed in models.items():
        r = by_hash.pop(model_hash.hex(), {})
        v = model_json(model_hash, committed)["validation"]
        out.append(
            RoundRecord(
                round=committed.round,
                at_s=int(r.get("at_s", 0)),
                members=int(r.get("joined", committed.contributors)),
                contributors=committed.contributors,
                attempts=int(r.get("attempts", 0)),
                bytes_per_member=int(r.get("max_bytes_per_member", 0)),
                total_bytes=int(r.get("bytes_in", 0)),
                cpu_s=float(r.get("wall_s", 0.0)),
                model_hash=model_hash.hex(),
                validation_samples=int(v["samples"]),
                validation_mae=v.get("mae"),
                validation_skill=v.get("skill"),
            )
        )
    for r in reports:  # rounds that committed nothing (aborted, or refused by the ledger)
        if not r.get("model") or r["model"] in by_hash:
            out.append(
                RoundRecord(
                    round=int(r["round"]),
                    at_s=int(r["at_s"]),
                    members=int(r["joined"]),
                    contributors=0,
                    attempts=int(r["attempts"]),
                    bytes_per_member=int(r["max_bytes_per_member"]),
                    total_bytes=int(r["bytes_in"]),
                    cpu_s=float(r["wall_s"]),
                    model_hash="",
                )
            )
    out.sort(key=lambda rec: (rec.round, rec.model_hash == ""))
    return out


# --------------------------------------------------------------------------------------- API


def save_submissions(lc: LocalCommunity) -> None:
    """Save every household daemon's ``/api/submissions`` into its directory (a daemon that does
    not answer leaves none: it submitted nothing, as far as the run can tell)."""
    for h in lc.households:
        if h.role != "full":
            continue
        try:
            doc = lc.api(h.index, "/api/submissions", timeout_s=10)
        except (OSError, ValueError):
            continue
        (h.dir / SUBMISSIONS_FILE).write_text(json.dumps(doc), encoding="utf-8")


def _submission_rows(directory: Path) -> list[dict[str, Any]]:
    """A household's saved submissions (:func:`save_submissions`), oldest first."""
    path = directory / SUBMISSIONS_FILE
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["submissions"]
    return rows


def _submissions(directory: Path) -> dict[int, dict[str, int]]:
    """slot -> {transaction id (hex): node-clock ms it was sent} of a household's saved
    submissions (:func:`save_submissions`)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for sub in _submission_rows(directory):
        out[int(sub["slot"])][str(sub["tx_id"])] = int(sub["at_ms"])
    return out


#: what became of a household's order for a measured slot (:func:`order_fates`), in this order
FATES: Final = (
    "in its slot",
    "not submitted",
    "refused",
    "sent after gate closure",
    "committed after gate closure",
    "accepted, not committed",
)


@dataclass(frozen=True, slots=True)
class OrderFates:
    """Why orders missed their slot: per measured slot, how many households' orders met each of
    :data:`FATES` (the first that applies, in that order; a household that sent several orders for
    a slot is judged by its last), and the timing of every order sent for a measured slot, in wall
    seconds: from the slot boundary it was quoted at to sending it (the household's step: its
    forecast, and waiting for a core), and from sending it to the slot's gate closure (negative:
    sent late)."""

    by_slot: Mapping[int, Mapping[str, int]]
    refusals: Mapping[str, int]  # the validators' reasons, over all measured slots
    sent_after_boundary_s: tuple[float, ...]
    lead_to_gate_s: tuple[float, ...]

    def total(self, fate: str) -> int:
        return sum(c.get(fate, 0) for c in self.by_slot.values())


def order_fates(
    household_dirs: Iterable[tuple[str, Path]],
    replay: ChainReplay,
    clock: SlotClock,
    *,
    slots: tuple[int, int],
    speedup: float,
    quoted_slots: int,
) -> OrderFates:
    """What became of each household's order for each measured slot the ledger cleared
    (:class:`OrderFates`):
    ``household_dirs`` are (public key hex, directory with its ``submissions.json``); the orders
    of each slot's cleared book and every transaction's block time are the chain's
    (:func:`read_store`); an order is quoted ``quoted_slots`` slot boundaries before its slot."""
    first, last = slots
    by_slot: dict[int, dict[str, int]] = {
        s: dict.fromkeys(FATES, 0)
        for s in range(first, min(last, replay.state.last_cleared_slot) + 1)
    }
    refusals: dict[str, int] = defaultdict(int)
    after_boundary: list[float] = []
    lead: list[float] = []
    for household, directory in household_dirs:
        last_sent: dict[int, dict[str, Any]] = {}
        for row in _submission_rows(directory):
            slot = int(row["slot"])
            if slot in by_slot:
                last_sent[slot] = row
                at_s = int(row["at_ms"]) / 1000
                after_boundary.append((at_s - clock.start(slot - quoted_slots)) / speedup)
                lead.append((clock.gate_closure(slot) - at_s) / speedup)
        for slot, counts in by_slot.items():
            sub = last_sent.get(slot)
            gate_ms = clock.gate_closure(slot) * 1000
            committed_ms = None if sub is None else replay.committed_ms.get(str(sub["tx_id"]))
            if household in replay.books.get(slot, {}):
                fate = "in its slot"
            elif sub is None:
                fate = "not submitted"
            elif not sub["accepted"]:
                fate = "refused"
                refusals[str(sub["reason"])] += 1
            elif int(sub["at_ms"]) >= gate_ms:
                fate = "sent after gate closure"
            elif committed_ms is not None:
                fate = "committed after gate closure"
            else:
                fate = "accepted, not committed"
            counts[fate] += 1
    return OrderFates(by_slot, dict(refusals), tuple(after_boundary), tuple(lead))


def _battery_moves(
    meter: ReplayMeter,
    spec: HouseholdSpec,
    household: str,
    readings: Mapping[int, Mapping[str, int]],
    clock: SlotClock,
) -> dict[int, tuple[int, int, int, int]]:
    """What a household daemon's battery did in each slot it sent a reading for: ``(charged,
    discharged, loss, soc after)`` in Wh. The daemon (:func:`gridnode.household_driver.battery_of`) signs the
    meter's net after dispatch, so ``meter − reading`` is the AC energy charged (``+``) or
    discharged (``−``), exactly; stored and drawn energy follow :mod:`gridnode.household.battery`'s
    rounding, from half full at the daemon's first reading. A dispatched slot whose reading never
    reached the ledger is missed (the state of charge after it is then off)."""
    b = battery_from_sizes(spec.battery_kwh, spec.battery_kw)
    if b is None:  # sized below 1 Wh: the daemon has none either
        return {}
    soc = b.capacity_wh // 2
    out: dict[int, tuple[int, int, int, int]] = {}
    for slot in sorted(s for s, r in readings.items() if household in r):
        natural = meter.slot_net_wh(slot, clock)
        if natural is None:
            continue
        moved = natural - readings[slot][household]
        charged, discharged = max(moved, 0), max(-moved, 0)
        stored, drawn = b.stored_wh(charged), b.drawn_wh(discharged)
        soc += stored - drawn
        out[slot] = (charged, discharged, charged - stored + drawn - discharged, soc)
    return out


def collect_run(
    root: Path, scenario: Scenario, *, first: int, last: int, speedup: float
) -> tuple[SimResult, list[dict[str, Any]]]:
    """Collect a finished run from its household directories under ``root`` (``node0`` … as
    :class:`~sims.daemons.LocalCommunity` lays them out): node0's ``data/node.sqlite`` and every
    household's ``submissions.json`` (its ``/api/submissions``, saved before it stopped). Used when
    the daemons ran on other machines and their directories were copied back
    (``docs/sims_daemons.md``); ledger agreement is then not checked here."""
    lc = LocalCommunity.load(root)
    result, trades, _ = collect(
        lc, scenario, scenario.household_specs(), first=first, last=last, speedup=speedup,
        digest_at=frozenset(),
    )  # fmt: skip
    return result, trades


def collect(
    lc: LocalCommunity,
    scenario: Scenario,
    specs: list[HouseholdSpec],
    *,
    first: int,
    last: int,
    speedup: float,
    digest_at: frozenset[int],
) -> tuple[SimResult, list[dict[str, Any]], ChainReplay]:
    assert lc.genesis is not None
    genesis = lc.genesis
    clock = genesis.clock
    replay = read_store(
        lc.households[0].dir / "data" / "node.sqlite",
        genesis,
        slots=(first, last),
        digest_at=digest_at,
    )
    state = replay.state
    market = replay.summary.market
    full = [h for h in lc.households if h.role == "full"]
    meters = {
        h.key.public_hex: _meter_of(h, scenario, spec, genesis)
        for h, spec in zip(full, specs, strict=True)
    }
    forecasters = {hh: bidding_forecaster(scenario.model, site=scenario.site) for hh in meters}
    sent = {h.key.public_hex: _submissions(h.dir) for h in full}
    specs_by_key = {h.key.public_hex: spec for h, spec in zip(full, specs, strict=True)}
    names = {k: spec.name for k, spec in specs_by_key.items()}

    slots_out: list[SlotRecord] = []
    trades_out: list[dict[str, Any]] = []
    per_hh: dict[str, dict[str, int]] = {
        k: defaultdict(int) for k in meters
    }  # pv/load/battery over measured slots
    latencies: list[float] = []
    moves = {
        hh: _battery_moves(meters[hh], spec, hh, replay.readings, clock)
        for hh, spec in specs_by_key.items()
        if spec.battery_kwh > 0
    }
    for m in market.slots:
        slot = m.slot
        if slot > state.last_cleared_slot:
            continue  # not cleared when the run ended
        readings = replay.readings.get(slot, {})
        pv_sum = load_sum = err = charged_sum = discharged_sum = 0
        for hh, meter in meters.items():
            if hh not in readings:
                continue  # a household whose daemon sent no reading is not in the ledger's figures
            pv, load = _slot_pv_load(meter, slot, clock)
            per_hh[hh]["pv"] += pv
            per_hh[hh]["load"] += load
            pv_sum += pv
            load_sum += load
            charged, discharged, loss, soc = moves.get(hh, {}).get(slot, (0, 0, 0, 0))
            if slot in moves.get(hh, {}):
                acc_b = per_hh[hh]
                acc_b.setdefault("soc_start", soc - (charged - discharged - loss))
                acc_b["soc_end"] = soc
                acc_b["charged"] += charged
                acc_b["discharged"] += discharged
                acc_b["loss"] += loss
            charged_sum += charged
            discharged_sum += discharged
            if sent[hh].get(slot):
                p50 = _p50_for(meter, forecasters[hh], slot, clock, scenario.policy)
                if p50 is not None:  # the forecast is of the natural net, before the battery
                    e = abs(p50 - (readings[hh] + charged - discharged))
                    err += e
                    per_hh[hh]["fc_err"] += e
                    per_hh[hh]["fc_n"] += 1
        for so in replay.books.get(slot, {}).values():
            tid = so.id.hex()  # the placing transaction (an order or a bundle)
            commit_ms = replay.committed_ms.get(tid)
            sent_ms = sent.get(so.household, {}).get(slot, {}).get(tid)
            if commit_ms is not None and sent_ms is not None:
                latencies.append(max(0.0, (commit_ms - sent_ms) / speedup))
        trades_out.extend(trade_rows(m, names))
        slots_out.append(
            slot_record(
                m,
                start_s=clock.start(slot),
                orders_submitted=sum(1 for hh in sent if sent[hh].get(slot)),
                pv_wh=pv_sum,
                load_wh=load_sum,
                net_wh=sum(readings.values()) + charged_sum - discharged_sum,
                forecast_abs_error_wh=err,
                battery_charged_wh=charged_sum,
                battery_discharged_wh=discharged_sum,
            )
        )
    households = [
        replace(
            household_kpi(
                hh,
                spec,
                market.households.get(hh),
                pv_wh=per_hh[hh]["pv"],
                load_wh=per_hh[hh]["load"],
                battery_charged_wh=per_hh[hh]["charged"],
                battery_discharged_wh=per_hh[hh]["discharged"],
                battery_loss_wh=per_hh[hh]["loss"],
                battery_soc_start_wh=per_hh[hh]["soc_start"],
                battery_soc_end_wh=per_hh[hh]["soc_end"],
            ),
            history_days=spec.history_days,
            forecast_abs_error_wh=per_hh[hh]["fc_err"],
            forecast_slots=per_hh[hh]["fc_n"],
        )
        for hh, spec in specs_by_key.items()
    ]
    # the ledger's own totals cover every settled slot (also the warm-up ones): Σ balances = 0,
    # Σ bought = Σ sold, and the ledger's settlements of every slot sum exactly to its totals
    bought = sum(t.bought_p2p_wh for t in state.totals.values())
    sold = sum(t.sold_p2p_wh for t in state.totals.values())
    conservation = sum(state.balances.values()) == 0 and bought == sold and market.totals_agree
    notes = [
        "households' KPIs cover the measured slots only; the ledger also settled "
        f"{state.settled_slots} slots in all (warm-up slots included)",
        f"accounts besides households: grid {state.balances.get(GRID, 0)} µ¤, pool "
        f"{state.balances.get(POOL, 0)} µ¤",
    ]
    if replay.summary.problem:
        notes.append(replay.summary.problem)
    latencies.sort()
    result_obj = SimResult(
        scenario=scenario.name,
        engine="daemons",
        seed=scenario.seed,
        rule=scenario.rule.value,
        policy=scenario.policy,
        slot_seconds=scenario.slot_seconds,
        slots_planned=last - first + 1,
        slots_done=len(slots_out),
        interrupted=False,
        wall_seconds=0.0,
        households=households,
        slots=slots_out,
        blocks_committed=state.height,
        commit_latency_ms_p50=statistics.median(latencies) if latencies else None,
        commit_latency_ms_p99=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        if latencies
        else None,
        head_hash=state.head_hash.hex(),
        state_digest=state.digest().hex(),
        conservation_ok=conservation,
        notes=notes,
        rounds=round_records([h.dir for h in lc.households if h.role == "validator"], state.models),
    )
    return result_obj, trades_out, replay
