"""Training in simulations (``sims.training``): the ``[training]`` keys and cold-start groups, and
in-process federated rounds — deterministic, really cold-start, and summing to the pooled model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sims.training
from forecasting.dp import DpSpend
from forecasting.federated import local_update, pooled_model
from forecasting.secagg import DpConfig
from market.errors import DataReason, SimReason, WireReason
from sims.compare import compare
from sims.inproc import _Engine, run_inproc
from sims.inproc_kpis import results_digest
from sims.report import render_html
from sims.results import SimResult
from sims.scenario import load_scenario, parse_scenario
from sims.training import federated_keys
from tests.refusals import refused

DAY_S = 86_400


def _doc(mode: str = "federated", days: float = 1, **training: Any) -> dict[str, Any]:
    """Five real homes, ``days`` days, two of them cold-start (10 days of history)."""
    return {
        "name": f"fed-{mode}",
        "seed": 5,
        "days": days,
        "start_day": "2017-05-08",
        "households": {
            "source": "citylearn",
            "homes": [2, 4, 6, 9, 11],
            "group": [
                {"name": "old", "share": 3},
                {"name": "new", "share": 2, "history_days": 10},
            ],
        },
        "training": {"mode": mode, **training},
    }


# ------------------------------------------------------------------------------ scenario keys


def test_training_is_local_by_default_and_federated_keys_parse() -> None:
    doc = _doc()
    del doc["training"]
    sc = parse_scenario(doc)
    assert sc.training == "local" and sc.dp_epsilon is None
    sc = parse_scenario(_doc(round_every_days=7, rounds_before_start=2, dp_epsilon=2.0))
    assert (sc.training, sc.round_every_days, sc.rounds_before_start) == ("federated", 7, 2)
    assert sc.dp_epsilon == 2.0 and sc.dp_delta == 1e-5
    assert sorted(s.history_days for s in sc.household_specs()) == [0, 0, 0, 10, 10]


@pytest.mark.parametrize(
    ("mode", "training", "reason", "field"),
    [
        ("centralised", {}, DataReason.UNKNOWN_VALUE, "training.mode"),
        ("local", {"round_every_days": 1}, SimReason.FEDERATED_ONLY, "training.round_every_days"),
        ("local", {"dp_epsilon": 1.0}, SimReason.FEDERATED_ONLY, "training.dp_epsilon"),
        ("federated", {"dp_delta": 1e-6}, SimReason.DP_WITHOUT_EPSILON, "training.dp_delta"),
        (
            "federated",
            {"round_every_days": 0},
            WireReason.OUT_OF_RANGE,
            "training.round_every_days",
        ),
        ("federated", {"dp_epsilon": 0}, WireReason.OUT_OF_RANGE, "training.dp_epsilon"),
        ("federated", {"rounds": 3}, DataReason.UNKNOWN_KEY, "training.rounds"),
    ],
)
def test_bad_training_keys_are_refused_naming_the_key(
    mode: str, training: dict[str, Any], reason: Any, field: str
) -> None:
    with refused(reason) as info:
        parse_scenario(_doc(mode, **training), source="x.toml")
    assert f"x.toml field '{field}'" in str(info.value)


def test_a_one_day_history_is_refused() -> None:
    doc = _doc("local")
    doc["households"]["group"][1]["history_days"] = 1
    with refused(WireReason.OUT_OF_RANGE) as info:
        parse_scenario(doc, source="x.toml")
    assert "households.group[1].history_days" in str(info.value)


# ------------------------------------------------------------------------------ cold start


def test_cold_start_households_know_only_their_days_and_bid_from_them() -> None:
    sc = parse_scenario(_doc("local"))
    e = _Engine(sc)
    t = e.training
    first = e.clock.start(e.first_slot)
    established, cold = t.cohorts
    assert (established.history_days, cold.history_days) == (0, 10)
    assert sorted(established.rows + cold.rows) == list(range(5))
    h_cold = t.history_of(cold, first)
    h_old = t.history_of(established, first)
    assert h_cold is not None and h_old is not None
    assert h_cold.steps == 10 * 24 and h_cold.households == len(cold.rows)
    assert h_old.steps > 200 * 24  # everything since the data begin (August 2016)
    # the local forecaster of a 10-day household is the fallback (profile-qr needs 30 days)
    forecasts = t.forecast(first, [e.first_slot + 1], e.clock)
    models = {i: fc.model for i, fc in enumerate(forecasts) if fc is not None}
    assert {models[i] for i in cold.rows} == {"seasonal-naive-day"}
    assert {models[i] for i in established.rows} == {"profile-qr"}
    assert not t.rounds  # local training holds no rounds


# ------------------------------------------------------------------------------ rounds


def test_a_rounds_model_is_the_pooled_model_of_the_members_plain_updates() -> None:
    sc = parse_scenario(_doc(rounds_before_start=2))
    e = _Engine(sc)
    t = e.training
    first_round = t.next_round_s
    t.catch_up(first_round)
    previous = t.model
    assert previous is not None and len(t.rounds) == 1
    second = first_round + DAY_S
    t.catch_up(second)
    assert len(t.rounds) == 2 and t.model is not None
    site = {"latitude": sc.site.latitude, "longitude": sc.site.longitude}
    blocks = []
    for cohort in t.cohorts:
        h = t.history_of(cohort, second)
        assert h is not None
        blocks.append(local_update(h, previous=previous, since_s=first_round, **site))  # type: ignore[arg-type]
    plain = pooled_model(np.concatenate(blocks), round=2, step_s=3600, previous=previous)
    assert np.array_equal(plain.total, t.model.total)
    assert plain.hash == t.model.hash
    assert t.rounds[1].model_hash == plain.hash.hex() and t.rounds[1].contributors == 5
    # each member's X25519 keys come from the seed
    assert federated_keys(sc.seed, 5) == t.keys
    # after a round every household bids with the blend (the cold-start ones have 10 days: enough)
    first = e.clock.start(e.first_slot)
    forecasts = t.forecast(first, [e.first_slot + 1], e.clock)
    assert {fc.model for fc in forecasts if fc is not None} == {"federated"}


def test_an_inproc_federated_run_is_deterministic_with_kpis_per_group() -> None:
    sc = parse_scenario(_doc(rounds_before_start=2))
    a = run_inproc(sc)
    b = run_inproc(sc)
    assert results_digest(a) == results_digest(b)
    hashes = [r.model_hash for r in a.rounds]
    assert hashes == [r.model_hash for r in b.rounds]
    assert len(hashes) == 3 and all(hashes) and len(set(hashes)) == 3  # 2 before, 1 during
    # the cold-start members (10 days at the first slot) join once they have 9 days (the first
    # round is 1 day 8 hours before the first slot at 08:00 UTC: 8.7 days)
    assert [r.members for r in a.rounds] == [3, 5, 5]
    assert all(r.contributors == r.members and r.bytes_per_member == 25_832 for r in a.rounds)
    groups = a.groups()
    assert set(groups) == {"established", "cold-start-10d"}
    assert groups["cold-start-10d"]["households"] == 2
    assert all(
        g["forecast_mae_wh"] is not None and g["forecast_slots"] > 0 for g in groups.values()
    )
    doc = a.to_json()
    assert doc["training"] == "federated" and len(doc["rounds"]) == 3
    assert doc["groups"]["established"]["households"] == 3
    assert doc["training_summary"]["bytes_per_member_per_round"] == 25_832
    page = render_html(a)
    assert "id='groups'" in page and "cold-start-10d" in page and "id='rounds'" in page
    # local vs federated side by side
    local = run_inproc(parse_scenario(_doc("local")))
    assert local.training == "local" and not local.rounds
    text = compare(local, a)
    assert "[cold-start-10d] forecast MAE (Wh/household-slot)" in text
    assert "bytes per member per round" in text


def test_results_with_rounds_survive_json(tmp_path: Any) -> None:
    sc = parse_scenario(_doc(rounds_before_start=1, days=0.25))
    result = run_inproc(sc)
    result.write_json(tmp_path / "results.json")
    back = SimResult.read_json(tmp_path / "results.json")
    assert back.rounds == result.rounds and back.training == "federated"
    assert back.groups() == result.groups()


def test_the_shipped_pair_differs_only_in_training() -> None:
    scenarios = Path(__file__).resolve().parents[2] / "sims" / "scenarios"
    local = load_scenario(scenarios / "homes-fed-local.toml")
    fed = load_scenario(scenarios / "homes-fed-federated.toml")
    assert (local.training, fed.training) == ("local", "federated")
    assert local.household_specs() == fed.household_specs()
    assert sum(s.history_days == 14 for s in fed.household_specs()) == 6
    same = dataclasses.replace(fed, training="local", name=local.name, source=local.source)
    assert same == local


def test_a_scenarios_dp_epsilon_is_each_households_total_over_the_runs_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[training] dp_epsilon`` means what the daemon's does: the total over every round the run
    holds, composed exactly (forecasting.dp), not a budget per round."""
    used: list[DpConfig] = []

    def recording(*args: Any, **kwargs: Any) -> DpConfig:
        used.append(DpConfig(*args, **kwargs))
        return used[-1]

    monkeypatch.setattr(sims.training, "DpConfig", recording)
    sc = parse_scenario(_doc(rounds_before_start=2, dp_epsilon=4.0))
    result = run_inproc(sc)
    assert len(result.rounds) == 3 and len(used) == 3
    assert all(d.rounds == 3 for d in used)
    spend = DpSpend()
    for d in used:
        spend = spend.after(d.noise_multiplier)
    assert spend.epsilon(sc.dp_delta) == pytest.approx(4.0, rel=1e-6)
