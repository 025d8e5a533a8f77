"""The household's local time: its time zone, and delivery slots as local times with their offset.

Rules of this module:

* A zone is named in ``node.timezone`` (``gridnode.toml``) as an IANA name (``"Europe/Amsterdam"``,
  daylight saving followed), a fixed UTC offset (``"+02:00"``, ``"-07:00"``, ``"UTC"``), or
  ``"local"`` (the default: the machine's zone — ``TZ`` if it names a zone, else
  ``/etc/localtime``, else UTC). The replayed shipped data is in its local *standard* time, UTC−7:
  the demo runs its households at ``"-07:00"``.
* Everything people read (the status page, the client commands, the simulation report) shows a time
  as a local wall-clock time **with its offset** (``13:15 UTC−07:00``); the API also keeps unix
  ``*_ms`` / ``*_s`` fields, which are unambiguous. A slot is shown as its delivery interval
  (start–end, local).
* Pure: functions take unix seconds; nothing here reads the clock. (Resolving ``"local"`` reads the
  environment and ``/etc/localtime`` once, when the zone is parsed.)
* Only the standard library (the client commands import this).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from market.errors import UsageError

__all__ = ["LocalTime", "format_offset", "zone_named"]

_OFFSET = re.compile(r"(?:UTC)?([+\-−])(\d{1,2})(?::?(\d{2}))?")


def format_offset(seconds: int) -> str:
    """``-25200`` → ``"UTC−07:00"`` (a true minus sign; ``"UTC+00:00"`` for zero)."""
    sign = "−" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _local_zone() -> tuple[str, dt.tzinfo]:
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return name, ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    path = Path("/etc/localtime")
    try:
        with path.open("rb") as f:
            return "local", ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return "UTC", dt.UTC


@dataclass(frozen=True, slots=True)
class LocalTime:
    """A time zone and how its times are shown (see the module rules)."""

    name: str  # as configured ("Europe/Amsterdam", "-07:00", "UTC", "local")
    zone: dt.tzinfo

    @classmethod
    def parse(cls, text: str) -> LocalTime:
        """The zone ``text`` names; :class:`UsageError` (one line) if it names none."""
        name = text.strip()
        if name.lower() == "local":
            _, zone = _local_zone()
            return cls("local", zone)
        if name.upper() in ("UTC", "Z", "GMT"):
            return cls("UTC", dt.UTC)
        m = _OFFSET.fullmatch(name)
        if m is not None:
            hours, minutes = int(m[2]), int(m[3] or 0)
            if hours > 14 or minutes > 59:
                raise UsageError(f"time zone offset {text!r} is out of range (-14:00..+14:00)")
            seconds = (hours * 60 + minutes) * 60 * (1 if m[1] == "+" else -1)
            return cls(name, dt.timezone(dt.timedelta(seconds=seconds)))
        try:
            return cls(name, ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(
                f"time zone {text!r} is unknown: use an IANA name like 'Europe/Amsterdam', "
                "an offset like '+02:00', 'UTC' or 'local'"
            ) from None

    def at(self, unix_s: float) -> dt.datetime:
        """``unix_s`` as an aware local datetime."""
        return dt.datetime.fromtimestamp(unix_s, tz=self.zone)

    def offset_s(self, unix_s: float) -> int:
        offset = self.at(unix_s).utcoffset()
        return 0 if offset is None else int(offset.total_seconds())

    def offset(self, unix_s: float) -> str:
        """The offset in force at ``unix_s``: ``"UTC−07:00"``."""
        return format_offset(self.offset_s(unix_s))

    def clock(self, unix_s: float) -> str:
        """``"13:15"``."""
        return self.at(unix_s).strftime("%H:%M")

    def stamp(self, unix_s: float) -> str:
        """``"2026-06-01 13:15 UTC−07:00"``."""
        return f"{self.at(unix_s):%Y-%m-%d %H:%M} {self.offset(unix_s)}"

    def naive(self, unix_s: float) -> str:
        """``"2026-06-01 13:15:00"``: the local wall-clock time without offset (chart axes)."""
        return self.at(unix_s).strftime("%Y-%m-%d %H:%M:%S")

    def span(self, start_s: int, end_s: int) -> str:
        """A delivery interval's clock times: ``"13:15–13:30"``."""
        return f"{self.clock(start_s)}–{self.clock(end_s)}"

    def interval(self, start_s: int, end_s: int) -> str:
        """A delivery interval: ``"2026-06-01 13:15–13:30 UTC−07:00"``."""
        a, b = self.at(start_s), self.at(end_s)
        end = f"{b:%H:%M}" if a.date() == b.date() or b == _midnight(b) else f"{b:%Y-%m-%d %H:%M}"
        return f"{a:%Y-%m-%d %H:%M}–{end} {self.offset(start_s)}"

    def date(self, unix_s: float) -> dt.date:
        """The local calendar day of ``unix_s``."""
        return self.at(unix_s).date()

    def day_start_s(self, day: dt.date) -> int:
        """Unix seconds of local midnight starting ``day``."""
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp())


@functools.lru_cache(maxsize=8)
def zone_named(name: str) -> LocalTime:
    """:meth:`LocalTime.parse`, remembered (``"local"`` reads the machine's zone once)."""
    return LocalTime.parse(name)


def _midnight(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)
