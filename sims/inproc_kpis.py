"""What the in-process engine reports at the end of a run: the KPI collection of :mod:`sims.inproc`.

Rules of this module: it reads the finished engine (its validators, the sample full node's chain
summary, the households' meters, forecasts and batteries) and builds the
:class:`~sims.results.SimResult`; it changes nothing in the engine. ``results_digest`` is the
determinism check (the results without their wall-time fields).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gridnode.core.ledger import LedgerState
from sims.fullnode import ChainSummary
from sims.ledger_kpis import MarketOutcome, household_kpi, slot_record, trade_rows
from sims.results import HouseholdKPI, SimResult, SlotRecord

if TYPE_CHECKING:
    from sims.inproc import _Engine, _Validator
    from sims.scenario import HouseholdSpec

__all__ = ["LatencyCounts", "TradeSink", "collect", "reference", "results_digest"]


class LatencyCounts:
    """Commit latencies in ms as a count per value: the same percentiles as the sorted list of every
    latency (:meth:`percentile`), in memory bounded by the distinct values (a latency is at most
    minutes of simulated time), not one entry per committed transaction (a year's run commits
    ~7 M of them: 56 MB as 8-byte integers)."""

    __slots__ = ("_counts", "_n")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._n = 0

    def append(self, ms: int) -> None:
        self._counts[ms] = self._counts.get(ms, 0) + 1
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def distinct(self) -> int:
        """How many distinct values are held (what the memory grows with)."""
        return len(self._counts)

    def percentile(self, p: int) -> float | None:
        """The ``p``-th percentile: item ``min(n - 1, n * p // 100)`` of the sorted latencies;
        ``None`` without any."""
        if not self._n:
            return None
        k = min(self._n - 1, (self._n * p) // 100)
        seen = 0
        for ms in sorted(self._counts):
            seen += self._counts[ms]
            if seen > k:
                return float(ms)
        raise AssertionError("unreachable: the counts sum to n")  # pragma: no cover


class TradeSink(Protocol):
    """Where the run's trade rows go, a slot at a time: a list, or ``sims.report.TradeTable``,
    which writes them to disk in row groups as they come."""

    def extend(self, rows: Iterable[dict[str, Any]], /) -> None: ...


def reference(e: _Engine) -> _Validator:
    """The live validator with the longest chain (the lowest index among equals)."""
    live = [v for v in e.validators if v.runtime is not None]
    return max(live, key=lambda v: (_height_of(v), -v.index))


def collect(
    e: _Engine, *, slots_done: int, interrupted: bool, trades_out: TradeSink | None
) -> SimResult:
    sc = e.sc
    notes: list[str] = []
    live = [v for v in e.validators if v.runtime is not None]
    ref = reference(e)
    # the sample full node: replay the reference validator's committed chain from genesis,
    # remembering the state digest at every height a validator stands at
    heights = {_height_of(v) for v in live}
    chain = e.full_node.summary(heights, through=e.first_slot + _slots_seen(e) - 1)
    # the households' KPIs cover the slots the run finished, the records every slot it reached
    household_slots = max(0, min(slots_done, _slots_seen(e)))
    replay = _replay(e, chain, trades_out, household_slots=household_slots)
    assert ref.runtime is not None
    final = ref.runtime.state
    # agreement: every validator's chain is a prefix of the reference chain (same block hash at its
    # head height) and its state digest equals the replayed state's at that height
    agreement = replay.final_digest == final.digest() and not replay.problem
    for v in live:
        assert v.runtime is not None
        h = v.runtime.state.height
        mine, theirs = v.store.block(h), ref.store.block(h)
        same_block = h == 0 or (
            mine is not None and theirs is not None and mine.block_hash == theirs.block_hash
        )
        if not same_block or v.runtime.state.digest() != replay.digests.get(h):
            agreement = False
    if len(heights) > 1:
        notes.append(
            "validators ended at different heights (the laggards' chains are prefixes of the "
            "longest, checked): " + ", ".join(f"v{v.index}={_height_of(v)}" for v in e.validators)
        )
    if not agreement:
        notes.append(
            "validators DISAGREE: heights "
            + ", ".join(f"v{v.index}={_height_of(v)}" for v in e.validators)
        )
    if replay.problem:
        notes.append(replay.problem)
    conservation = _conservation(final, replay)
    households = _households(e, replay.meters, chain.market)
    lat = e.stats.latencies_ms
    if e.stats.refused:
        notes.append(
            "transactions refused: "
            + ", ".join(f"{k}={n}" for k, n in sorted(e.stats.refused.items()))
        )
    notes.append(
        f"messages between validators: {e.stats.messages}, dropped {e.stats.dropped}; "
        f"evidence of equivocation: {sum(v.runtime.evidence for v in live if v.runtime)}"
    )
    return SimResult(
        scenario=sc.name,
        engine="inproc",
        seed=sc.seed,
        rule=sc.rule.value,
        policy=sc.policy,
        slot_seconds=sc.slot_seconds,
        slots_planned=sc.slots,
        slots_done=slots_done,
        interrupted=interrupted,
        wall_seconds=0.0,
        households=households,
        slots=replay.records,
        faults=list(e.events),
        blocks_committed=final.height,
        commit_latency_ms_p50=lat.percentile(50),
        commit_latency_ms_p99=lat.percentile(99),
        ledger_agreement=agreement,
        head_hash=final.head_hash.hex(),
        state_digest=final.digest().hex(),
        conservation_ok=conservation,
        notes=notes,
        training=sc.training,
        rounds=list(e.training.rounds),
    )


def _height_of(v: _Validator) -> int:
    return v.runtime.state.height if v.runtime is not None else -1


@dataclass(slots=True)
class _Meters:
    """Per household, over the slots :func:`_households` reports (the first ``household_slots``
    of :func:`_replay`'s): PV and load Wh, Σ |P50 − natural net| over the slots it quoted, and
    how many it quoted."""

    pv_wh: np.ndarray[Any, np.dtype[np.int64]]
    load_wh: np.ndarray[Any, np.dtype[np.int64]]
    forecast_abs_error_wh: list[int]
    forecast_slots: list[int]


@dataclass(slots=True)
class _Replay:
    final_digest: bytes
    records: list[SlotRecord]
    digests: dict[int, bytes]
    problem: str
    totals_agree: bool
    meters: _Meters


def _replay(
    e: _Engine, chain: ChainSummary, trades_out: TradeSink | None, *, household_slots: int
) -> _Replay:
    """Per-slot records: the chain's market outcome (:mod:`sims.ledger_kpis`, from the sample full
    node) and the engine's meters, forecasts and batteries; in the same pass (each slot's meters
    read once) the households' sums over the first ``household_slots`` of those slots."""
    names = {k.public_hex: spec.name for k, spec in zip(e.hh_keys, e.specs, strict=True)}
    n = len(e.specs)
    meters = _Meters(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), [0] * n, [0] * n)
    records: list[SlotRecord] = []
    for m in chain.market.slots:
        net, pv, load = e.slot_energy(m.slot)
        if trades_out is not None:
            trades_out.extend(trade_rows(m, names))
        for_households = m.slot < e.first_slot + household_slots
        if for_households:
            meters.pv_wh += pv
            meters.load_wh += load
        err = 0
        for i in range(n):
            p50 = e.stats.forecast_p50.get((m.slot, i))
            if p50 is not None:
                miss = abs(p50 - int(net[i]))
                err += miss
                if for_households:
                    meters.forecast_abs_error_wh[i] += miss
                    meters.forecast_slots[i] += 1
        charged, discharged = e.batteries.by_slot.get(m.slot, (0, 0))
        records.append(
            slot_record(
                m,
                start_s=e.clock.start(m.slot),
                orders_submitted=len(e.stats.orders_submitted.get(m.slot, set())),
                pv_wh=int(pv.sum()),
                load_wh=int(load.sum()),
                net_wh=int(net.sum()),
                forecast_abs_error_wh=err,
                battery_charged_wh=charged,
                battery_discharged_wh=discharged,
            )
        )
    return _Replay(
        chain.final_digest, records, chain.digests, chain.problem, chain.market.totals_agree, meters
    )


