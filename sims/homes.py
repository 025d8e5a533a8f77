"""The homes a scenario's households live in: their measured meter data, from whichever source.

Rules of this module:

* **Sources** (a scenario's ``households.source``):

  - ``"shipped"``: the one real household shipped in ``forecasting/data`` (UCI load + NREL PVDAQ
    system 50 PV, 15-minute, 2007-04-15 → 2009-12-31, UTC−7). Every household replays it on its
    own day (its ``day_offset``) through :class:`gridnode.meter.ReplayMeter`, as the daemon does.
  - ``"citylearn"``: the 17 real CityLearn homes (Fontana, California, hourly, 2016-08-01 →
    2017-07-31, UTC−8 standard time; ``forecasting.data.load_citylearn_homes``). PV sizes 4 or 5
    kWp (:data:`CITYLEARN_KWP`, the wheel's ``schema.json``). The flagged homes are used as
    measured: home 15 is a consumer (its PV is nearly empty), 14 has a small PV yield, 7, 12 and 15
    have long stretches of near-zero load (an empty house is a real meter; the market and the
    forecaster must cope with one).
  - ``"meter-folder"``: one home per meter file in a folder (``forecasting.data.load_meter_folder``:
    the documented schema; a bad file is one line naming the file, the row and the column), put on
    one grid of the slot length by ``align_histories`` (so the files must be at least that fine).
    Its kWp is its peak PV power (0 for net-only meters); its calendar is the first file's offset.

* **Time**: for ``citylearn`` and ``meter-folder`` the simulation runs on the homes' own calendar
  (simulated unix time = the data's). Household ``i`` lives in home ``i mod H`` (the scenario's
  ``home_ids``); its ``day_offset`` (``−7`` per reuse of a home) replays the home's data that many
  days earlier, so a reused home keeps its weekdays. PV is scaled by the household's ``pv_scale``
  and load by its ``load_scale``; meters that hold only the net are used as they are.
* :func:`community_history` gives the engine every household's history as one
  :class:`~forecasting.series.MeterHistory` (one row each) over ``[first_s, end_s)``, cut to where
  every household has data (a one-line error names the households and days when the scenario asks
  for data the homes do not have).
* Reading files is this module's I/O, and :func:`write_meter_file`, with which the daemon engine
  writes each household's meter file.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # no pandas-stubs in the venv

from forecasting.data import (
    CITYLEARN_LATITUDE,
    CITYLEARN_LONGITUDE,
    SHIPPED_LATITUDE,
    SHIPPED_LONGITUDE,
    SHIPPED_UTC_OFFSET_S,
    align_histories,
    load_citylearn_homes,
    load_meter_folder,
    load_shipped,
)
from forecasting.series import MeterHistory
from gridnode.household.forecast import Site
from gridnode.meter import ReplayMeter
from market.errors import InvalidInput, SimReason, UsageError

if TYPE_CHECKING:
    from sims.scenario import HouseholdSpec, Scenario, _HomesInfo

__all__ = [
    "CITYLEARN_KWP",
    "citylearn_info",
    "community_history",
    "data_utc_offset_s",
    "folder_info",
    "home_histories",
    "shipped_info",
    "write_meter_file",
]

#: PV size (kWp) of each CityLearn home (``schema.json``'s ``nominal_power``; data README).
CITYLEARN_KWP: Final = {h: 4.0 if h in (1, 2, 3, 5, 6, 7, 8, 9) else 5.0 for h in range(1, 18)}
#: The shipped household's site: Golden, Colorado (its PV) and a French household's habits (its
#: load: public holidays of France).
SHIPPED_SITE: Final = Site(SHIPPED_LATITUDE, SHIPPED_LONGITUDE, "FR")
CITYLEARN_SITE: Final = Site(CITYLEARN_LATITUDE, CITYLEARN_LONGITUDE, "US", "CA")


def shipped_info() -> _HomesInfo:
    from sims.scenario import _HomesInfo  # noqa: PLC0415 - the scenario module imports this one

    return _HomesInfo((), (), 900, False, SHIPPED_SITE, "2009-06-01")


def citylearn_info(homes: tuple[int, ...]) -> _HomesInfo:
    from sims.scenario import _HomesInfo  # noqa: PLC0415

    ids = tuple(f"citylearn-{h}" for h in homes)
    return _HomesInfo(ids, tuple(CITYLEARN_KWP[h] for h in homes), 3600, False, CITYLEARN_SITE,
                      "2017-04-10")  # fmt: skip


def folder_info(folder: Path) -> _HomesInfo:
    """The homes of a folder of meter files (reads and checks every file)."""
    from sims.scenario import _HomesInfo  # noqa: PLC0415

    folder = folder.resolve()
    histories = _folder(str(folder), _mtime(folder))
    step = max(h.step_s for h in histories.values())
    ids = tuple(histories)
    kwp = tuple(
        round(float(h.pv_w.max()) / 1000, 2) if h.pv_w is not None else 0.0
        for h in histories.values()
    )
    net_only = not all(h.has_components for h in histories.values())
    start = max(h.start_s + h.utc_offset_s for h in histories.values())
    first_day = dt.datetime.fromtimestamp(start // 86_400 * 86_400 + 35 * 86_400, dt.UTC).date()
    return _HomesInfo(ids, kwp, max(900, step), net_only, Site(), first_day.isoformat(),
                      str(folder))  # fmt: skip


def _mtime(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
    except OSError:
        return 0.0


@functools.lru_cache(maxsize=4)
def _folder(folder: str, mtime: float) -> dict[str, MeterHistory]:
    del mtime  # part of the cache key: a changed folder is read again
    return load_meter_folder(folder)


@functools.lru_cache(maxsize=2)
def _citylearn(step_s: int) -> MeterHistory:
    return load_citylearn_homes(step_s=step_s)


def home_histories(scenario: Scenario) -> dict[str, MeterHistory]:
    """Each home's whole measured history (one row) by home id, on a grid of the slot length
    (``citylearn``, ``meter-folder``)."""
    if scenario.home_source == "citylearn":  # hourly: the scenario's slots are an hour long
        data = _citylearn(3600)
        return {hid: data.select([int(hid.split("-")[1]) - 1]) for hid in scenario.home_ids}
    if scenario.home_source == "meter-folder":
        folder = Path(scenario.meter_folder)
        files = _folder(str(folder), _mtime(folder))
        aligned = align_histories(files, step_s=scenario.slot_seconds)
        return {name: aligned.select([i]) for i, name in enumerate(files)}
    raise UsageError(f"home_histories is for real homes, not source {scenario.home_source!r}")


def data_utc_offset_s(scenario: Scenario) -> int:
    """The local standard-time offset of the scenario's data: its ``start_day`` is a day of it."""
    if scenario.home_source == "shipped":
        return SHIPPED_UTC_OFFSET_S
    return next(iter(home_histories(scenario).values())).utc_offset_s


