"""The register rules (gridnode.meters.registers): properties against a naive reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridnode.meters.registers import (
    MAX_PLAUSIBLE_POWER_W,
    Break,
    Held,
    PowerIntegrator,
    Rules,
    Sample,
    Tracked,
    advance,
    held_at,
    slot_energy_wh,
    to_mwh,
    to_w,
)
from market.errors import InvalidInput, UsageError

ROOT = Path(__file__).resolve().parents[2]


def reference_held(samples: list[Sample], boundary_s: int, rules: Rules) -> tuple[int, int] | None:
    """Naive: the last sample at or before the boundary, if young enough -> (value, index)."""
    before = [(i, s) for i, s in enumerate(samples) if s.t_ms <= boundary_s * 1000]
    if not before:
        return None
    i, s = before[-1]
    if boundary_s * 1000 - s.t_ms > rules.max_age_s * 1000:
        return None
    return s.value_mwh, i


def stream(
    samples: list[Sample], rules: Rules
) -> tuple[Tracked | None, dict[int, Held], list[Break | None]]:
    last: Tracked | None = None
    rows: dict[int, Held] = {}
    breaks = []
    for s in samples:
        last, fixed, why = advance(last, s, rules)
        breaks.append(why)
        for h in fixed:
            assert h.boundary_s not in rows, "a boundary is fixed once"
            rows[h.boundary_s] = h
    return last, rows, breaks


#: (ms to the next sample, mean power in W until it): a household's plausible consumption
steps = st.lists(
    st.tuples(st.integers(1, 400_000), st.integers(0, 40_000)), min_size=1, max_size=60
)


@st.composite
def series(draw: st.DrawFn) -> tuple[list[Sample], Rules]:
    rules = Rules(
        slot_seconds=draw(st.sampled_from([60, 300, 900])),
        max_age_s=draw(st.sampled_from([0, 30, 120, 600])),
    )
    t = draw(st.integers(1_700_000_000_000, 1_700_000_900_000))
    v = draw(st.integers(0, 10**12))
    samples = [Sample(t, v)]
    for dt, power_w in draw(steps):
        t, v = t + dt, v + power_w * dt // 3600
        samples.append(Sample(t, v))
    return samples, rules


@given(series())
@settings(max_examples=300, deadline=None)
def test_streamed_boundary_values_equal_the_naive_last_sample_before_each_boundary(
    data: tuple[list[Sample], Rules],
) -> None:
    samples, rules = data
    last, rows, breaks = stream(samples, rules)
    assert breaks[0] is Break.FIRST and all(b is None for b in breaks[1:])
    step = rules.slot_seconds
    first_b = samples[0].t_ms // 1000 // step * step
    end_ms = samples[-1].t_ms + 2 * rules.max_age_s * 1000 + step * 2000
    for b in range(first_b, end_ms // 1000 + 1, step):
        expected = reference_held(samples, b, rules)
        got = rows.get(b)
        if got is None and b * 1000 >= samples[-1].t_ms:  # after the last sample: the query path
            assert held_at(last, b, b * 1000, rules) is None, "not final before time passes it"
            got = held_at(last, b, b * 1000 + 1, rules)
        assert (got.value_mwh if got else None) == (expected[0] if expected else None), b
        if got is not None:
            assert got.sample_ms <= b * 1000 and got.segment == 0


@given(series())
@settings(max_examples=300, deadline=None)
def test_consecutive_slots_sum_exactly_to_the_register_difference(
    data: tuple[list[Sample], Rules],
) -> None:
    samples, rules = data
    _, rows, _ = stream(samples, rules)
    known = sorted(rows)
    step = rules.slot_seconds
    # every run of consecutive boundaries with values: the slots between telescope
    for a in known:
        total = 0
        b = a
        while b + step in rows:
            energy = slot_energy_wh(rows[b], rows[b + step])
            assert energy is not None and energy >= 0
            total += energy
            b += step
            assert total == rows[b].value_mwh // 1000 - rows[a].value_mwh // 1000


@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=30), st.sampled_from([60, 900]))
@settings(max_examples=200, deadline=None)
def test_samples_on_the_boundaries_give_exactly_their_differences(
    values: list[int], slot: int
) -> None:
    rules = Rules(slot_seconds=slot, max_age_s=slot)
    cumulative = [sum(values[: i + 1]) * 1000 for i in range(len(values))]  # whole Wh registers
    samples = [Sample((100 + i) * slot * 1000, v) for i, v in enumerate(cumulative)]
    _, rows, _ = stream(samples, rules)
    for i in range(len(samples) - 2):
        a, b = (100 + i) * slot, (101 + i) * slot
        assert slot_energy_wh(rows[a], rows[b]) == values[i + 1]


def test_a_decrease_or_another_meter_breaks_the_segment_and_the_slot_across_it_is_none() -> None:
    rules = Rules(slot_seconds=60, max_age_s=60)
    samples = [Sample(60_000 * k + 1, 1_000_000 + 5_000 * k) for k in range(5)]
    samples.append(Sample(60_000 * 5 + 1, 3_000))  # counter reset in slot 5
    samples += [Sample(60_000 * k + 1, 3_000 + 4_000 * (k - 5)) for k in range(6, 9)]
    samples.append(Sample(60_000 * 9 + 1, 999_999_999, source="other meter"))
    samples.append(Sample(60_000 * 10 + 1, 999_999_999 + 2_000, source="other meter"))
    last, rows, breaks = stream(samples, rules)
    assert [b for b in breaks if b] == [Break.FIRST, Break.DECREASE, Break.SOURCE]
    # the sample at 60k + 1 ms holds boundary 60(k+1) s: slot k runs from sample k-1 to sample k
    energy = {k: slot_energy_wh(rows.get(60 * k), rows.get(60 * (k + 1))) for k in range(1, 10)}
    assert energy == {1: 5, 2: 5, 3: 5, 4: 5, 5: None, 6: 4, 7: 4, 8: 4, 9: None}
    assert slot_energy_wh(rows[600], held_at(last, 660, 660_001, rules)) == 2  # the new meter's
    assert last is not None and last.segment == 2


def test_an_implausible_jump_breaks_the_segment() -> None:
    prev = Sample(1_000, 0)
    ok_mwh = MAX_PLAUSIBLE_POWER_W * 1_000 // 3600  # exactly the bound over one second
    assert advance(Tracked(prev, 0), Sample(2_000, ok_mwh), Rules(60, 60))[2] is None
    assert advance(Tracked(prev, 0), Sample(2_000, ok_mwh + 1), Rules(60, 60))[2] is Break.JUMP


def test_a_gap_costs_only_the_slots_whose_boundaries_have_no_recent_sample() -> None:
    rules = Rules(slot_seconds=60, max_age_s=30)
    samples = [Sample(t * 1000, t * 10_000) for t in (50, 100, 110)]  # silent from 110 s...
    samples += [Sample(t * 1000, t * 10_000) for t in (290, 300, 350, 400)]  # ... to 290 s
    _, rows, _ = stream(samples, rules)
    assert sorted(rows) == [60, 120, 300, 360]  # 180 and 240 are too far from any sample
    assert slot_energy_wh(rows[60], rows[120]) == 600  # 110 s value - 50 s value, in Wh
    assert slot_energy_wh(rows.get(120), rows.get(180)) is None
    assert slot_energy_wh(rows[300], rows[360]) == 500


def test_stamps_must_increase() -> None:
    last = Tracked(Sample(5_000, 1), 0)
    with pytest.raises(UsageError, match="must increase"):
        advance(last, Sample(5_000, 2), Rules(60, 60))


def test_units_convert_exactly_to_mwh() -> None:
    assert to_mwh("12345.678", "kWh") == 12_345_678_000
    assert to_mwh(12345.678, "kWh") == 12_345_678_000  # via str: no binary float residue
    assert to_mwh(1234, "Wh") == 1_234_000
    assert to_mwh(60, "Wmin") == 1_000
    assert to_mwh(1, "Wmin") == 17  # 16.67 mWh, round half even
    assert to_w("-1.5", "kW") == -1500
    for bad, reason in (
        ("unavailable", "not_a_number"),
        (True, "not_a_number"),
        ("nan", "not_finite"),
    ):
        with pytest.raises(InvalidInput) as exc:
            to_mwh(bad, "kWh")
        assert exc.value.reason == reason
    with pytest.raises(InvalidInput) as neg:
        to_mwh(-1, "Wh")
    assert neg.value.reason == "negative"
    with pytest.raises(UsageError, match="energy unit"):
        to_mwh(1, "MWh")


@given(
    st.lists(st.tuples(st.integers(1, 20_000), st.integers(-9_000, 9_000)), min_size=1, max_size=50)
)
def test_power_integration_holds_each_power_until_the_next_sample(
    steps_: list[tuple[int, int]],
) -> None:
    integ = PowerIntegrator(max_age_ms=10_000).step(0, 0)
    t, p = 0, 0
    import_wms = export_wms = 0
    gaps = 0
    for dt, power in steps_:
        if dt > 10_000:
            gaps += 1
        else:
            import_wms += max(p * dt, 0)
            export_wms += max(-p * dt, 0)
        t, p = t + dt, power
        integ = integ.step(t, power)
    imp, exp = integ.samples()
    assert (imp.value_mwh, exp.value_mwh) == (import_wms // 3600, export_wms // 3600)
    assert imp.source == exp.source == f"power#{gaps}"


def test_the_register_rules_are_pure() -> None:
    """No I/O and no clock in the rules module (same bans as the pure cores)."""
    from tests.test_layering import violations

    path = ROOT / "gridnode" / "meters" / "registers.py"
    assert violations(path, "gridnode/core") == []
