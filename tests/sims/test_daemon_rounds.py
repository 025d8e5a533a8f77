"""Federated round records in the real-daemon engine (issue 13): the same per-round KPIs as the
in-process engine's (``sims.results.RoundRecord``), from the ledger's model commitments joined with
the aggregators' ``fedrounds.jsonl``.

* Fast: :func:`sims.daemon_collect.round_records` joins real ledger commitments with real
  aggregator records (:meth:`gridnode.daemon.federation.RoundReport.record`): a committed round,
  an aborted one, a model whose aggregator left no record, a line cut short by a kill.
* Slow (``-m slow``, ~3 minutes): 4 validators and 4 real-home households run
  ``sims/scenarios/homes-fed-daemons.toml``; the daily round at 00:00 UTC node time falls inside
  the run, so the result's ``rounds`` holds it: the model the ledger committed, all 4 households
  contributing, each member's masked update on the wire, the round's wall time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from forecasting.federated import FRAC_BITS, Layout
from gridnode.config import load_genesis
from gridnode.core.ledger import CommittedModel
from gridnode.daemon.federation import ROUNDS_FILE, RoundReport
from sims.daemon_collect import read_store, round_records
from sims.daemon_engine import run_daemons
from sims.results import SimResult
from sims.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "homes-fed-daemons.toml"
ONE = 1 << FRAC_BITS


def _hash(n: int) -> bytes:
    return hashlib.sha256(f"model {n}".encode()).digest()


def _write(validator_dir: Path, *reports: RoundReport, tail: str = "") -> None:
    (validator_dir / "data").mkdir(parents=True)
    lines = [json.dumps(r.record(86_400)) + "\n" for r in reports]
    (validator_dir / "data" / ROUNDS_FILE).write_text("".join(lines) + tail, encoding="utf-8")


def test_round_records_join_the_ledgers_commitments_with_the_aggregators_records(
    tmp_path: Path,
) -> None:
    committed = RoundReport(1, 20_000, invited=5, answered=5, joined=5, contributors=4, attempts=2,
                            outcome="committed", model=_hash(1), wall_s=6.25, bytes_in=130_000,
                            bytes_out=9_000, member_bytes={"a": 25_900, "b": 26_000})  # fmt: skip
    aborted = RoundReport(2, 20_001, invited=5, answered=2, joined=2, outcome="aborted: 2 joined",
                          wall_s=5.0, bytes_in=40, member_bytes={"a": 20, "b": 20})  # fmt: skip
    _write(tmp_path / "v0", committed)
    _write(tmp_path / "v1", aborted, tail='{"round": 3, "per')  # killed while writing
    validation = (100 * ONE, 40 * ONE, 1, 2, 3, 50 * ONE, 80 * ONE)
    models = {
        _hash(1): CommittedModel(1, bytes(32), 4, validation, "gn.fedqr.1", "v0", 7),
        _hash(2): CommittedModel(2, _hash(1), 3, validation, "gn.fedqr.1", "v2", 9),  # no record
    }
    records = round_records([tmp_path / "v0", tmp_path / "v1", tmp_path / "v2"], models)
    assert [(r.round, r.model_hash) for r in records] == [
        (1, _hash(1).hex()), (2, _hash(2).hex()), (2, ""),
    ]  # fmt: skip
    first, second, failed = records
    assert (first.at_s, first.members, first.contributors, first.attempts) == (
        20_000 * 86_400, 5, 4, 2,
    )  # fmt: skip
    assert (first.bytes_per_member, first.total_bytes, first.cpu_s) == (26_000, 130_000, 6.25)
    assert first.validation_samples == 100
    assert first.validation_mae == pytest.approx(0.4)
    assert first.validation_skill == pytest.approx(0.2)
    # the ledger's commitment counts even without its aggregator's record
    assert (second.contributors, second.total_bytes, second.cpu_s) == (3, 0, 0.0)
    assert (failed.contributors, failed.members, failed.cpu_s) == (0, 2, 5.0)
    # the results' training summary reads them as the in-process engine's, through results.json
    sc = load_scenario(SCENARIO)
    result = SimResult(
        scenario=sc.name, engine="daemons", seed=sc.seed, rule=sc.rule.value, policy=sc.policy,
        slot_seconds=sc.slot_seconds, slots_planned=0, slots_done=0, interrupted=False,
        wall_seconds=0.0, training="federated", rounds=records,
    )  # fmt: skip
    result.write_json(tmp_path / "results.json")
    again = SimResult.read_json(tmp_path / "results.json")
    assert again.rounds == records
    summary = again.training_summary()
    assert summary["rounds"] == 3 and summary["rounds_completed"] == 2
    assert summary["last_model_hash"] == _hash(2).hex()


@pytest.mark.net
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_federated_daemon_run_records_its_round(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIO)
    run = run_daemons(sc, tmp_path / "d", speedup=120, slots=2)
    r = run.result
    assert r.ledger_agreement is True, r.notes
    assert r.training == "federated"
    done = [rec for rec in r.rounds if rec.model_hash]
    assert done, (r.rounds, r.notes)
    first = done[0]
    # what the ledger committed: one validator's store, read from genesis
    genesis = load_genesis(tmp_path / "d" / "node0" / "genesis.toml")
    replay = read_store(tmp_path / "d" / "node0" / "data" / "node.sqlite", genesis, slots=(0, 0))
    ledger = {h.hex(): m for h, m in replay.state.models.items()}
    assert first.model_hash in ledger and ledger[first.model_hash].round == first.round == 1
    assert first.contributors == first.members == sc.households
    # each member answered with at least its masked update (8 bytes per entry, hourly steps)
    assert first.bytes_per_member >= 8 * Layout(3600).length
    assert first.total_bytes >= sc.households * 8 * Layout(3600).length
    assert first.cpu_s > 0  # the round's wall seconds (5 s invitation window included)
    assert first.at_s % 86_400 == 0
    # cold-start households took part with their 14 days, and the results compare the groups
    groups = r.groups()
    assert set(groups) == {"established", "cold-start-14d"}, groups
    assert groups["cold-start-14d"]["households"] == 2
    assert groups["cold-start-14d"]["forecast_slots"] > 0
    # the rounds survive results.json
    r.write_json(tmp_path / "results.json")
    again = SimResult.read_json(tmp_path / "results.json")
    assert again.rounds == r.rounds
    assert again.training_summary()["rounds_completed"] == len(done)
