"""The real-daemon engine measures a real-home scenario's own hours: the community starts a warm-up
ahead of ``start_day``/``start_hour``, so every policy's run (and the in-process engine's) covers the
same data slots, and the share of perfect foresight compares like with like (pure functions; the
daemon runs themselves are in ``benchmarks/economics.py --daemons``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from sims.daemon_engine import homes_clock, warmup_s
from sims.homes import data_utc_offset_s
from sims.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "sims" / "scenarios" / "homes-small.toml"


def _data_start_s(day: str, hour: float, offset_s: int) -> int:
    d = dt.date.fromisoformat(day)
    midnight = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())
    return midnight - offset_s + int(hour * 3600)


def test_the_warm_up_covers_the_daemons_start_up_in_whole_slots() -> None:
    sc = load_scenario(SMALL)
    for daemons, speedup in ((10, 360.0), (10, 60.0), (50, 360.0)):
        w = warmup_s(sc, daemons, speedup)
        assert w % sc.slot_seconds == 0
        # run_daemons waits up to 60 s + 3 s per daemon for the daemons to be ready, in wall time
        assert w >= (60 + 3 * daemons) * speedup
    assert warmup_s(sc, 10, 1.0) == 0  # real time: the wall clock's date, no warm-up
    shipped = load_scenario(ROOT / "sims" / "scenarios" / "small.toml")
    assert warmup_s(shipped, 10, 360.0) == 0  # the shipped household's replay anchors itself


def test_node_time_at_start_is_the_data_start_minus_the_warm_up() -> None:
    sc = load_scenario(SMALL)
    start = _data_start_s(sc.start_day, sc.start_hour, data_utc_offset_s(sc))
    now = 1_800_000_000
    for speedup in (60.0, 360.0):
        lead = warmup_s(sc, 10, speedup)
        genesis, shift = homes_clock(sc, now, speedup, lead_s=lead)
        assert shift % (7 * 86_400) == 0  # whole weeks: weekdays and hours kept
        node_now = genesis + (now - genesis) * speedup  # the sped-up node clock at wall time now
        assert abs(node_now - (start - lead + shift)) <= speedup  # within a wall second
        # the first measured slot is the scenario's start: a whole hour of node time
        assert (start + shift) % sc.slot_seconds == 0
        later = dataclasses.replace(sc, start_hour=6.0)
        g2, s2 = homes_clock(later, now, speedup, lead_s=lead)
        assert s2 == shift
        assert abs((g2 + (now - g2) * speedup) - (start + 6 * 3600 - lead + shift)) <= speedup
