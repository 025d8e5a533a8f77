"""The daemon's public-holiday calendars: a small file in its data directory, built by a child.

A household that names its country (``household.holiday_country``, ``holiday_subdiv``) needs the
day numbers of its public holidays (:mod:`forecasting.holidaycal`). Importing the `holidays`
package's countries to build them costs ≈ 380 modules, ≈ 15 MB of RSS for as long as the daemon
runs (≈ 13 MB measured on an idle household) and ≈ 0.1 s of CPU at every start. So the daemon never imports it; rules of this module:

* **The file**: ``DATA/holidays-<country>[-<subdiv>].json`` (``DATA`` is ``node.data_dir``; a
  code with characters other than letters, digits, ``_`` and ``-`` is spelt in hex), holding the
  country and subdivision, the package's *key*, each year's day numbers and their SHA-256. A read answers when
  the file is this calendar's, its key is the installed package's and it holds every year asked.
* **The key** changes with the installed package and is read without importing it: the SHA-256
  of the ``RECORD`` of its ``holidays-*.dist-info`` (every installed file with its hash; the
  package's ``version.py`` reads its version from that metadata, so its own bytes do not change
  with the version); a package with no ``RECORD`` (a source checkout) is keyed by the size and
  modification time of every file of it.
* **A miss** (no file, another calendar's, another key, a year it lacks, a file that does not
  parse, does not hold day numbers or whose days do not match their SHA-256) builds the calendar in a **short-lived child process**
  (``python -m gridnode.holidaycache``, a JSON request on stdin, a JSON answer on stdout) for the
  union of the years asked, the years the file held (under the same key) and :data:`WINDOW_YEARS`
  either side of today's year, and writes the file atomically (a temporary file, fsynced,
  renamed: two daemons that miss at once each write a whole file and the later one stays). The
  file is written only into a directory that exists (the config check of a first start may
  come before the store makes ``DATA``; the calendar the child built is kept for the process and
  written at the next ask), and a write that fails (a read-only disk) only costs the next start
  a child again.
* **Unknown country or subdivision**: the child says so and the caller raises the one line of
  :func:`forecasting.holidaycal.unknown_calendar` (a file is never written for it). A child that
  fails otherwise (killed, no interpreter) is logged and the calendar is built in this process:
  correct, only heavier.
* The days are exactly :func:`forecasting.holidaycal.build`'s (the union of the years' own
  calendars, :func:`forecasting.holidaycal.year_days`; tested against the in-process build).

Who uses it: the config check (:func:`gridnode.config.load_config`: a household's country is
validated through the file, so the first start builds it and later ones only read it) and the
daemon, which installs :func:`install` for its process at start (:func:`gridnode.daemon.run_daemon`),
so its forecaster's fits and predictions read the same file. Simulations and the other commands
build in-process as before.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import json
import logging
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from forecasting import holidaycal
from gridnode.files import write_atomic
from market.errors import UsageError

__all__ = ["WINDOW_YEARS", "cache_path", "check", "holiday_days", "install", "package_key"]

log = logging.getLogger(__name__)

#: a miss builds at least the years this far either side of today's (a year of history and a
#: day ahead need at most last year, this year and the next)
WINDOW_YEARS: Final = 2
#: the file's format (a file in another is a miss)
FORMAT: Final = 1
#: seconds a child may take to build (a start that waits longer builds in-process instead)
CHILD_TIMEOUT_S: Final = 120.0
_SAFE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: calendars this process has read or built: (file, country, subdiv, package key) -> each year's
#: days (one entry in a daemon)
_known: dict[tuple[Path, str, str | None, str], dict[int, tuple[int, ...]]] = {}
#: files of calendars this process built but could not write yet (their directory was missing)
_unwritten: set[Path] = set()
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Calendar:
    """A calendar as the file holds it."""

    country: str
    subdiv: str | None
    key: str
    years: dict[int, tuple[int, ...]]


def _code(text: str) -> str:
    return text if _SAFE.fullmatch(text) else "x" + text.encode().hex()


def _this_year() -> int:
    return dt.datetime.now(dt.UTC).year


def cache_path(cache_dir: Path, country: str, subdiv: str | None) -> Path:
    """The calendar's file in ``cache_dir``."""
    name = _code(country) if subdiv is None else f"{_code(country)}-{_code(subdiv)}"
    return cache_dir / f"holidays-{name}.json"


