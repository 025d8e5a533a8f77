"""The daemon's holiday calendar file (:mod:`gridnode.holidaycache`): a hit never imports the
`holidays` package, a miss builds in a child and writes the file, a stale or broken file is
rebuilt, and the days are the in-process build's. Real files, real child processes."""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forecasting import holidaycal
from forecasting.data import SHIPPED_UTC_OFFSET_S, load_citylearn_homes
from forecasting.profile_qr import ProfileQR, _holiday_days
from gridnode import holidaycache
from gridnode.config import create_data_dir, load_config, update_config
from market.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
THIS_YEAR = holidaycache._this_year()
WINDOW = set(
    range(THIS_YEAR - holidaycache.WINDOW_YEARS, THIS_YEAR + holidaycache.WINDOW_YEARS + 1)
)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """Each test starts like a new process: no calendars known, none waiting to be written."""
    holidaycache._known.clear()
    holidaycache._unwritten.clear()
    _holiday_days.cache_clear()
    yield
    holidaycache._known.clear()
    holidaycache._unwritten.clear()
    _holiday_days.cache_clear()


def children_ran(before: tuple[float, int]) -> bool:
    """Whether a child process ended since ``before`` (:func:`mark`)."""
    return mark() != before


def mark() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime, ru.ru_minflt)


def days(country: str, subdiv: str | None, years: range, d: Path) -> frozenset[int]:
    return holidaycache.holiday_days(country, subdiv, years, cache_dir=d)


def file_years(path: Path) -> set[int]:
    doc = json.loads(path.read_text())
    assert doc["key"] == holidaycache.package_key()
    return {int(y) for y in doc["years"]}


def test_a_miss_builds_in_a_child_and_writes_the_file_a_hit_reads_it(tmp_path: Path) -> None:
    before = mark()
    got = days("US", "CA", range(2016, 2018), tmp_path)
    assert got == holidaycal.build("US", "CA", range(2016, 2018))
    assert children_ran(before)
    path = holidaycache.cache_path(tmp_path, "US", "CA")
    assert path.name == "holidays-US-CA.json"
    assert file_years(path) == {2016, 2017} | WINDOW
    stamp = path.stat().st_mtime_ns
    holidaycache._known.clear()  # a new start: the file answers, no child
    before = mark()
    for years in (range(2017, 2018), range(THIS_YEAR - 1, THIS_YEAR + 2), range(2016, 2016)):
        assert days("US", "CA", years, tmp_path) == holidaycal.build("US", "CA", years)
    assert not children_ran(before)
    assert path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize(
    ("country", "subdiv"), [("US", None), ("DE", "BY"), ("GB", "ENG"), ("FR", None), ("JP", None)]
)
def test_the_file_gives_the_in_process_calendar(
    tmp_path: Path, country: str, subdiv: str | None
) -> None:
    days(country, subdiv, range(1995, 2041), tmp_path)  # one child builds the whole span
    holidaycache._known.clear()
    before = mark()
    for first in range(1995, 2041, 3):
        for n in (0, 1, 2, 5):
            years = range(first, min(first + n, 2041))
            assert days(country, subdiv, years, tmp_path) == holidaycal.build(
                country, subdiv, years
            )
    assert not children_ran(before)


def test_years_outside_the_file_are_built_and_added(tmp_path: Path) -> None:
    days("US", None, range(THIS_YEAR, THIS_YEAR + 1), tmp_path)
    path = holidaycache.cache_path(tmp_path, "US", None)
    assert file_years(path) == WINDOW
    holidaycache._known.clear()
    assert days("US", None, range(2008, 2010), tmp_path) == holidaycal.build(
        "US", None, range(2008, 2010)
    )
    assert file_years(path) == WINDOW | {2008, 2009}


def _rewrite(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _change_a_day(path: Path) -> None:
    """A flipped digit in the first day number: still a well-formed calendar, but not the one
    that was written."""
    text = path.read_text()
    i = text.index('":[', text.index('"years"')) + 3 + 4  # the last digit of the first day
    path.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :])


