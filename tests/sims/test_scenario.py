"""Scenario files: shipped examples load, every mistake is a one-line error naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.clearing import Rule
from market.errors import InvalidInput
from sims.scenario import Scenario, _apportion, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sims" / "scenarios"


def test_shipped_examples_load() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.toml"))
    assert names == [
        "batteries.toml",
        "faults.toml",
        "homes-fed-daemons.toml",
        "homes-fed-federated.toml",
        "homes-fed-local.toml",
        "homes-small.toml",
        "homes-spring.toml",
        "homes-summer.toml",
        "homes-winter.toml",
        "small.toml",
        "town.toml",
        "year.toml",
    ]
    batteries = load_scenario(SCENARIOS / "batteries.toml")
    specs = batteries.household_specs()
    assert sum(s.battery_kwh == 5.0 and s.battery_kw == 2.5 for s in specs) == 3
    assert all(s.pv_kwp > 0 for s in specs if s.battery_kwh > 0)
    homes_small = load_scenario(SCENARIOS / "homes-small.toml")  # the real-daemon engine's
    assert (homes_small.households, homes_small.slots, homes_small.home_source) == (
        6,
        48,
        "citylearn",
    )
    assert {s.home for s in homes_small.household_specs()} == {
        f"citylearn-{i}" for i in (2, 3, 4, 5, 9, 11)
    }
    small = load_scenario(SCENARIOS / "small.toml")
    assert (small.households, small.days, small.slots, small.validators) == (12, 1.0, 96, 4)
    assert small.rule is Rule.PAY_AS_CLEAR and small.policy == "forecast"
    faults = load_scenario(SCENARIOS / "faults.toml")
    assert {f.kind for f in faults.faults} == {"drop", "partition", "crash", "byzantine", "skew"}
    town = load_scenario(SCENARIOS / "town.toml")
    assert (town.households, town.slots, town.validators) == (1000, 7 * 96, 7)
    assert town.cadence == "fixed"
    year = load_scenario(SCENARIOS / "year.toml")
    assert (year.households, year.slots, year.cadence) == (100, 365 * 96, "adaptive")
    assert (small.model, town.model, town.refit_days, small.refit_days) == (
        "profile-qr", "profile-qr", 28, 1)  # fmt: skip


@pytest.mark.parametrize("season", ["winter", "spring", "summer"])
def test_the_real_home_scenarios_are_distinct_real_homes(season: str) -> None:
    sc = load_scenario(SCENARIOS / f"homes-{season}.toml")
    specs = sc.household_specs()
    assert sc.home_source == "citylearn" and sc.slot_seconds == 3600 and sc.days >= 7
    assert len({s.home for s in specs}) == len(specs) >= 15  # every household its own home
    assert {s.pv_scale for s in specs} == {0.0, 1.0}  # with its own PV, or without
    assert all(s.pv_kwp in (4.0, 5.0) for s in specs if s.pv_scale == 1.0)
    assert sc.site.latitude == pytest.approx(34.0922) and sc.site.holiday_country == "US"
    assert sc.policy == "forecast" and sc.model == "profile-qr" and sc.netting.value == "none"


def test_overrides_replace_the_file_values() -> None:
    s = load_scenario(SCENARIOS / "small.toml", households=30, days=0.5, seed=99)
    assert (s.households, s.days, s.slots, s.seed) == (30, 0.5, 48, 99)
    assert len(s.household_specs()) == 30


def test_defaults_fill_an_almost_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "tiny.toml"
    p.write_text('name = "tiny"\n', encoding="utf-8")
    s = load_scenario(p)
    assert isinstance(s, Scenario)
    assert (s.name, s.households, s.validators, s.slot_seconds) == ("tiny", 12, 4, 900)


def test_household_draw_is_deterministic_and_follows_the_groups() -> None:
    s = load_scenario(SCENARIOS / "small.toml")
    a, b = s.household_specs(), s.household_specs()
    assert a == b
    assert sum(h.group == "prosumer" for h in a) == 6
    assert all(h.pv_kwp == 0 for h in a if h.group == "consumer")
    assert all(3.0 <= h.pv_kwp <= 7.0 for h in a if h.group == "prosumer")
    assert len({h.day_offset for h in a}) == len(a)  # distinct real days while the spread allows
    other = load_scenario(SCENARIOS / "small.toml", seed=8).household_specs()
    assert other != a


@given(
    shares=st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=6),
    n=st.integers(min_value=0, max_value=5000),
)
def test_apportion_is_exact_and_fair(shares: list[float], n: int) -> None:
    counts = _apportion(shares, n)
    assert sum(counts) == n
    total = sum(shares)
    for share, count in zip(shares, counts, strict=True):
        assert abs(count - share * n / total) < 1 + 1e-9


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "t", "households": {"count": 4}}
    doc.update(overrides)
    return doc


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        (_doc(validators=3), "validators", "out_of_range"),
        (_doc(validators=8), "validators", "out_of_range"),
        (_doc(colour="red"), "colour", "unknown_key"),
        (_doc(days="two"), "days", "not_a_number"),
        (_doc(start_day="June"), "start_day", "not_a_date"),
        (_doc(market={"rule": "pay-as-you-go"}), "market.rule", "unknown_value"),
        (_doc(market={"slot_seconds": 1000}), "market.slot_seconds", "not_whole_intervals"),
        (_doc(market={"gate": 300}), "market.gate", "unknown_key"),
        (
            _doc(tariffs={"retail_micro_per_kwh": 100, "feed_in_micro_per_kwh": 200}),
            "tariffs.feed_in_micro_per_kwh",
            "above_retail",
        ),
        (_doc(households={"count": 1}), "households.count", "out_of_range"),
        (
            _doc(households={"count": 4, "group": [{"pv_kwp": [5, 2]}]}),
            "households.group[0].pv_kwp",
            "out_of_range",
        ),
        (
            _doc(households={"count": 4, "group": [{"pv": 3}]}),
            "households.group[0].pv",
            "unknown_key",
        ),
        (
            _doc(households={"count": 4, "group": [{"battery_kwh": 5}]}),
            "households.group[0].battery_kw",
            "battery_without_power",
        ),
        (_doc(bidding={"policy": "psychic"}), "bidding.policy", "unknown_value"),
        (_doc(bidding={"model": "psychic"}), "bidding.model", "unknown_value"),
        (_doc(site={"latitude": 52.5}), "site.longitude", "missing"),
        (_doc(site={"latitude": 95, "longitude": 0}), "site.latitude", "out_of_range"),
        (_doc(site={"holiday_country": 7}), "site.holiday_country", "not_a_string"),
        (_doc(site={"holiday_country": "XX"}), "site.holiday_country", "unknown_calendar"),
        (
            _doc(site={"holiday_country": "US", "holiday_subdiv": "ZZ"}),
            "site.holiday_subdiv",
            "unknown_calendar",
        ),
        (_doc(households={"count": 4, "source": "mars"}), "households.source", "unknown_value"),
        (
            _doc(households={"count": 4, "homes": [1, 2]}),
            "households.homes",
            "not_for_this_source",
        ),
        (
            _doc(households={"source": "citylearn", "homes": [1, 18]}),
            "households.homes",
            "bad_homes",
        ),
        (
            _doc(households={"source": "citylearn", "homes": [1, 1]}),
            "households.homes",
            "bad_homes",
        ),
        (
            _doc(households={"source": "citylearn"}, market={"slot_seconds": 900}),
            "market.slot_seconds",
            "not_whole_intervals",
        ),
        (
            _doc(households={"source": "citylearn", "group": [{"pv_kwp": 3}]}),
            "households.group[0].pv_kwp",
            "not_for_this_source",
        ),
        (_doc(households={"source": "meter-folder"}), "households.folder", "missing"),
        (_doc(network={"drop_rate": 0.9}), "network.drop_rate", "out_of_range"),
        (_doc(faults=[{"kind": "meteor", "at_s": 0}]), "faults[0].kind", "unknown_value"),
        (
            _doc(faults=[{"kind": "partition", "at_s": 0, "duration_s": 60, "groups": [[0, 1]]}]),
            "faults[0].groups",
            "not_groups",
        ),
        (
            _doc(
                faults=[
                    {"kind": "partition", "at_s": 0, "duration_s": 60, "groups": [[0, 1], [1, 9]]}
                ]
            ),
            "faults[0].groups",
            "bad_indices",
        ),
        (_doc(faults=[{"kind": "crash", "at_s": 0}]), "faults[0].validator", "missing"),
        (
            _doc(faults=[{"kind": "crash", "at_s": 999_999, "validator": 0}]),
            "faults[0].at_s",
            "out_of_range",
        ),
        (
            _doc(
                faults=[
                    {"kind": "byzantine", "at_s": 0, "validator": 0},
                    {"kind": "byzantine", "at_s": 0, "validator": 1},
                ]
            ),
            "faults",
            "too_many_byzantine",
        ),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(
    doc: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_scenario(doc, source="x.toml")
    err = info.value
    assert (err.field, err.reason) == (key, reason)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"x.toml field {key!r}: {reason}")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_scenario(tmp_path / "missing.toml")
    assert info.value.reason == "unreadable"
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        load_scenario(bad)
    assert info.value.reason == "not_toml"
    assert "\n" not in str(info.value)