@functools.cache
def package_key() -> str | None:
    """A key of the installed `holidays` package that changes when it does, found without
    importing it (module rules); ``None`` when it is not installed. Memoised per process."""
    spec = importlib.util.find_spec("holidays")
    if spec is None or spec.origin is None:
        return None
    pkg = Path(spec.origin).parent
    h = hashlib.sha256()
    records = sorted(pkg.parent.glob("holidays-*.dist-info/RECORD"))
    if records:
        for record in records:
            h.update(record.parent.name.encode() + b"\0" + record.read_bytes())
    else:
        for path in sorted(pkg.rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(pkg)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read(path: Path) -> _Calendar | None:
    """The file's calendar, or ``None`` when it is missing or is not one (a miss)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    country, subdiv, key, raw = (doc.get(k) for k in ("country", "subdiv", "key", "years"))
    if not (
        isinstance(country, str)
        and (subdiv is None or isinstance(subdiv, str))
        and isinstance(key, str)
        and isinstance(raw, dict)
    ):
        return None
    years: dict[int, tuple[int, ...]] = {}
    for year, days in raw.items():
        if not (year.isdigit() and isinstance(days, list)):
            return None
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in days):
            return None
        years[int(year)] = tuple(days)
    if doc.get("sum") != _checksum(years):  # a flipped digit, an edit
        return None
    return _Calendar(country, subdiv, key, years)


def _checksum(years: dict[int, tuple[int, ...]]) -> str:
    """SHA-256 of the years' days in a canonical text."""
    text = ";".join(f"{y}:{','.join(map(str, years[y]))}" for y in sorted(years))
    return hashlib.sha256(text.encode()).hexdigest()


def _write_pending(path: Path, cal: _Calendar) -> None:
    """Write ``cal`` to ``path`` if this process built it and has not written it yet (the caller
    holds :data:`_lock`)."""
    if path in _unwritten and _write(path, cal):
        _unwritten.discard(path)


def _write(path: Path, cal: _Calendar) -> bool:
    """Write the file atomically; ``False`` when its directory is not there yet (the store makes
    it) or the write failed (logged)."""
    doc = {
        "format": FORMAT,
        "country": cal.country,
        "subdiv": cal.subdiv,
        "key": cal.key,
        "years": {str(y): list(cal.years[y]) for y in sorted(cal.years)},
        "sum": _checksum(cal.years),
    }
    if not path.parent.is_dir():  # not made yet (the store makes it): written at the next ask
        return False
    try:
        write_atomic(path, json.dumps(doc, separators=(",", ":")) + "\n")
    except UsageError as exc:  # a read-only or full disk: the next start builds again
        log.warning("holiday calendar not cached: %s", exc)
        return True  # not again in this process
    return True


def _build_in_child(
    country: str, subdiv: str | None, years: set[int]
) -> dict[int, tuple[int, ...]] | None:
    """Each year's day numbers, built by ``python -m gridnode.holidaycache``; ``None`` when the
    child failed (logged). Raises the one line of an unknown calendar."""
    import subprocess  # noqa: PLC0415 - only a miss starts a child

    from gridnode.child import last_words, run_module  # noqa: PLC0415

    request = json.dumps({"country": country, "subdiv": subdiv, "years": sorted(years)})
    try:
        done = run_module(
            "gridnode.holidaycache", stdin=request.encode(), timeout_s=CHILD_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("holiday calendar: the child failed (%s); building it in this process", exc)
        return None
    try:
        if done.returncode != 0:
            raise ValueError(f"exit {done.returncode}")
        answer = json.loads(done.stdout)
        if answer.get("unknown") is True:
            raise holidaycal.unknown_calendar(country, subdiv)
        built = {int(y): tuple(int(d) for d in days) for y, days in answer["years"].items()}
        if set(built) != years:
            raise ValueError("not the years asked")
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning(
            "holiday calendar: the child ended %s; building it in this process", last_words(done)
        )
        return None
    return built


def holiday_days(
    country: str, subdiv: str | None, years: range, *, cache_dir: Path, write: bool = True
) -> frozenset[int]:
    """The day numbers of the public holidays of ``country`` (``subdiv``) in ``years``, from the
    file in ``cache_dir`` or this process's calendars, else built by a child and cached (module
    rules); exactly :func:`forecasting.holidaycal.build`'s. ``write=False``: a calendar built
    now is kept for this process only, until :func:`install` (or a later ask) writes it."""
    key = package_key()
    if key is None:  # not installed: the in-process build says so as it always did
        return holidaycal.build(country, subdiv, years)
    asked = set(years)
    path = cache_path(cache_dir, country, subdiv)
    with _lock:
        known = _known.get((path, country, subdiv, key))
        if known is None or not asked <= known.keys():
            cal = _read(path)
            ours = cal is not None and (cal.country, cal.subdiv, cal.key) == (country, subdiv, key)
            on_disk = cal.years if cal is not None and ours else {}
            if ours and asked <= on_disk.keys():
                known = on_disk
            else:
                today = _this_year()
                window = range(today - WINDOW_YEARS, today + WINDOW_YEARS + 1)
                want = asked | on_disk.keys() | (known or {}).keys() | set(window)
                built = _build_in_child(country, subdiv, want)
                if built is None:
                    return holidaycal.build(country, subdiv, years)
                known = built
                _unwritten.add(path)
            _known[(path, country, subdiv, key)] = known
        if write:
            _write_pending(path, _Calendar(country, subdiv, key, known))
    return frozenset(d for y in asked for d in known[y])


def check(country: str, subdiv: str | None, *, cache_dir: Path) -> None:
    """Refuse an unknown country or subdivision (:func:`forecasting.holidaycal.unknown_calendar`)
    through the file in ``cache_dir``: the first check builds the calendar, the next ones read
    it. Nothing is written (a config check that refuses must leave the disk as it was): a daemon
    writes the built calendar at :func:`install`, once its start-up checks have passed."""
    this_year = _this_year()
    holiday_days(country, subdiv, range(this_year, this_year + 1), cache_dir=cache_dir, write=False)


def install(cache_dir: Path) -> None:
    """Make this process's forecasters take their calendars from ``cache_dir`` (the daemon, at
    start, once its start-up checks have passed); they never import the `holidays` package then.
    The calendars the config check built are written now."""
    holidaycal.use_source(functools.partial(holiday_days, cache_dir=cache_dir))
    with _lock:
        for (path, country, subdiv, key), years in list(_known.items()):
            _write_pending(path, _Calendar(country, subdiv, key, years))


def main() -> int:
    """The child: a request ``{"country", "subdiv", "years"}`` on stdin, each year's day numbers
    (``{"years": {...}}``) or ``{"unknown": true}`` on stdout."""
    import warnings  # noqa: PLC0415

    warnings.simplefilter("ignore")  # "available only from 2001 to 2035": those years are empty
    req = json.loads(sys.stdin.read())
    try:
        years = holidaycal.year_days(req["country"], req["subdiv"], req["years"])
    except UsageError:
        out: dict[str, object] = {"unknown": True}
    else:
        out = {"years": {str(y): days for y, days in years.items()}}
    sys.stdout.write(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