def community_history(
    scenario: Scenario,
    specs: Sequence[HouseholdSpec],
    *,
    first_s: int,
    end_s: int,
    node_anchor_s: int,
    start_s: int,
) -> MeterHistory:
    """Every household's history over ``[first_s, end_s)`` of simulated time (one row each, in
    ``specs`` order), cut at the start to where every household has data (module rules).
    ``start_s`` is the simulated time of the first slot; ``node_anchor_s`` is where the shipped
    replay anchors its households' ``start_day`` at ``start_hour`` (the in-process engine's first
    slot)."""
    if scenario.home_source == "shipped":
        return _shipped_history(scenario, specs, first_s, end_s, node_anchor_s)
    homes = home_histories(scenario)
    shift = node_anchor_s - start_s  # simulated time - the data's time (0 unless renumbered)
    data_first = max(
        homes[s.home].start_s + shift - s.day_offset * 86_400 for s in specs
    )  # the latest data start
    first = max(first_s, data_first)
    step = scenario.slot_seconds
    first += (-(first - first_s)) % step
    windows = []
    for spec in specs:
        h = homes[spec.home]
        lag = shift - spec.day_offset * 86_400  # simulated = data time + lag
        lo, hi = first - lag, end_s - lag
        if hi > h.end_s or start_s - first < 2 * 86_400:
            raise _outside(scenario, spec, h, hi)
        windows.append(h.window(lo, hi))
    offset = next(iter(homes.values())).utc_offset_s
    pv_rows, load_rows = [], []
    for w, spec in zip(windows, specs, strict=True):
        if w.pv_w is None or w.load_w is None:
            break
        pv_rows.append(w.pv_w[0] * spec.pv_scale)
        load_rows.append(w.load_w[0] * spec.load_scale)
    else:
        return MeterHistory.from_components(
            pv_rows, load_rows, start_s=first, step_s=step,  # copied once (_shipped_history)
            utc_offset_s=offset,
        )  # fmt: skip
    return MeterHistory.from_net(
        [w.net_w[0] for w in windows], start_s=first, step_s=step, utc_offset_s=offset
    )


