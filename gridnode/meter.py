"""Where a daemon's meter data comes from, and its automatic bidding loop's inputs.

A household's daemon needs two things from its meter: the **history** to forecast from, and a
**reading** of each delivered slot (signed and sent to the ledger). Sources:

* :class:`ReplayMeter` — replays the shipped **real** measured household (UCI load + NREL PVDAQ PV,
  :func:`forecasting.data.load_shipped`) as if it were happening now: node time ``t`` maps to data time
  ``data_anchor_s + (t - node_anchor_s)``, with PV and load scaled per household. Demos and the
  simulation harness use it so communities trade on real data in real (or accelerated) time.
* :class:`FileMeter` — a household's own meter history file (``docs/forecasting.md`` schema), which an
  external meter adapter keeps appending to; readings are taken from it once a slot is covered.
  Checked cheaply at start (:meth:`FileMeter.checked`: its header and newest rows, no numpy),
  read whole at its first use and then only as it grows (``docs/meters.md``, "A meter history
  file").

* :class:`ShippedReplay` — the daemon's replay meter (``meter.source = "replay"``): the same
  replay as :func:`shipped_replay` gives, its settings checked when it is made (a replay day
  outside the data is refused at start, before anything is written) but the data read at its
  first use — in the daemon, once it serves (``docs/daemon.md``, "Start-up").

Each is a deterministic function of its inputs (a file meter's: the file); none reads the clock.
Importing this module loads no numpy, nor do the start-up checks of a replay or file meter (the
data's code is imported where the data is read).
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from market.errors import InvalidInput, UsageError
from market.slots import SlotClock

if TYPE_CHECKING:
    from forecasting.data.meter_files import MeterFile, MeterRows
    from forecasting.series import MeterHistory

log = logging.getLogger("gridnode")

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
        if self.pv_scale == 1.0 and self.load_scale == 1.0:  # the data's own values: views of it
            return MeterHistory(
                window.start_s + self._shift(), step, window.net_w, window.pv_w, window.load_w,
                window.utc_offset_s,
            )  # fmt: skip
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
    """The replay's :class:`ReplayMeter` over the shipped data scaled once, as a whole (scaling
    a window or the whole series gives each value the same bits): its histories are then views
    of one read-only series, not new arrays at every step — which the forecaster's memos kept
    alive, ≈ 0.8 MB a year's history — and those memos find their inputs by identity."""
    from forecasting.data import load_shipped  # noqa: PLC0415 - numpy: where data is read
    from forecasting.series import MeterHistory  # noqa: PLC0415

    data = load_shipped()
    if replay.pv_scale != 1.0 or replay.load_scale != 1.0:
        assert data.pv_w is not None and data.load_w is not None
        data = MeterHistory.from_components(
            data.pv_w * replay.pv_scale, data.load_w * replay.load_scale, start_s=data.start_s,
            step_s=data.step_s, utc_offset_s=data.utc_offset_s,
        )  # fmt: skip
    return ReplayMeter(data, replay.data_anchor_s, replay.node_anchor_s)


#: the newest rows of a meter file checked at start (two days of 15-minute rows)
CHECKED_ROWS: Final = 192
#: bytes before the end of what was read that must be unchanged for a file to count as "grown"
_SEAM_BYTES: Final = 256


@dataclass(frozen=True, slots=True)
class _Read:
    """What a :class:`FileMeter` read well: the file's state then and what it made of it."""

    key: tuple[int, int]  # (size, mtime_ns) when read
    rows: MeterRows
    meter_file: MeterFile
    header: bytes  # a plain CSV's first line, newline included (else empty)
    read_to: int  # a plain CSV's bytes read: up to and with its last newline (else 0)
    seam: bytes  # the bytes just before ``read_to``