BROKEN = {
    "another package": lambda p: _rewrite(p, key="0" * 64),  # its days and their sum intact
    "another calendar": lambda p: _rewrite(p, country="FR"),
    "another format": lambda p: _rewrite(p, format=0),
    "days not numbers": lambda p: _rewrite(p, years={str(THIS_YEAR): ["2026-01-01"]}),
    "a year not a number": lambda p: _rewrite(p, years={"next": [1]}),
    "a day changed": _change_a_day,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "a list": lambda p: p.write_text("[1, 2, 3]"),
    "empty": lambda p: p.write_bytes(b""),
    "deeply nested": lambda p: p.write_text("[" * 100_000),
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_stale_or_broken_file_is_rebuilt(tmp_path: Path, how: str) -> None:
    years = range(THIS_YEAR - 1, THIS_YEAR + 1)
    days("US", None, years, tmp_path)
    path = holidaycache.cache_path(tmp_path, "US", None)
    BROKEN[how](path)
    holidaycache._known.clear()
    before = mark()
    assert days("US", None, years, tmp_path) == holidaycal.build("US", None, years)
    assert children_ran(before)
    assert file_years(path) == WINDOW  # rewritten whole, under this package's key
    assert json.loads(path.read_text())["country"] == "US"


def test_an_unreadable_or_unwritable_place_costs_a_child_never_the_daemon(tmp_path: Path) -> None:
    path = holidaycache.cache_path(tmp_path, "US", None)
    path.mkdir()  # a directory where the file belongs: neither read nor written
    years = range(THIS_YEAR, THIS_YEAR + 1)
    assert days("US", None, years, tmp_path) == holidaycal.build("US", None, years)
    assert path.is_dir()
    missing = tmp_path / "not-yet"  # the data directory a first start has not made yet
    assert days("US", None, years, missing) == holidaycal.build("US", None, years)
    assert not missing.exists()  # never made here (the store makes it)
    missing.mkdir()
    before = mark()
    assert days("US", None, years, missing) == holidaycal.build("US", None, years)
    assert not children_ran(before)  # known in this process, and now written
    assert file_years(holidaycache.cache_path(missing, "US", None)) == WINDOW


def test_a_failed_child_builds_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    years = range(2020, 2022)
    assert days("US", None, years, tmp_path) == holidaycal.build("US", None, years)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("country", "subdiv"), [("XX", None), ("US", "XX"), ("us", None)])
def test_an_unknown_calendar_is_one_line_and_writes_nothing(
    tmp_path: Path, country: str, subdiv: str | None
) -> None:
    with pytest.raises(UsageError) as info:
        days(country, subdiv, range(2024, 2025), tmp_path)
    assert str(info.value) == f"no holiday calendar for country {country!r} / {subdiv!r}"
    assert list(tmp_path.iterdir()) == []


def test_the_config_check_builds_the_calendar_and_the_daemon_install_writes_it(
    tmp_path: Path,
) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    update_config(d, {"household.holiday_country": "US", "household.holiday_subdiv": "CA"})
    assert not (d / "data" / "holidays-US-CA.json").exists()  # a check writes nothing
    holidaycache.install(d / "data")  # what `gridnode run` does once its checks passed
    try:
        assert file_years(d / "data" / "holidays-US-CA.json") == WINDOW
    finally:
        holidaycal.use_source(None)
    with pytest.raises(UsageError) as info:
        update_config(d, {"household.holiday_subdiv": "Atlantis"})
    assert str(info.value) == (
        f"{d / 'gridnode.toml'}: household.holiday_country/holiday_subdiv: no public-holiday "
        "calendar for 'US'/'Atlantis' (the holidays package's codes, e.g. 'US'/'CA')"
    )
    assert load_config(d).holiday_subdiv == "CA"


#: a daemon's process, as far as its calendar goes: the config check, the daemon's install, and a
#: forecaster fitted and predicted with the household's holidays (CityLearn 2016-2017: years
#: outside the file's window the first time); prints its forecast, whether the package was
#: imported and the CPU its children took
DAEMON = """
import hashlib, resource, sys
from pathlib import Path
from gridnode.config import load_config
from gridnode import holidaycache
config = load_config(Path(sys.argv[1]))
holidaycache.install(config.data_dir)
from forecasting.data import load_citylearn_homes
from forecasting.profile_qr import ProfileQR
homes = load_citylearn_homes((2,), end_s=int(sys.argv[2]))
fc = ProfileQR(train_days=60, holiday_country="US").fit(homes).predict(homes, 24)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(hashlib.sha256(fc.values_w.tobytes()).hexdigest(), "holidays" in sys.modules,
      ru.ru_utime + ru.ru_stime > 0)
"""


