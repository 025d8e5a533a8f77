"""Public holidays as local day numbers, and where a process takes them from.

Rules of this module:

* A calendar is a frozenset of **day numbers** (days since 1970-01-01, the local calendar) of the
  public holidays the `holidays` package lists for a country (and subdivision) in some years.
  :func:`holiday_days` is what the forecasters ask (:func:`forecasting.profile_qr._holiday_days`
  memoises it); :func:`year_days` gives the same per year, which is what a cache stores.
* **The package builds a calendar year by year**, and a year's holidays do not depend on which
  other years are built with it (an observed day that falls in the previous year belongs to the
  year that observes it): the calendar of several years is the union of theirs, as one
  multi-year build gives it (tested for every country the package knows and its first two
  subdivisions over four years, and by property over any years for six calendars).
* **Where the calendars come from**: in this process by default (:func:`build`; importing the
  package's countries costs ≈ 380 modules, ≈ 15 MB and ≈ 0.1 s of CPU, which a long-running
  process then carries). A driver may install another :data:`Source` with :func:`use_source` —
  the daemon installs :mod:`gridnode.holidaycache` (a small file in its data directory, built by
  a short-lived child process), so it never imports the package. A source must return exactly
  the sets :func:`build` returns; the default stays in-process (simulations, the CLI, tests).
* An unknown country or subdivision is one :class:`~market.errors.UsageError` line, from every
  source.

Pure apart from the import of the package: no clock, no files (a source that reads files is a
shell's).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from typing import Final

from market.errors import UsageError

__all__ = ["Source", "build", "holiday_days", "unknown_calendar", "use_source", "year_days"]

#: a calendar source: (country, subdiv, years) -> the day numbers of their public holidays
Source = Callable[[str, str | None, range], frozenset[int]]

_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
_source: Source | None = None
_source_lock = threading.Lock()


def unknown_calendar(country: str, subdiv: str | None) -> UsageError:
    """The one line every source raises for a country / subdivision the package does not know."""
    return UsageError(f"no holiday calendar for country {country!r} / {subdiv!r}")


def _day_number(day: dt.date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def build(country: str, subdiv: str | None, years: Iterable[int]) -> frozenset[int]:
    """The day numbers of ``country``'s (``subdiv``'s) public holidays in ``years``, built in
    this process (one multi-year build of the package, as the forecasters always did)."""
    import holidays  # noqa: PLC0415 - only a household that names its country needs it

    try:
        cal = holidays.country_holidays(country, subdiv=subdiv, years=list(years))
    except NotImplementedError:
        raise unknown_calendar(country, subdiv) from None
    return frozenset(_day_number(d) for d in cal)


def year_days(country: str, subdiv: str | None, years: Iterable[int]) -> dict[int, list[int]]:
    """:func:`build` one year at a time: each year's day numbers, sorted (what a cache of the
    calendar stores; their union over any years is :func:`build` of those years)."""
    import holidays  # noqa: PLC0415 - only a household that names its country needs it

    out: dict[int, list[int]] = {}
    for year in sorted(set(years)):
        try:
            cal = holidays.country_holidays(country, subdiv=subdiv, years=[year])
        except NotImplementedError:
            raise unknown_calendar(country, subdiv) from None
        out[year] = sorted(_day_number(d) for d in cal)
    return out


def use_source(source: Source | None) -> Source | None:
    """Install ``source`` for this process (``None``: build in-process again); returns the one
    it replaces."""
    global _source  # one source per process, installed by its driver at start
    with _source_lock:
        old, _source = _source, source
    return old


def holiday_days(country: str, subdiv: str | None, years: range) -> frozenset[int]:
    """The day numbers of the public holidays of ``country`` (``subdiv``) in ``years``, from
    the installed source (:func:`use_source`), else built in this process."""
    source = _source
    if source is None:
        return build(country, subdiv, years)
    return source(country, subdiv, years)