class FileMeter(Meter):
    """A household's own meter history file, which an adapter appends to (module docstring):
    :meth:`checked` checks it cheaply at start; its rows are read at the first reading or history
    asked of it and again only when the file changed (its size or modification time): a plain CSV
    file that only grew by its appended lines, a ``.csv.gz`` or Parquet file or a CSV that changed
    otherwise whole. A plain CSV's last line is read once it ends with a newline (an adapter may be
    half-way through writing it). A file that turns bad is logged once (one line naming the file,
    row and column) per change of the file: the rows read before are kept, slots after them have
    no reading (``None``) until the file is fixed; before any good read there is no history
    (:class:`InvalidInput`) and no reading."""

    __slots__ = ("_failed", "_read", "path")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._read: _Read | None = None
        #: the file's state (size, mtime_ns) when it was last refused, and the refusal
        self._failed: tuple[tuple[int, int], InvalidInput] | None = None

    @classmethod
    def checked(cls, path: Path) -> FileMeter:
        """The file meter of ``path`` once its header and newest rows pass
        :func:`forecasting.meter_rows.check_rows` (a Parquet file: its magic bytes); numpy is not
        loaded. :class:`InvalidInput` (one line naming the file, and row and column where one
        is at fault) or :class:`OSError` otherwise."""
        from forecasting.meter_rows import (  # noqa: PLC0415 - a file meter's only: pure Python
            check_rows,
            csv_cells,
            csv_layout,
            decode,
        )

        path = Path(path)
        name = path.name.lower()
        if name.endswith(".parquet"):
            with path.open("rb") as f:
                head = f.read(4)
                f.seek(max(0, path.stat().st_size - 4))
                tail = f.read(4)
            if head != b"PAR1" or tail != b"PAR1":
                raise InvalidInput(
                    reason="unparseable", subject=str(path), expected="a Parquet file",
                    found="no PAR1 magic bytes at its start and end",
                )  # fmt: skip
            return cls(path)
        if not name.endswith((".csv", ".csv.gz")):
            raise InvalidInput(
                reason="unknown_format", subject=str(path),
                expected="a .csv, .csv.gz or .parquet file", found=path.suffix or "no suffix",
            )  # fmt: skip
        data = _file_bytes(path)  # the lines found by index: a year's rows are not copied
        cut = data.find(b"\n")
        layout = csv_layout(decode(data if cut < 0 else data[:cut], path, first=True), path)
        body = len(data) if cut < 0 else cut + 1
        end = max(body, data.rfind(b"\n") + 1)  # the complete lines end there
        partial = data[end:] not in (b"", b"\r")
        empty_lines = (
            data.startswith((b"\n", b"\r\n"), body)
            or data.find(b"\n\n", body, end) >= 0
            or data.find(b"\n\r\n", body, end) >= 0
        )
        if not empty_lines:
            rows = data.count(b"\n", body, end)
            at = end - 1
            for _ in range(min(rows, CHECKED_ROWS)):  # back to the newline before the newest
                at = data.rfind(b"\n", 0, at)
            newest = data[at + 1 : end]
            checked = min(rows, CHECKED_ROWS)
        else:
            lines = [line for line in data[body:end].split(b"\n") if line not in (b"", b"\r")]
            rows, checked = len(lines), min(len(lines), CHECKED_ROWS)
            newest = b"\n".join(lines[len(lines) - checked :])
        text = decode(newest, path, first=False)
        first_row = 2 + rows - checked
        check_rows(
            layout, csv_cells(text, layout, path, line=first_row), path, first_row=first_row,
            file_rows=rows + partial,
        )  # fmt: skip
        return cls(path)

    def meter_file(self) -> MeterFile:
        """The file as last read well, read again first if it changed (class docstring)."""
        try:
            st = self.path.stat()
        except OSError as exc:
            key = (-1, -1)  # no file
            refusal = InvalidInput(reason="unreadable", subject=str(self.path), found=str(exc))
        else:
            key = (st.st_size, st.st_mtime_ns)
            read = self._read
            if read is not None and read.key == key:
                return read.meter_file
            if self._failed is None or self._failed[0] != key:
                try:
                    self._read = self._read_again(key, read)
                except InvalidInput as exc:
                    refusal = exc
                else:
                    self._failed = None
                    return self._read.meter_file
        if self._failed is None or self._failed[0] != key:  # refused in a new state: logged
            self._failed = (key, refusal)
            kept = (
                "the rows read before are kept; later slots have no reading until it is fixed"
                if self._read is not None
                else "no history and no readings until it is fixed"
            )
            log.warning("meter file not read: %s (%s)", str(refusal).splitlines()[0], kept)
        if self._read is not None:
            return self._read.meter_file
        raise self._failed[1]

    def _read_again(self, key: tuple[int, int], last: _Read | None) -> _Read:
        from forecasting.data.meter_files import (  # noqa: PLC0415 - numpy: where data is read
            csv_meter_rows,
            meter_file_of,
            more_meter_rows,
            read_meter_rows,
        )
        from forecasting.meter_rows import decode  # noqa: PLC0415
        from gridnode.parquet_child import read_cells  # noqa: PLC0415

        if not self.path.name.lower().endswith(".csv"):  # gzip and Parquet: whole
            rows = read_meter_rows(self.path, parquet=read_cells)  # Parquet: pandas in a child
            return _Read(key, rows, meter_file_of(rows), b"", 0, b"")
        try:
            with self.path.open("rb") as f:
                if last is not None and key[0] >= last.read_to:
                    header = f.read(len(last.header))
                    f.seek(last.read_to - len(last.seam))
                    if header == last.header and f.read(len(last.seam)) == last.seam:
                        new = f.read()  # grown: only the lines appended
                        new = new[: new.rfind(b"\n") + 1]
                        if not new:
                            return _Read(key, last.rows, last.meter_file, last.header,
                                         last.read_to, last.seam)  # fmt: skip
                        text = decode(new, self.path, first=False)
                        rows = more_meter_rows(last.rows, text)
                        return _Read(
                            key, rows, meter_file_of(rows), last.header, last.read_to + len(new),
                            (last.seam + new)[-_SEAM_BYTES:],
                        )  # fmt: skip
                    f.seek(0)
                data = f.read()
        except OSError as exc:
            raise InvalidInput(reason="unreadable", subject=str(self.path), found=str(exc)) from exc
        data = data[: data.rfind(b"\n") + 1]
        header = data[: data.find(b"\n") + 1]
        rows = csv_meter_rows(self.path, decode(data, self.path, first=True))
        return _Read(key, rows, meter_file_of(rows), header, len(data), data[-_SEAM_BYTES:])

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        h = self.meter_file().history
        end = min(h.end_s, node_s - (node_s - h.start_s) % h.step_s)
        return h.window(max(h.start_s, end - days * 86_400), end)

    def _history(self) -> MeterHistory | None:
        try:
            return self.meter_file().history
        except InvalidInput:  # logged by meter_file: the slot has no reading
            return None

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        h = self._history()
        return None if h is None else _net_wh(h, clock.start(slot), clock.end(slot))

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        h = self._history()
        return None if h is None else _pv_load_wh(h, clock.start(slot), clock.end(slot))


def _file_bytes(path: Path) -> bytes:
    """A meter file's bytes, gunzipped for a ``.gz``."""
    if not path.name.lower().endswith(".gz"):
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InvalidInput(reason="unparseable", subject=str(path), found=str(exc)) from exc