def _outside(scenario: Scenario, spec: HouseholdSpec, h: MeterHistory, end_s: int) -> InvalidInput:
    def day(t: int) -> str:
        return dt.datetime.fromtimestamp(t + h.utc_offset_s, dt.UTC).date().isoformat()

    return InvalidInput(
        reason=SimReason.OUTSIDE_THE_DATA,
        subject=scenario.source or scenario.name,
        field="start_day",
        expected=(
            f"days the homes' data cover with 2 days of history before them ({spec.name} lives "
            f"in {spec.home}, {spec.day_offset} days shifted; its data run {day(h.start_s)} -> "
            f"{day(h.end_s - 1)})"
        ),
        found=f"{scenario.start_day} for {scenario.days:g} days (to {day(end_s - 1)})",
    )


def _shipped_history(
    scenario: Scenario,
    specs: Sequence[HouseholdSpec],
    first_s: int,
    end_s: int,
    node_anchor_s: int,
) -> MeterHistory:
    """The shipped household replayed for each household (its day offset, PV and load scaled),
    exactly as a daemon's replay meter would (``gridnode.meter.ReplayMeter``)."""
    data = load_shipped()
    day = dt.date.fromisoformat(scenario.start_day)
    meters = []
    for spec in specs:
        d = day + dt.timedelta(days=spec.day_offset)
        midnight = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())
        anchor = midnight - data.utc_offset_s + int(scenario.start_hour * 3600)
        shift = node_anchor_s - anchor  # simulated time − the data's time
        if anchor < data.start_s + 2 * 86_400 or end_s - shift > data.end_s:
            raise _outside(scenario, spec, data, end_s - shift)
        meters.append(ReplayMeter(data, anchor, node_anchor_s, spec.pv_scale, spec.load_scale))
    # every household's data start, in simulated time; the history starts where all have data
    first = max([first_s, *(data.start_s + m.node_anchor_s - m.data_anchor_s for m in meters)])
    first += (-(first - first_s)) % data.step_s
    span_days = -(-(end_s - first) // 86_400)
    pv_rows, load_rows = [], []
    for meter in meters:
        h = meter.history_before(end_s, days=span_days).window(first, end_s)
        assert h.pv_w is not None and h.load_w is not None
        pv_rows.append(h.pv_w[0])
        load_rows.append(h.load_w[0])
    # the rows as lists: from_components copies them into one array (np.stack first copied
    # every row twice; a town's year of history is ≈ 300 MB per array: the start-up, which the
    # first forecaster fit waits for, took 3.3-3.9 CPU-s instead of 0.7-0.9; docs/sims.md, Scale)
    return MeterHistory.from_components(
        pv_rows,
        load_rows,
        start_s=first,
        step_s=data.step_s,
        utc_offset_s=data.utc_offset_s,
    )


def write_meter_file(history: MeterHistory, path: Path, *, shift_s: int) -> None:
    """Write one household's history (row 0) as a meter file (``docs/forecasting.md`` schema:
    ISO ``timestamp`` at the history's local standard-time offset, so whoever reads it gets the
    household's calendar back, and ``pv_w``/``load_w`` or ``net_w``), its times moved by
    ``shift_s`` (the daemon engine puts the data in node time)."""
    t = history.start_s + shift_s + np.arange(history.steps, dtype=np.int64) * history.step_s
    offset = pd.Timedelta(seconds=history.utc_offset_s)
    stamps = pd.to_datetime(t, unit="s", utc=True) + offset
    sign = "+" if history.utc_offset_s >= 0 else "-"
    hours, minutes = divmod(abs(history.utc_offset_s) // 60, 60)
    cols: dict[str, object] = {
        "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{hours:02d}:{minutes:02d}"
    }
    if history.pv_w is not None and history.load_w is not None:
        cols |= {"pv_w": history.pv_w[0], "load_w": history.load_w[0]}
    else:
        cols["net_w"] = history.net_w[0]
    pd.DataFrame(cols).to_parquet(path, index=False)