def test_a_daemon_never_imports_the_package_and_forecasts_the_same(tmp_path: Path) -> None:
    d = tmp_path / "home"
    create_data_dir(d)
    update_config(d, {"household.holiday_country": "US"})
    assert not (d / "data" / "holidays-US.json").exists()  # the check wrote nothing: no file yet
    end_s = calendar.timegm((2017, 1, 20, 0, 0, 0)) - SHIPPED_UTC_OFFSET_S
    homes = load_citylearn_homes((2,), end_s=end_s)
    fc = ProfileQR(train_days=60, holiday_country="US").fit(homes).predict(homes, 24)
    want = hashlib.sha256(fc.values_w.tobytes()).hexdigest()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", DAEMON, str(d), str(end_s)],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        ).stdout.split()
        for _ in range(2)
    ]  # fmt: skip
    # first start: children build (the window, then 2016-2017 too); second: the file answers
    assert runs == [[want, "False", "True"], [want, "False", "False"]]
    assert file_years(d / "data" / "holidays-US.json") == WINDOW | {2016, 2017}


#: a first start's config check and then its install (what `gridnode run` does once its start-up
#: checks passed), several at once on one data directory
CHECK = """
import sys
from pathlib import Path
from gridnode import holidaycache
holidaycache.check("US", None, cache_dir=Path(sys.argv[1]))
holidaycache.install(Path(sys.argv[1]))
"""


def test_the_config_check_writes_nothing_the_install_writes_what_it_built(tmp_path: Path) -> None:
    """A start that the config check passes but a later start-up check refuses must leave the
    disk as it was: the check builds the calendar for its process only; the daemon's install,
    after the refusals, writes it."""
    path = holidaycache.cache_path(tmp_path, "US", None)
    holidaycache.check("US", None, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    holidaycache.install(tmp_path)
    try:
        assert file_years(path) == WINDOW
    finally:
        holidaycal.use_source(None)


def test_concurrent_first_starts_leave_one_whole_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", CHECK, str(tmp_path)], env=env, cwd=ROOT)
        for _ in range(6)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    path = holidaycache.cache_path(tmp_path, "US", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert file_years(path) == WINDOW
    before = mark()
    years = range(THIS_YEAR - 2, THIS_YEAR + 3)
    assert days("US", None, years, tmp_path) == holidaycal.build("US", None, years)
    assert not children_ran(before)


def test_a_household_daemon_quotes_without_importing_the_package(tmp_path: Path) -> None:
    """A real `gridnode run` of a bidding household with a holiday country, started twice: its
    imports (``PYTHONPROFILEIMPORTTIME``, in its log) never include the package, up to its first
    quote (its forecaster fitted with the holidays); the first start wrote the file."""
    from sims.daemons import LocalCommunity

    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=1, speedup=60, launcher=False)
    lc.create()
    d = lc.households[1].dir
    update_config(
        d,
        {
            "meter.source": "replay",
            "meter.replay_hour": 11.0,
            "bidding.enabled": True,
            "household.holiday_country": "US",
        },
    )
    assert not (d / "data" / "holidays-US.json").exists()  # the check wrote nothing: a first start
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPROFILEIMPORTTIME": "1"}
    provenance = d / "data" / "provenance.jsonl"
    for start in ("first", "second"):
        quotes = len(provenance.read_bytes().splitlines()) if provenance.exists() else 0
        log = d / f"{start}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gridnode", "run", "--dir", str(d)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 120.0
            while not (provenance.exists() and len(provenance.read_bytes().splitlines()) > quotes):
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "no quote"
                time.sleep(0.05)  # polling the quote's line, with a deadline
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        imports = [line for line in log.read_text().splitlines() if line.startswith("import time:")]
        assert any(line.endswith("| gridnode.household_driver") for line in imports)
        names = [line.rsplit("|", 1)[1].strip() for line in imports]
        assert not [n for n in names if n == "holidays" or n.startswith("holidays.")], start
        assert file_years(d / "data" / "holidays-US.json") == WINDOW
