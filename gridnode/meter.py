"""Where a daemon's meter data comes from, and its automatic bidding loop's inputs.

A household's daemon needs two things from its meter: the **history** to forecast from, and a
**reading** of each delivered slot (signed and sent to the ledger). Sources:

* :class:`ReplayMeter` — replays the shipped **real** measured household (UCI load + NREL PVDAQ PV,
  :func:`forecasting.data.load_shipped`) as if it were happening now: node time ``t`` maps to data time
  ``data_anchor_s + (t - node_anchor_s)``, with PV and load scaled per household. Demos and the
  simulation harness use it so communities trade on real data in real (or accelerated) time.
* :class:`FileMeter` — a household's own meter history file (``docs/forecasting.md`` schema), which an
  external meter adapter keeps appending to; readings are taken from it once a slot is covered.

Both are deterministic functions of their inputs; neither reads the clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from forecasting.data import load_meter_history, load_shipped
from forecasting.series import MeterHistory, energy_wh
from market.errors import UsageError
from market.slots import SlotClock

__all__ = ["FileMeter", "Meter", "ReplayMeter", "shipped_replay"]

#: The shipped data's calendar: a summer day with PV, in its local standard time (UTC-7).
DEFAULT_REPLAY_DAY = "2009-06-01"


class Meter:
    """The interface: history before a node time, and the net energy of a delivered slot."""

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        raise NotImplementedError

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        """Measured net energy (+ export) of ``slot``; ``None`` if the meter has no data for it."""
        raise NotImplementedError

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        """PV production and consumption of ``slot`` (Wh), where the meter measures them apart;
        ``None`` otherwise (a grid meter alone sees only the net). The status page shows them."""
        return None


def _net_wh(history: MeterHistory, start_s: int, end_s: int) -> int | None:
    if start_s < history.start_s or end_s > history.end_s:
        return None
    first = (start_s - history.start_s) // history.step_s
    last = -(-(end_s - history.start_s) // history.step_s)
    values = history.net_w[0, first:last]
    return int(energy_wh(values, history.step_s).sum())


def _pv_load_wh(history: MeterHistory, start_s: int, end_s: int) -> tuple[int, int] | None:
    if history.pv_w is None or history.load_w is None:
        return None
    if start_s < history.start_s or end_s > history.end_s:
        return None
    first = (start_s - history.start_s) // history.step_s
    last = -(-(end_s - history.start_s) // history.step_s)
    pv = int(energy_wh(history.pv_w[0, first:last], history.step_s).sum())
    load = int(energy_wh(history.load_w[0, first:last], history.step_s).sum())
    return pv, load


@dataclass(frozen=True, slots=True)
class ReplayMeter(Meter):
    """A real measured series replayed in node time (see the module docstring)."""

    data: MeterHistory  # one household, the whole shipped series
    data_anchor_s: int
    node_anchor_s: int
    pv_scale: float = 1.0
    load_scale: float = 1.0

    def _shift(self) -> int:
        return self.node_anchor_s - self.data_anchor_s

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        data_end = node_s - self._shift()
        step = self.data.step_s
        data_end -= (data_end - self.data.start_s) % step
        window = self.data.window(max(self.data.start_s, data_end - days * 86_400), data_end)
        assert window.pv_w is not None and window.load_w is not None
        return MeterHistory.from_components(
            window.pv_w * self.pv_scale,
            window.load_w * self.load_scale,
            start_s=window.start_s + self._shift(),
            step_s=step,
            utc_offset_s=window.utc_offset_s,
        )

    def _scaled(self, slot: int, clock: SlotClock) -> tuple[MeterHistory, int, int]:
        start, end = clock.start(slot) - self._shift(), clock.end(slot) - self._shift()
        window = self.data.window(start - start % self.data.step_s, end + (-end) % self.data.step_s)
        assert window.pv_w is not None and window.load_w is not None
        scaled = MeterHistory.from_components(
            window.pv_w * self.pv_scale,
            window.load_w * self.load_scale,
            start_s=window.start_s,
            step_s=window.step_s,
        )
        return scaled, start, end

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        return _net_wh(*self._scaled(slot, clock))

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        return _pv_load_wh(*self._scaled(slot, clock))


def shipped_replay(
    *, node_anchor_s: int, day: str = DEFAULT_REPLAY_DAY, day_offset: int = 0, hour: float = 10.0,
    pv_scale: float = 1.0, load_scale: float = 1.0,
) -> ReplayMeter:  # fmt: skip
    """Replay the shipped household so that ``node_anchor_s`` is ``day + day_offset`` at ``hour``
    (the data's local time), with PV and load scaled."""
    if pv_scale < 0 or load_scale < 0:
        raise UsageError("pv_scale and load_scale must be >= 0")
    data = load_shipped()
    try:
        base = dt.date.fromisoformat(day) + dt.timedelta(days=day_offset)
    except ValueError:
        raise UsageError(f"replay day {day!r} is not YYYY-MM-DD") from None
    midnight_utc = dt.datetime(base.year, base.month, base.day, tzinfo=dt.UTC)
    anchor = int(midnight_utc.timestamp()) - data.utc_offset_s + int(hour * 3600)
    if not data.start_s + 40 * 86_400 <= anchor < data.end_s - 86_400:
        raise UsageError(f"replay day {base} is outside the shipped data (with 40 days of history)")
    # both anchors on the data's grid, so replayed intervals line up with delivery slots
    node_anchor_s -= node_anchor_s % data.step_s
    return ReplayMeter(data, anchor, node_anchor_s, pv_scale, load_scale)


@dataclass(frozen=True, slots=True)
class FileMeter(Meter):
    """A household's own meter history file, re-read on every call (an adapter appends to it)."""

    path: Path

    def _load(self) -> MeterHistory:
        return load_meter_history(self.path)

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        h = self._load()
        end = min(h.end_s, node_s - (node_s - h.start_s) % h.step_s)
        return h.window(max(h.start_s, end - days * 86_400), end)

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        return _net_wh(self._load(), clock.start(slot), clock.end(slot))

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        return _pv_load_wh(self._load(), clock.start(slot), clock.end(slot))