def _slots_seen(e: _Engine) -> int:
    """Slots whose delivery the run reached (all of them unless interrupted)."""
    return max(0, min(e.sc.slots, e.now // 1000 // e.sc.slot_seconds - e.first_slot))


def _conservation(final: LedgerState, replay: _Replay) -> bool:
    """Σ balances = 0, Σ bought = Σ sold in the ledger's totals, and its settlements sum to them."""
    balances_ok = sum(final.balances.values()) == 0
    totals = final.totals.values()
    energy_ok = sum(t.bought_p2p_wh for t in totals) == sum(t.sold_p2p_wh for t in totals)
    return balances_ok and energy_ok and replay.totals_agree


def _households(e: _Engine, meters: _Meters, market: MarketOutcome) -> list[HouseholdKPI]:
    return [
        replace(
            _kpi(e, i, spec, market, pv_wh=int(meters.pv_wh[i]), load_wh=int(meters.load_wh[i])),
            history_days=spec.history_days,
            forecast_abs_error_wh=meters.forecast_abs_error_wh[i],
            forecast_slots=meters.forecast_slots[i],
        )
        for i, spec in enumerate(e.specs)
    ]


def _kpi(
    e: _Engine, i: int, spec: HouseholdSpec, market: MarketOutcome, *, pv_wh: int, load_wh: int
) -> HouseholdKPI:
    b = e.batteries
    return household_kpi(
        e.hh_keys[i].public_hex,
        spec,
        market.households.get(e.hh_keys[i].public_hex),
        pv_wh=pv_wh,
        load_wh=load_wh,
        battery_charged_wh=b.charged_wh[i],
        battery_discharged_wh=b.discharged_wh[i],
        battery_loss_wh=b.loss_wh[i],
        battery_soc_start_wh=b.start_soc_wh[i],
        battery_soc_end_wh=b.soc_wh[i],
    )


def results_digest(result: SimResult) -> str:
    """SHA-256 of the run's results without the wall-time fields (the run's wall seconds, each
    training round's CPU seconds and their summary): for determinism checks."""
    doc = result.to_json()
    doc.pop("wall_seconds", None)
    for r in doc.get("rounds", []):
        r.pop("cpu_s", None)
    for key in ("round_cpu_s_mean", "round_cpu_s_max"):
        doc.get("training_summary", {}).pop(key, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
