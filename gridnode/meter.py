"""Where a daemon's meter data comes from, and its automatic bidding loop's inputs.

A household's daemon needs two things from its meter: the **history** to forecast from, and a
**reading** of each delivered slot (signed and sent to the ledger). Sources:

* :class:`ReplayMeter` — replays the shipped **real** measured household (UCI load + NREL PVDAQ PV,
  :func:`forecasting.data.load_shipped`) as if it were happening now: node time ``t`` maps to data time
  ``data_anchor_s + (t - node_anchor_s)``, with PV and load scaled per household. Demos and the
  simulation harness use it so communities trade on real data in real (or accelerated) time.
* :class:`FileMeter` — a household's own meter history file (``docs/forecasting.md`` schema), which an
  external meter adapter keeps appending to; readings are taken from it once a slot is covered.

* :class:`ShippedReplay` — the daemon's replay meter (``meter.source = "replay"``): the same
  replay as :func:`shipped_replay` gives, its settings checked when it is made (a replay day
  outside the data is refused at start, before anything is written) but the data read at its
  first use — in the daemon, once it serves (``docs/daemon.md``, "Start-up").

Both are deterministic functions of their inputs; neither reads the clock. Importing this module
loads no numpy (the start-up checks of a replay or file meter import it; the data's code is
imported where the data is read).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from market.errors import UsageError
from market.slots import SlotClock

if TYPE_CHECKING:
    from forecasting.series import MeterHistory

__all__ = [
    "SHIPPED_END_S",
    "SHIPPED_START_S",
    "FileMeter",
    "Meter",
    "ReplayMeter",
    "ShippedReplay",
    "shipped_replay",
]

#: The shipped data's calendar: a summer day with PV, in its local standard time (UTC-7).
DEFAULT_REPLAY_DAY = "2009-06-01"
#: The shipped series (:func:`forecasting.data.load_shipped`): its first interval's start and its
#: end (unix s), its interval and its local standard-time offset — what a replay day is checked
#: against, known without reading the data (``tests/daemon/test_startup_warm.py`` compares them
#: with it)
SHIPPED_START_S: Final = 1_176_620_400
SHIPPED_END_S: Final = 1_262_329_200
SHIPPED_STEP_S: Final = 900
SHIPPED_UTC_OFFSET_S: Final = -7 * 3600


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
    from forecasting.series import energy_wh  # noqa: PLC0415 - numpy: where data is read

    if start_s < history.start_s or end_s > history.end_s:
        return None
    first = (start_s - history.start_s) // history.step_s
    last = -(-(end_s - history.start_s) // history.step_s)
    values = history.net_w[0, first:last]
    return int(energy_wh(values, history.step_s).sum())


def _pv_load_wh(history: MeterHistory, start_s: int, end_s: int) -> tuple[int, int] | None:
    from forecasting.series import energy_wh  # noqa: PLC0415 - numpy: where data is read

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
        from forecasting.series import MeterHistory  # noqa: PLC0415 - numpy: where data is read

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
        from forecasting.series import MeterHistory  # noqa: PLC0415 - numpy: where data is read

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
    replay = ShippedReplay.of(
        node_anchor_s=node_anchor_s, day=day, day_offset=day_offset, hour=hour,
        pv_scale=pv_scale, load_scale=load_scale,
    )  # fmt: skip
    return replay.loaded()


@dataclass(frozen=True, slots=True)
class ShippedReplay(Meter):
    """The shipped household replayed (see the module docstring): :meth:`of` checks the settings
    as :func:`shipped_replay` does, without reading the data; the first reading or history asked
    of it reads the data (once per process and settings), and every answer is the
    :class:`ReplayMeter`'s that :func:`shipped_replay` returns for the same settings."""

    data_anchor_s: int
    node_anchor_s: int
    pv_scale: float = 1.0
    load_scale: float = 1.0

    @classmethod
    def of(
        cls, *, node_anchor_s: int, day: str = DEFAULT_REPLAY_DAY, day_offset: int = 0,
        hour: float = 10.0, pv_scale: float = 1.0, load_scale: float = 1.0,
    ) -> ShippedReplay:  # fmt: skip
        """The replay that makes ``node_anchor_s`` ``day + day_offset`` at ``hour`` (the data's
        local time); :class:`UsageError` for settings :func:`shipped_replay` refuses."""
        if pv_scale < 0 or load_scale < 0:
            raise UsageError("pv_scale and load_scale must be >= 0")
        try:
            base = dt.date.fromisoformat(day) + dt.timedelta(days=day_offset)
        except ValueError:
            raise UsageError(f"replay day {day!r} is not YYYY-MM-DD") from None
        midnight_utc = dt.datetime(base.year, base.month, base.day, tzinfo=dt.UTC)
        anchor = int(midnight_utc.timestamp()) - SHIPPED_UTC_OFFSET_S + int(hour * 3600)
        if not SHIPPED_START_S + 40 * 86_400 <= anchor < SHIPPED_END_S - 86_400:
            raise UsageError(
                f"replay day {base} is outside the shipped data (with 40 days of history)"
            )
        # both anchors on the data's grid, so replayed intervals line up with delivery slots
        node_anchor_s -= node_anchor_s % SHIPPED_STEP_S
        return cls(anchor, node_anchor_s, pv_scale, load_scale)

    def loaded(self) -> ReplayMeter:
        """The replay with its data read (read once per process and settings)."""
        return _shipped_meter(self)

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        return self.loaded().history_before(node_s, days=days)

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        return self.loaded().slot_net_wh(slot, clock)

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        return self.loaded().slot_pv_load_wh(slot, clock)


@functools.lru_cache(maxsize=4)
def _shipped_meter(replay: ShippedReplay) -> ReplayMeter:
    from forecasting.data import load_shipped  # noqa: PLC0415 - numpy: where data is read

    return ReplayMeter(
        load_shipped(), replay.data_anchor_s, replay.node_anchor_s, replay.pv_scale,
        replay.load_scale,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileMeter(Meter):
    """A household's own meter history file, re-read on every call (an adapter appends to it)."""

    path: Path

    def _load(self) -> MeterHistory:
        from forecasting.data import load_meter_history  # noqa: PLC0415 - numpy, pandas

        return load_meter_history(self.path)

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        h = self._load()
        end = min(h.end_s, node_s - (node_s - h.start_s) % h.step_s)
        return h.window(max(h.start_s, end - days * 86_400), end)

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        return _net_wh(self._load(), clock.start(slot), clock.end(slot))

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        return _pv_load_wh(self._load(), clock.start(slot), clock.end(slot))
