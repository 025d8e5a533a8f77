"""Simulation scenarios: a TOML file that says which community to simulate, under which rules and faults.

Both engines (``sims.inproc`` and the real-daemon engine) read a scenario only through
:func:`load_scenario` and the frozen :class:`Scenario` it returns. Rules of this module:

* **Validation**: every key is checked (type, range, known name); an unknown key is an error (a typo must
  not silently fall back to a default). Errors are :class:`~market.errors.InvalidInput` whose one-line
  message names the file, the dotted key and the problem (``expected …; found …``).
* **Units in names**: seconds ``*_s``/``*_seconds``, prices in µ¤ per kWh, energy in kWh only where a
  human sizes equipment (``pv_kwp``, ``battery_kwh``, ``battery_kw``).
* **Households are drawn once, deterministically**: :meth:`Scenario.household_specs` draws each
  household's group, PV size, battery, load scale and replay day offset from ``random.Random(seed)``
  in household order, so the same scenario and seed give the same community in every engine.
* **Where the households live** (``households.source``, :data:`HOME_SOURCES`; the data are read by
  :mod:`sims.homes`): ``"shipped"`` (default) — every household replays the one shipped **real**
  measured household (UCI load + NREL PVDAQ PV, ``forecasting/data/README.md``) starting
  ``day_offset`` days after ``start_day`` (offsets distinct while the spread allows), PV scaled to its
  kWp (:data:`SHIPPED_PV_KWP`), load scaled; ``"citylearn"`` — the 17 real CityLearn homes
  (``households.homes``, default all), each household its own home; ``"meter-folder"`` — one home
  per meter file of ``households.folder`` (a folder of the user's own meter histories, relative to
  the scenario file). With these two, household ``i`` lives in home ``i mod H``; a home used again
  (more households than homes) replays its data 7 days earlier per reuse; groups scale each home's
  own PV by ``pv_scale`` (0 = no PV) and its load by ``load_scale``, and ``start_day`` is in the
  homes' own calendar.
* **The site** (``[site]``: latitude, longitude, holiday country) is what the households'
  forecaster is told (clear-sky PV, public holidays); it defaults to the source's site.
* **Overrides** (``households``, ``days``, ``seed``) replace the file's values before validation.
* **Training** (``[training]``, :data:`TRAINING_MODES`): ``"local"`` (default: each household fits
  its forecaster on its own history alone) or ``"federated"`` (the households also train one
  community forecaster in rounds every ``round_every_days`` — :data:`ROUND_EVERY_DAYS` by default —
  starting ``rounds_before_start`` rounds before the first slot, optionally with differential
  privacy ``dp_epsilon``; each bids with its personal blend, ``sims.training``). The federated-only
  keys in a local scenario are errors (``federated_only``). A household group's ``history_days``
  (0 = all the data) makes its households **cold-start**: their meter history begins that many
  days before the first slot, in both modes.
* **Fault plan**: a list of timed faults, times in seconds after the simulation start; what each
  engine supports is documented in ``docs/sims.md`` (the in-process engine supports all kinds).

Scenario fields (stable API): ``name, seed, days, start_day, start_hour, slot_seconds,
gate_lead_seconds, reading_deadline_seconds, rule, netting, retail_micro_per_kwh,
feed_in_micro_per_kwh, grid_fee_micro_per_kwh, validators, households, groups, day_spread, policy,
model, horizon_slots, latency_ms, drop_rate, faults, source, block_interval_s, cadence, home_source,
home_ids, meter_folder, site, refit_days, training, round_every_days, rounds_before_start,
dp_epsilon, dp_delta, dp_clip_norm``; derived: ``slots``, ``duration_s``,
``household_specs()``, ``node_keys()``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from forecasting.registry import DEFAULT_MODEL, MODEL_NAMES, build_model
from gridnode.core.crypto import KeyPair
from gridnode.household.forecast import REFIT_EVERY_S, Site
from market.clearing import Rule
from market.errors import InvalidInput, SimReason, UsageError
from market.settlement import Netting

__all__ = [
    "CITYLEARN_HOME_IDS",
    "FAULT_KINDS",
    "HOME_SOURCES",
    "POLICIES",
    "ROUND_EVERY_DAYS",
    "SHIPPED_PV_KWP",
    "TRAINING_MODES",
    "FaultSpec",
    "HouseholdGroup",
    "HouseholdSpec",
    "Scenario",
    "load_scenario",
    "parse_scenario",
]

#: Peak AC power of the shipped PV system (NREL PVDAQ system 50), used as its kWp for scaling.
SHIPPED_PV_KWP: Final = 3.4
POLICIES: Final = ("forecast", "perfect-foresight", "naive-fixed-price")
FAULT_KINDS: Final = ("drop", "partition", "crash", "byzantine", "skew")
BYZANTINE_BEHAVIOURS: Final = ("equivocate", "silent")
#: consensus cadences (``[consensus] cadence``): sims.inproc builds the consensus config from it
CADENCES: Final = ("fixed", "adaptive")
#: ``[bidding] model``: the forecasting registry's names (default: its DEFAULT_MODEL, profile-qr)
MODELS: Final = MODEL_NAMES
#: ``households.source``
HOME_SOURCES: Final = ("shipped", "citylearn", "meter-folder")
#: the CityLearn homes' numbers (``forecasting.data.CITYLEARN_HOMES``)
CITYLEARN_HOME_IDS: Final = tuple(range(1, 18))
#: ``[training] mode``
TRAINING_MODES: Final = ("local", "federated")
#: ``[training] round_every_days`` by default: daily, like the forecaster's refit. A round is one
#: IRLS step of the pooled quantile regression (``forecasting.federated``), so the model needs a
#: few rounds to settle (its P10/P90 more): weekly rounds would take a month or more where daily
#: ones take days, and a round is cheap (25.8 kB sent per member, ~8 ms CPU per member)
ROUND_EVERY_DAYS: Final = 1
#: ``[training] rounds_before_start`` by default: the community had trained this many rounds when
#: the run begins (the P50 settles within a few IRLS rounds)
ROUNDS_BEFORE_START: Final = 4
#: ``[training] dp_delta`` and ``dp_clip_norm`` by default (``forecasting.secagg.DpConfig``; the
#: clip norm is in update units: fixed-point sums, ``docs/federated.md``)
DP_DELTA: Final = 1e-5
DP_CLIP_NORM: Final = 1e9


@dataclass(frozen=True, slots=True)
class HouseholdGroup:
    """A kind of household; ``share`` of the community (shares are normalised)."""

    name: str
    share: float
    pv_kwp: tuple[float, float]  # drawn uniformly in [lo, hi]; (0, 0) = no PV (source "shipped")
    load_scale: tuple[float, float]
    battery_kwh: float = 0.0
    battery_kw: float = 0.0
    pv_scale: tuple[float, float] = (1.0, 1.0)  # × the home's own PV (other sources)
    history_days: int = 0  # cold start: meter history from this many days before the run; 0 = all


@dataclass(frozen=True, slots=True)
class HouseholdSpec:
    """One drawn household (see :meth:`Scenario.household_specs`)."""

    index: int
    name: str  # "h017"
    group: str
    pv_kwp: float
    load_scale: float
    battery_kwh: float
    battery_kw: float
    day_offset: int  # replay day relative to the scenario's start_day
    pv_scale: float = 1.0  # × the home's measured PV
    home: str = "shipped"  # which home's data: "shipped", "citylearn-3", a meter file's name
    history_days: int = 0  # its meter history starts this many days before the run (0: all)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One timed fault. ``kind`` in :data:`FAULT_KINDS`.

    * ``drop``: every message is lost with probability ``rate`` during ``[at_s, at_s + duration_s)``.
    * ``partition``: validators split into ``groups`` (lists of validator indices); validators in
      different groups cannot talk until it heals.
    * ``crash``: validator ``validator`` stops (loses everything not in its store) and restarts after
      ``duration_s`` (``0`` = never).
    * ``byzantine``: validator ``validator`` behaves as ``behaviour`` (``equivocate``: signs two
      conflicting votes each step; ``silent``: sends nothing) for ``duration_s`` (``0`` = to the end).
    * ``skew``: validator ``validator``'s clock is off by ``skew_ms`` (for ``duration_s``, 0 = to the end).
    """

    kind: str
    at_s: int
    duration_s: int = 0
    rate: float = 0.0
    groups: tuple[tuple[int, ...], ...] = ()
    validator: int = 0
    behaviour: str = "equivocate"
    skew_ms: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario. See the module docstring for the fields."""

    name: str
    seed: int
    days: float
    start_day: str  # the homes' data calendar (YYYY-MM-DD), local standard time of the data
    start_hour: float
    slot_seconds: int
    gate_lead_seconds: int
    reading_deadline_seconds: int
    rule: Rule
    netting: Netting
    retail_micro_per_kwh: int
    feed_in_micro_per_kwh: int
    grid_fee_micro_per_kwh: int
    validators: int
    households: int
    groups: tuple[HouseholdGroup, ...]
    day_spread: int
    policy: str
    model: str
    horizon_slots: int
    latency_ms: tuple[int, int]
    drop_rate: float
    faults: tuple[FaultSpec, ...]
    source: str = ""
    block_interval_s: int = 60  # consensus: pause after each commit (one block about every this)
    #: consensus cadence: "fixed" (every height waits block_interval_s) or "adaptive" (sooner when
    #: transactions wait or a gate closure / reading deadline is due; block_interval_s when idle)
    cadence: str = "fixed"
    home_source: str = "shipped"  # households.source
    home_ids: tuple[str, ...] = ()  # the homes households are drawn from (empty: shipped)
    home_kwp: tuple[float, ...] = ()  # each home's PV size (peak kW), aligned with home_ids
    meter_folder: str = ""  # households.folder, absolute (source "meter-folder")
    site: Site = field(default_factory=Site)
    refit_days: int = REFIT_EVERY_S // 86_400  # [bidding] refit_days: the forecaster's period
    training: str = "local"  # [training] mode: "local" | "federated"
    round_every_days: int = ROUND_EVERY_DAYS
    rounds_before_start: int = ROUNDS_BEFORE_START
    dp_epsilon: float | None = None  # each household's total DP ε over the run's rounds (None: off)
    dp_delta: float = DP_DELTA
    dp_clip_norm: float = DP_CLIP_NORM

    @property
    def duration_s(self) -> int:
        return self.slots * self.slot_seconds

    @property
    def slots(self) -> int:
        return max(1, round(self.days * 86_400 / self.slot_seconds))

    def household_specs(self) -> list[HouseholdSpec]:
        """Draw the households (deterministic in ``seed``; see the module rules)."""
        rng = random.Random(f"households:{self.seed}")
        counts = _apportion([g.share for g in self.groups], self.households)
        offsets = list(range(-self.day_spread, self.day_spread + 1))
        rng.shuffle(offsets)
        specs: list[HouseholdSpec] = []
        order = [gi for gi, c in enumerate(counts) for _ in range(c)]
        rng.shuffle(order)
        shipped = self.home_source == "shipped"
        for i, gi in enumerate(order):
            g = self.groups[gi]
            name = f"h{i:03d}" if self.households <= 1000 else f"h{i:05d}"
            if shipped:
                pv_kwp = round(rng.uniform(*g.pv_kwp), 2)
                load_scale = round(rng.uniform(*g.load_scale), 3)
                pv_scale, offset, home = (
                    pv_kwp / SHIPPED_PV_KWP,
                    offsets[i % len(offsets)],
                    "shipped",
                )
            else:
                pv_scale = round(rng.uniform(*g.pv_scale), 3)
                load_scale = round(rng.uniform(*g.load_scale), 3)
                home_index = i % len(self.home_ids)
                home = self.home_ids[home_index]
                pv_kwp = round(pv_scale * self.home_kwp[home_index], 2)
                offset = -7 * (i // len(self.home_ids))
            specs.append(
                HouseholdSpec(
                    index=i,
                    name=name,
                    group=g.name,
                    pv_kwp=pv_kwp,
                    load_scale=load_scale,
                    battery_kwh=g.battery_kwh,
                    battery_kw=g.battery_kw,
                    day_offset=offset,
                    pv_scale=pv_scale,
                    home=home,
                    history_days=g.history_days,
                )
            )
        return specs

    def node_keys(self) -> tuple[list[KeyPair], list[KeyPair]]:
        """The households' and the validators' keys, deterministic in ``seed``. Both engines use
        them, so a household has the same id in either, and so do its orders (same order ids: the
        clearing's tie-breaking between equal prices is the same)."""
        rng = random.Random(f"keys:{self.seed}")
        households = [KeyPair.from_rng(rng) for _ in range(self.households)]
        return households, [KeyPair.from_rng(rng) for _ in range(self.validators)]


def _apportion(shares: list[float], n: int) -> list[int]:
    """Largest-remainder split of ``n`` by ``shares`` (ties to the earlier group)."""
    total = sum(shares)
    exact = [s * n / total for s in shares]
    counts = [math.floor(x) for x in exact]
    rest = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in rest[: n - sum(counts)]:
        counts[i] += 1
    return counts


# ------------------------------------------------------------------------------------- parsing


class _Reader:
    """Typed access to one TOML table, tracking which keys were used (unknown keys are errors)."""

    def __init__(self, source: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.prefix = prefix
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, reason: str, expected: str, found: object) -> InvalidInput:
        return InvalidInput(
            reason=reason,
            subject=self.source,
            field=self.key(name),
            expected=expected,
            found=repr(found),
        )

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.table.get(name, default)

    def int_(self, name: str, default: int | None, lo: int, hi: int) -> int:
        v = self.get(name, default)
        if v is None:
            raise self.fail(name, "missing", f"an integer in [{lo}, {hi}]", "nothing")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(name, "not_an_integer", "an integer", v)
        if not lo <= v <= hi:
            raise self.fail(name, "out_of_range", f"an integer in [{lo}, {hi}]", v)
        return v

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        v = self.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(name, "not_a_number", "a number", v)
        if not lo <= v <= hi:
            raise self.fail(name, "out_of_range", f"a number in [{lo}, {hi}]", v)
        return float(v)

    def range_(
        self, name: str, default: tuple[float, float], lo: float, hi: float
    ) -> tuple[float, float]:
        v = self.get(name, default)
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = (v, v)
        ok = (
            isinstance(v, list | tuple)
            and len(v) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        )
        if not ok:
            raise self.fail(name, "not_a_range", "a number or [low, high]", v)
        a, b = float(v[0]), float(v[1])
        if not lo <= a <= b <= hi:
            raise self.fail(name, "out_of_range", f"{lo} <= low <= high <= {hi}", v)
        return (a, b)

    def str_(self, name: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        v = self.get(name, default)
        if not isinstance(v, str):
            raise self.fail(name, "not_a_string", "a string", v)
        if choices is not None and v not in choices:
            raise self.fail(name, "unknown_value", " | ".join(choices), v)
        return v

    def table_(self, name: str) -> _Reader:
        v = self.get(name, {})
        if not isinstance(v, dict):
            raise self.fail(name, "not_a_table", "a table", v)
        return _Reader(self.source, f"{self.key(name)}.", v)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown_key", "a documented key (see docs/sims.md)", "")


def parse_scenario(
    doc: Mapping[str, Any],
    *,
    source: str = "<scenario>",
    households: int | None = None,
    days: float | None = None,
    seed: int | None = None,
) -> Scenario:
    """Validate a parsed TOML document (see :func:`load_scenario`)."""
    doc = dict(doc)
    if seed is not None:
        doc["seed"] = seed
    if days is not None:
        doc["days"] = days
    hh = doc.get("households", {})
    if households is not None and isinstance(hh, dict):
        doc["households"] = dict(hh) | {"count": households}
    r = _Reader(source, "", doc)
    name = r.str_("name", Path(source).stem or "scenario")
    seed_v = r.int_("seed", 1, 0, 2**63 - 1)
    days_v = r.float_("days", 1.0, 1 / 96, 366.0)
    h = r.table_("households")
    home_source = h.str_("source", "shipped", HOME_SOURCES)
    homes = _homes(h, home_source, source)
    start_day = r.str_("start_day", homes.default_day)
    _check_day(r, start_day)
    start_hour = r.float_("start_hour", 0.0, 0.0, 23.75)

    m = r.table_("market")
    slot_seconds = m.int_("slot_seconds", max(900, homes.step_s), 900, 3600)
    if slot_seconds % 900 or slot_seconds % homes.step_s:
        # a slot covers whole intervals of the meter data (the shipped household's are 15 minutes,
        # the CityLearn homes' an hour)
        expected = "900, 1800 or 3600" if homes.step_s <= 900 else f"a multiple of {homes.step_s}"
        raise m.fail(
            "slot_seconds", "not_whole_intervals", f"{expected} (the homes' meter interval)",
            slot_seconds,
        )  # fmt: skip
    gate = m.int_("gate_lead_seconds", 300, 0, 86_400)
    deadline = m.int_("reading_deadline_seconds", slot_seconds, 60, 86_400)
    rule = Rule(m.str_("rule", "pay-as-clear", tuple(x.value for x in Rule)))
    netting = Netting(m.str_("netting", "none", tuple(x.value for x in Netting)))
    m.finish()

    t = r.table_("tariffs")
    retail = t.int_("retail_micro_per_kwh", 300_000, 1, 10**9)
    feed_in = t.int_("feed_in_micro_per_kwh", 80_000, 0, 10**9)
    fee = t.int_("grid_fee_micro_per_kwh", 0, 0, 10**9)
    if feed_in > retail:
        raise t.fail("feed_in_micro_per_kwh", "above_retail", f"<= retail ({retail})", feed_in)
    t.finish()

    validators = r.int_("validators", 4, 4, 7)

    count = h.int_("count", len(homes.ids) if homes.ids else 12, 2, 100_000)
    spread = h.int_("day_spread", 30, 0, 400)
    groups_doc = h.get("group", [])
    if not isinstance(groups_doc, list):
        raise h.fail("group", "not_an_array_of_tables", "[[households.group]] tables", groups_doc)
    groups: list[HouseholdGroup] = []
    for i, gd in enumerate(groups_doc):
        if not isinstance(gd, dict):
            raise h.fail(f"group[{i}]", "not_a_table", "a table", gd)
        g = _Reader(source, f"households.group[{i}].", gd)
        if home_source == "shipped":
            pv = g.range_("pv_kwp", (0.0, 0.0), 0.0, 100.0)
            pv_scale = (1.0, 1.0)
        else:  # a real home has its own PV: scale it (0 = none)
            if "pv_kwp" in gd:
                raise g.fail(
                    "pv_kwp", SimReason.NOT_FOR_THIS_SOURCE,
                    f"pv_scale (× the home's own PV) with households.source = {home_source!r}",
                    gd["pv_kwp"],
                )  # fmt: skip
            pv, pv_scale = (0.0, 0.0), g.range_("pv_scale", (1.0, 1.0), 0.0, 20.0)
            if homes.net_only and pv_scale != (1.0, 1.0):
                raise g.fail("pv_scale", SimReason.NET_ONLY_METERS, "1 (the meter files hold only the net)", list(pv_scale))  # fmt: skip
        load = g.range_("load_scale", (1.0, 1.0), 0.0, 20.0)
        if home_source != "shipped" and homes.net_only and load != (1.0, 1.0):
            raise g.fail("load_scale", SimReason.NET_ONLY_METERS, "1 (the meter files hold only the net)", list(load))  # fmt: skip
        battery_kwh = g.float_("battery_kwh", 0.0, 0.0, 1000.0)
        battery_kw = g.float_("battery_kw", 0.0, 0.0, 1000.0)
        if battery_kwh > 0 and battery_kw <= 0:  # a battery that can never move energy: a typo
            raise g.fail("battery_kw", "battery_without_power", "> 0 when battery_kwh > 0", 0.0)
        history_days = g.int_("history_days", 0, 0, 3660)
        if history_days == 1:  # the fallback forecaster needs 2 days (0 means all the data)
            raise g.fail("history_days", "out_of_range", "0 (all the data) or >= 2", 1)
        groups.append(
            HouseholdGroup(
                name=g.str_("name", f"group{i}"),
                share=g.float_("share", 1.0, 1e-9, 1e9),
                pv_kwp=pv,
                load_scale=load,
                battery_kwh=battery_kwh,
                battery_kw=battery_kw,
                pv_scale=pv_scale,
                history_days=history_days,
            )
        )
        g.finish()
    if not groups:
        if home_source == "shipped":
            groups.append(HouseholdGroup("default", 1.0, (0.0, 6.0), (0.7, 1.3)))
        else:
            groups.append(HouseholdGroup("own", 1.0, (0.0, 0.0), (1.0, 1.0)))
    h.finish()

    site_t = r.table_("site")
    lat = site_t.get("latitude", homes.site.latitude)
    lon = site_t.get("longitude", homes.site.longitude)
    for key, v, lo, hi in (("latitude", lat, -90, 90), ("longitude", lon, -180, 180)):
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi
        ):
            raise site_t.fail(key, "out_of_range", f"a number in [{lo}, {hi}]", v)
    if ("latitude" in site_t.table) != ("longitude" in site_t.table):
        missing = "longitude" if "latitude" in site_t.table else "latitude"
        raise site_t.fail(missing, "missing", "latitude and longitude together", None)
    country = site_t.get("holiday_country", homes.site.holiday_country)
    subdiv = site_t.get("holiday_subdiv", homes.site.holiday_subdiv)
    for key, v in (("holiday_country", country), ("holiday_subdiv", subdiv)):
        if v is not None and not isinstance(v, str):
            raise site_t.fail(key, "not_a_string", "a country code such as 'US'", v)
    if subdiv is not None and country is None:
        raise site_t.fail("holiday_country", "missing", "a country for holiday_subdiv", None)
    if country is not None:
        from forecasting import holidaycal  # noqa: PLC0415 - only a scenario that names a country

        try:
            holidaycal.build(country, subdiv, ())  # the package's check of the codes, no year built
        except UsageError:
            key = "holiday_subdiv" if subdiv is not None else "holiday_country"
            raise site_t.fail(key, SimReason.UNKNOWN_CALENDAR, "a country (and subdivision) the "
                              "holidays package knows, e.g. 'US' / 'CA'", subdiv or country) from None  # fmt: skip
    site_t.finish()
    site = Site(
        None if lat is None else float(lat),
        None if lon is None else float(lon),
        country,
        subdiv,
    )

    b = r.table_("bidding")
    policy = b.str_("policy", "forecast", POLICIES)
    model = b.str_("model", DEFAULT_MODEL, MODELS)
    horizon = b.int_("horizon_slots", 1, 1, 96)  # 1 = gridnode.daemon.QUOTED_SLOTS (tested)
    refit_days = b.int_("refit_days", REFIT_EVERY_S // 86_400, 1, 366)
    b.finish()
    try:
        build_model(model, latitude=site.latitude, longitude=site.longitude)
    except UsageError as exc:
        raise b.fail("model", SimReason.NEEDS_THE_SITE, str(exc), model) from None

    training = _training(r.table_("training"))

    c = r.table_("consensus")
    block_interval = c.int_("block_interval_s", 60, 1, 3600)
    cadence = c.str_("cadence", "fixed", CADENCES)
    c.finish()

    n = r.table_("network")
    lat = n.range_("latency_ms", (5.0, 40.0), 0.0, 60_000.0)
    drop = n.float_("drop_rate", 0.0, 0.0, 0.5)
    n.finish()

    faults_doc = r.get("faults", [])
    if not isinstance(faults_doc, list):
        raise r.fail("faults", "not_an_array_of_tables", "[[faults]] tables", faults_doc)
    duration_s = max(1, round(days_v * 86_400 / slot_seconds)) * slot_seconds
    faults = tuple(
        _parse_fault(source, i, fd, validators=validators, duration_s=duration_s)
        for i, fd in enumerate(faults_doc)
    )
    _check_byzantine(source, faults, validators)
    r.finish()
    return Scenario(
        name=name,
        seed=seed_v,
        days=days_v,
        start_day=start_day,
        start_hour=start_hour,
        slot_seconds=slot_seconds,
        gate_lead_seconds=gate,
        reading_deadline_seconds=deadline,
        rule=rule,
        netting=netting,
        retail_micro_per_kwh=retail,
        feed_in_micro_per_kwh=feed_in,
        grid_fee_micro_per_kwh=fee,
        validators=validators,
        households=count,
        groups=tuple(groups),
        day_spread=spread,
        policy=policy,
        model=model,
        horizon_slots=horizon,
        latency_ms=(int(lat[0]), int(lat[1])),
        drop_rate=drop,
        faults=faults,
        source=source,
        block_interval_s=block_interval,
        cadence=cadence,
        home_source=home_source,
        home_ids=homes.ids,
        home_kwp=homes.kwp,
        meter_folder=homes.folder,
        site=site,
        refit_days=refit_days,
        **training,
    )


def _training(t: _Reader) -> dict[str, Any]:
    """``[training]`` (module rules): the mode, and the federated-only keys."""
    mode = t.str_("mode", "local", TRAINING_MODES)
    federated_only = ("round_every_days", "rounds_before_start", "dp_epsilon", "dp_delta",
                      "dp_clip_norm")  # fmt: skip
    if mode == "local":
        for key in federated_only:
            if key in t.table:
                raise t.fail(key, SimReason.FEDERATED_ONLY, "training.mode = 'federated'",
                             t.table[key])  # fmt: skip
        t.finish()
        return {"training": mode}
    out: dict[str, Any] = {
        "training": mode,
        "round_every_days": t.int_("round_every_days", ROUND_EVERY_DAYS, 1, 28),
        "rounds_before_start": t.int_("rounds_before_start", ROUNDS_BEFORE_START, 0, 52),
    }
    if "dp_epsilon" in t.table:
        out["dp_epsilon"] = t.float_("dp_epsilon", 1.0, 0.01, 100.0)
        out["dp_delta"] = t.float_("dp_delta", DP_DELTA, 1e-12, 0.1)
        out["dp_clip_norm"] = t.float_("dp_clip_norm", DP_CLIP_NORM, 1.0, 1e18)
    else:
        for key in ("dp_delta", "dp_clip_norm"):
            if key in t.table:
                raise t.fail(key, SimReason.DP_WITHOUT_EPSILON, "dp_epsilon as well", t.table[key])
    t.finish()
    return out


@dataclass(frozen=True, slots=True)
class _HomesInfo:
    """What parsing needs to know about the scenario's homes (``sims.homes``: ``shipped_info``,
    ``citylearn_info``, ``folder_info``)."""

    ids: tuple[str, ...]  # empty: the shipped household
    kwp: tuple[float, ...]
    step_s: int  # the meter data's interval
    net_only: bool  # the meters hold only the net (no PV and load apart)
    site: Site
    default_day: str  # start_day when the file names none
    folder: str = ""


def _homes(h: _Reader, home_source: str, source: str) -> _HomesInfo:
    from sims.homes import citylearn_info, folder_info, shipped_info  # noqa: PLC0415 - no cycle

    if home_source == "citylearn":
        ids = h.get("homes", list(CITYLEARN_HOME_IDS))
        ok = (
            isinstance(ids, list)
            and ids
            and all(isinstance(x, int) and not isinstance(x, bool) for x in ids)
            and set(ids) <= set(CITYLEARN_HOME_IDS)
            and len(set(ids)) == len(ids)
        )
        if not ok:
            raise h.fail(
                "homes", SimReason.BAD_HOMES, "distinct CityLearn home numbers in 1..17", ids
            )
        return citylearn_info(tuple(ids))
    if "homes" in h.table:
        raise h.fail(
            "homes",
            SimReason.NOT_FOR_THIS_SOURCE,
            "households.source = 'citylearn'",
            h.table["homes"],
        )
    if home_source == "meter-folder":
        folder = h.get("folder", None)
        if not isinstance(folder, str) or not folder:
            raise h.fail(
                "folder", "missing", "a folder of meter files (relative to the scenario)", folder
            )
        return folder_info(Path(source).parent / folder)
    if "folder" in h.table:
        raise h.fail(
            "folder",
            SimReason.NOT_FOR_THIS_SOURCE,
            "households.source = 'meter-folder'",
            h.table["folder"],
        )
    return shipped_info()


def _check_day(r: _Reader, day: str) -> None:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise r.fail("start_day", "not_a_date", "YYYY-MM-DD", day) from None


def _parse_fault(source: str, i: int, fd: object, *, validators: int, duration_s: int) -> FaultSpec:
    if not isinstance(fd, dict):
        raise InvalidInput(
            reason="not_a_table", subject=source, field=f"faults[{i}]", found=repr(fd)
        )
    f = _Reader(source, f"faults[{i}].", fd)
    kind = f.str_("kind", "", FAULT_KINDS)
    at_s = f.int_("at_s", 0, 0, duration_s)
    dur = f.int_("duration_s", 0, 0, 10 * 366 * 86_400)
    spec = FaultSpec(kind=kind, at_s=at_s, duration_s=dur)
    if kind == "drop":
        spec = replace(spec, rate=f.float_("rate", 0.1, 0.0, 1.0))
        if dur == 0:
            raise f.fail("duration_s", "missing", "a positive duration for a drop fault", dur)
    elif kind == "partition":
        groups = f.get("groups", None)
        ok = (
            isinstance(groups, list)
            and len(groups) >= 2
            and all(isinstance(g, list) and g for g in groups)
            and all(isinstance(x, int) and not isinstance(x, bool) for g in groups for x in g)
        )
        if not ok:
            raise f.fail("groups", "not_groups", "two or more lists of validator indices", groups)
        assert isinstance(groups, list)
        flat = [x for g in groups for x in g]
        if len(set(flat)) != len(flat) or not all(0 <= x < validators for x in flat):
            raise f.fail("groups", "bad_indices", f"distinct indices in [0, {validators})", groups)
        if dur == 0:
            raise f.fail("duration_s", "missing", "a positive duration for a partition", dur)
        spec = replace(spec, groups=tuple(tuple(g) for g in groups))
    else:
        v = f.int_("validator", None, 0, validators - 1)
        spec = replace(spec, validator=v)
        if kind == "byzantine":
            spec = replace(spec, behaviour=f.str_("behaviour", "equivocate", BYZANTINE_BEHAVIOURS))
        elif kind == "skew":
            spec = replace(spec, skew_ms=f.int_("skew_ms", None, -60_000, 60_000))
    f.finish()
    return spec


def _check_byzantine(source: str, faults: tuple[FaultSpec, ...], validators: int) -> None:
    byz = sorted({f.validator for f in faults if f.kind == "byzantine"})
    max_faulty = (validators - 1) // 3
    if len(byz) > max_faulty:
        raise InvalidInput(
            reason="too_many_byzantine",
            subject=source,
            field="faults",
            expected=f"at most {max_faulty} Byzantine validators of {validators} (n >= 3f + 1)",
            found=str(byz),
        )


def load_scenario(
    path: Path | str,
    *,
    households: int | None = None,
    days: float | None = None,
    seed: int | None = None,
) -> Scenario:
    """Read and validate a scenario TOML file; overrides replace the file's values."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            reason="unreadable", subject=str(p), expected="a readable TOML file", found=str(exc)
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(
            reason="not_toml", subject=str(p), expected="valid TOML", found=str(exc)
        ) from None
    return parse_scenario(doc, source=str(p), households=households, days=days, seed=seed)
