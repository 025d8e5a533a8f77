"""The real-daemon engine: a scenario run by N real ``gridnode run`` processes on loopback.

:func:`run_daemons` launches a :class:`~sims.daemons.LocalCommunity` (the scenario's validators as a
committee that is *not* a member, plus one full-node household per scenario household), sets each
household's replay meter to the scenario's drawn household (real UCI load + NREL PVDAQ PV, its day
offset, PV kWp and load scale) with automatic bidding on, runs the community clock ``speedup`` times
faster, and tears everything down at the end (or on Ctrl-C, keeping what was done). Nothing is
simulated: every order, reading and block goes over libp2p between separate processes.

What is measured and how (from the chain and the daemons' API, never from their log text):

* **Market outcome** — after the daemons stop, the harness reads one validator's SQLite store with
  the one chain reader (:func:`sims.daemon_collect.read_store`: the sample full node of
  :mod:`sims.fullnode`, every commit verified and every block re-applied with the ledger's rules;
  the collection lives in :mod:`sims.daemon_collect`), so every slot's cleared book,
  trades, clearing price, readings and settlement are the ledger's own facts
  (:mod:`sims.ledger_kpis`). The final replayed state must equal what the daemons serve
  (``state_digest``).
* **Orders submitted vs committed in their slot** — before they stop, the harness saves every
  household daemon's ``/api/submissions`` (the orders it signed and sent, with the node-clock time
  and transaction id) as ``submissions.json`` in its directory; a household *submitted* for slot N
  if it sent an order for N, and its order was *committed in its slot* if it was in the book the
  ledger cleared for N.
* **Seconds per simulated slot** — the wall time between consecutive clearings seen on a validator's
  API, and the **clearing lag**: wall time from a slot's gate closure to the first block that cleared
  it (an overloaded community clears late: blocks fall behind the clock).
* **Commit latency** — for each order in a cleared book, from its submission (``at_ms``) to the
  block that committed that very transaction, both on the node clock, in wall ms.
* **Forecast error** — each daemon's last quote for slot N is made at the start of slot N−1 from its
  meter history; the harness recomputes that P50 forecast with the same code and data
  (:func:`gridnode.household.forecast.bidding_forecaster`) and compares it with the reading the
  household signed.
* **Ledger agreement** — every node's ``/api/status`` reports the same height, head hash and digest.
* **Federated rounds** (``training = federated``) — the ledger's model commitments joined with the
  record each aggregating validator writes per round (``DATA/fedrounds.jsonl``:
  :func:`sims.daemon_collect.round_records`): the same per-round KPIs as the in-process engine's,
  the round's wall time in place of its CPU time.

Supported scenario features: tariffs, slot length, gate lead, reading deadline, rule, netting,
validator count, households (PV, load scale, replay day, batteries: each household daemon
dispatches its own, and what they did is read back from its readings and meter), every home source
(the shipped household through the daemon's replay meter; the CityLearn homes and meter folders as
a meter file per household in node time, :func:`homes_clock`), the forecaster and site (the
daemon's ``bidding.model`` and ``household`` keys), every bidding policy (``forecast``,
``naive-fixed-price``, ``perfect-foresight``: the daemon's ``bidding.policy``), and ``crash`` faults
(SIGKILL a validator at ``at_s``, restart it after ``duration_s``). Other fault kinds (drop,
partition, Byzantine, skew) exist only in the in-process engine; asking the daemon engine for them
is a :class:`~market.errors.UsageError`.

**Same households as the in-process engine**: the nodes' keys are the scenario's
(:meth:`~sims.scenario.Scenario.node_keys`), so a household has the same id, and its orders the same
order ids, in both engines. :func:`inproc_twin` gives the scenario and first slot with which
:func:`sims.inproc.run_inproc` runs exactly the slots a daemon run measured, on the same data.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import signal
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from forecasting.series import MeterHistory
from gridnode.config import load_genesis, update_config, write_genesis
from gridnode.household.agent import QUOTED_SLOTS
from gridnode.meter import shipped_replay
from market.errors import UsageError
from sims.daemon_collect import (
    FATES,
    ChainReplay,
    OrderFates,
    collect,
    collect_run,
    order_fates,
    read_store,
    save_submissions,
)
from sims.daemons import LocalCommunity
from sims.homes import data_utc_offset_s, home_histories, write_meter_file
from sims.ledger_kpis import WEEK_S
from sims.results import FaultEvent, SimResult
from sims.scenario import HouseholdSpec, Scenario

__all__ = [
    "ChainReplay",
    "DaemonRun",
    "SlotTiming",
    "collect_run",
    "inproc_twin",
    "read_store",
    "run_daemons",
]

SUPPORTED_FAULTS = ("crash",)
_START_BATCH = 8
#: a daemon whose API's clock lags the community clock by more wall seconds than this is frozen
_FROZEN_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class SlotTiming:
    """When a validator's API first showed a slot cleared (wall clock of the harness)."""

    slot: int
    cleared_wall_s: float
    gate_closure_wall_s: float
    height: int

    @property
    def lag_s(self) -> float:
        return self.cleared_wall_s - self.gate_closure_wall_s


@dataclass
class DaemonRun:
    """A finished daemon-engine run: the result plus the engine's own measurements."""

    result: SimResult
    trades: list[dict[str, Any]]
    root: Path
    timings: list[SlotTiming]
    speedup: float
    daemons: int
    startup_wall_s: float
    #: slot -> {node index: (clearing price, [(buyer, seller, energy_wh, price, amount_micro)])}
    #: as two nodes' APIs (a validator and a household) served them right after clearing
    served_trades: dict[int, dict[int, tuple[int | None, list[tuple[Any, ...]]]]] = field(
        default_factory=dict
    )
    #: CPU seconds (user + system) each daemon used from start to stop, by node index
    cpu_s: dict[int, float] = field(default_factory=dict)
    measure_wall_s: float = 0.0  # wall seconds from the first to the last measured clearing
    first_slot: int = 0  # the first measured slot (node-clock slot number)
    #: node unix seconds + this = the homes' local time (None: the shipped household's replay
    #: meter, whose anchor the caller reads from the genesis)
    local_offset_s: int | None = None
    #: why orders missed their slot, and when households sent them (None: interrupted, no slot)
    fates: OrderFates | None = None
    #: CPU seconds each daemon used over the steady-state window (by node index): from the
    #: measured window's start (every household caught up and bidding) to its last clearing
    steady_cpu_s: dict[int, float] = field(default_factory=dict)
    steady_wall_s: float = 0.0  # wall seconds of that window
    validators: frozenset[int] = frozenset()  # the validators' node indices

    def steady_cores(self, *, validators: bool) -> float | None:
        """Mean cores one validator (or one household) daemon kept busy per wall second over
        the steady-state window (its idle cost plus its share of the slots' work); ``None`` if no
        window was measured."""
        picked = [
            cpu for i, cpu in self.steady_cpu_s.items() if (i in self.validators) == validators
        ]
        if not picked or self.steady_wall_s <= 0:
            return None
        return sum(picked) / len(picked) / self.steady_wall_s

    @property
    def wall_s_per_slot(self) -> float | None:
        """Mean wall seconds between consecutive clearings."""
        t = [x.cleared_wall_s for x in self.timings]
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None

    @property
    def committed_share(self) -> float | None:
        share: float | None = self.result.community()["orders_committed_share"]
        return share


# --------------------------------------------------------------------------------------- API


def _frozen_nodes(lc: LocalCommunity, speedup: float) -> list[str]:
    """Daemons whose node task died while the process kept serving a frozen snapshot (e.g. a
    household whose submission no validator acknowledged, before that was fixed): the clock their
    ``/api/status`` shows stops, while the community clock goes on."""
    assert lc.genesis is not None
    epoch_ms = lc.genesis.genesis_time_ms
    frozen = []
    for h in lc.households:
        if h.process is None or h.process.poll() is not None:
            continue
        try:
            shown_ms = lc.api(h.index, "/api/status", timeout_s=5)["now_ms"]
        except (OSError, ValueError, KeyError):
            continue
        community_ms = epoch_ms + (time.time() * 1000 - epoch_ms) * speedup
        if (community_ms - shown_ms) / speedup > _FROZEN_AFTER_S * 1000:
            frozen.append(h.name)
    return frozen


# --------------------------------------------------------------------------------------- run


def _check_supported(scenario: Scenario) -> None:
    if scenario.horizon_slots != QUOTED_SLOTS:
        raise UsageError(
            f"the daemon engine's households quote {QUOTED_SLOTS} open slot(s) ahead "
            f"(gridnode.household.agent.QUOTED_SLOTS); horizon_slots = {scenario.horizon_slots} runs only "
            "in the in-process engine (--engine inproc)"
        )
    if scenario.home_source == "shipped" and any(g.history_days for g in scenario.groups):
        raise UsageError(
            "cold-start households (households.group history_days) of the shipped household run "
            "only in the in-process engine (--engine inproc): its replay meter serves the whole "
            'shipped history; with real homes (households.source = "citylearn" or a meter '
            "folder) the daemon engine writes a cold-start household's meter file from "
            "history_days before the first slot"
        )
    bad = sorted({f.kind for f in scenario.faults if f.kind not in SUPPORTED_FAULTS})
    if bad:
        raise UsageError(
            f"the daemon engine supports only {', '.join(SUPPORTED_FAULTS)} faults; "
            f"{', '.join(bad)} run only in the in-process engine (--engine inproc)"
        )


def _stable_ports(lc: LocalCommunity, rng_seed: int) -> None:
    """Move every node's libp2p and API port below the kernel's ephemeral range.

    ``LocalCommunity`` picks free ephemeral ports when it creates the directories; with tens of
    daemons dialling each other, an outgoing connection of one daemon can take another's port
    before that one binds it ("address already in use"). Ports under 32768 are never handed out
    for outgoing connections."""
    rng = random.Random(rng_seed)
    taken: set[int] = set()

    def pick() -> int:
        while True:
            port = rng.randrange(20_000, 32_000)
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            taken.add(port)
            return port

    for h in lc.households:
        h.p2p_port, h.api_port = pick(), pick()
    boot = [h.multiaddr() for h in lc.households if h.role == "validator"]
    for h in lc.households:
        me = h.multiaddr()
        update_config(
            h.dir,
            {
                "network.listen": [f"/ip4/127.0.0.1/tcp/{h.p2p_port}"],
                "api.port": h.api_port,
                "network.bootstrap": [a for a in boot if a != me],
            },
        )


#: a household daemon's meter file when the scenario's homes are not the shipped household
METER_FILE = "meter.parquet"


def configure(
    lc: LocalCommunity, scenario: Scenario, specs: list[HouseholdSpec]
) -> tuple[list[str], int]:
    """Turn a freshly created community into the scenario's: validators not members, the scenario's
    tariffs and deadline in the genesis, each household's meter, forecaster and bidding in its
    config. The shipped household is replayed by the daemon's own replay meter; other homes (the
    CityLearn homes, a meter folder) are written as each household's meter file in node time
    (:func:`homes_clock`, which may move the genesis time). Returns the notes for the result and
    node time − data time (0 for the shipped household, whose replay meter anchors itself)."""
    assert lc.genesis is not None
    households = [h for h in lc.households if h.role == "full"]
    lead = warmup_s(scenario, len(lc.households), lc.speedup)
    genesis_s, shift = homes_clock(
        scenario, lc.genesis.genesis_time_ms // 1000, lc.speedup, lead_s=lead
    )
    lc.genesis = replace(
        lc.genesis,
        genesis_time_ms=genesis_s * 1000
        if scenario.home_source != "shipped"
        else lc.genesis.genesis_time_ms,
        members=tuple(h.key.public_hex for h in households),
        retail_micro_per_kwh=scenario.retail_micro_per_kwh,
        feed_in_micro_per_kwh=scenario.feed_in_micro_per_kwh,
        grid_fee_micro_per_kwh=scenario.grid_fee_micro_per_kwh,
        reading_deadline_seconds=scenario.reading_deadline_seconds,
    )
    for h in lc.households:
        write_genesis(h.dir / "genesis.toml", lc.genesis)
    site = scenario.site
    bidding: dict[str, Any] = {
        "bidding.enabled": True,
        "bidding.policy": scenario.policy,
        "bidding.model": scenario.model,
    }
    if site.latitude is not None and site.longitude is not None:
        bidding |= {"household.latitude": site.latitude, "household.longitude": site.longitude}
    if site.holiday_country is not None:
        bidding["household.holiday_country"] = site.holiday_country
    if site.holiday_subdiv is not None:
        bidding["household.holiday_subdiv"] = site.holiday_subdiv
    for h, spec in zip(households, specs, strict=True):
        sizes = {
            "household.pv_kwp": spec.pv_kwp,
            "household.battery_kwh": spec.battery_kwh,
            "household.battery_kw": spec.battery_kw,
        }
        if scenario.home_source == "shipped":
            meter: dict[str, Any] = {
                "meter.source": "replay",
                "meter.replay_day": scenario.start_day,
                "meter.replay_day_offset": spec.day_offset,
                "meter.replay_hour": scenario.start_hour,
                "meter.pv_scale": spec.pv_scale,
                "meter.load_scale": spec.load_scale,
            }
        else:
            write_meter_file(_home_row(scenario, spec), h.dir / METER_FILE, shift_s=shift)
            meter = {"meter.source": "file", "bidding.meter_history": METER_FILE}
        update_config(h.dir, meter | sizes | bidding)
    return _training_config(lc.households, scenario), shift  # validators too: they aggregate


def _training_config(households: list[Any], scenario: Scenario) -> list[str]:
    """Write ``[training] mode = "federated"`` and ``round_every_s`` into every daemon's config
    (the validators aggregate the rounds, the households contribute) for a federated scenario; the
    notes for the result. A daemon whose config does not know the
    ``[training]`` keys (a build before federated rounds in the daemon) trains locally: said in
    the notes, not hidden."""
    if scenario.training != "federated":
        return []
    keys = {"training.mode": "federated",
            "training.round_every_s": scenario.round_every_days * 86_400}  # fmt: skip
    try:
        for h in households:
            update_config(h.dir, keys)
    except UsageError as exc:
        return [
            f"training = federated was NOT applied: these daemons' config has no [training] keys "
            f"({exc}); every household trained locally (run --engine inproc for federated rounds)"
        ]
    return [
        f"training = federated: every daemon configured with a round every "
        f"{scenario.round_every_days} day(s) at 00:00 UTC node time, aggregated by the validators "
        f"in turn (no rounds before the first slot: rounds_before_start applies to the in-process "
        f"engine only); the rounds are in `rounds` (round time is wall seconds, not CPU)"
    ]


#: a year as the daemon engine shifts real homes: the whole weeks nearest 365.25 days
_YEAR_S: Final = 365.25 * 86_400


def warmup_s(scenario: Scenario, daemons: int, speedup: float) -> int:
    """Node seconds a real-home community is started ahead of ``start_day``/``start_hour`` (with a
    clock speed-up): the wall time its daemons may take to start (:func:`run_daemons` waits
    60 s + 3 s per daemon for them, and the first measured slot must be quoted before its gate),
    whole slots. So the measured slots begin at the scenario's start, the same data hours in every
    run of the scenario (each policy's, and the in-process engine's), not wherever start-up ended."""
    if scenario.home_source == "shipped" or speedup <= 1.0:
        return 0
    node_s = (60.0 + 3.0 * daemons + 2 * scenario.slot_seconds / speedup) * speedup
    return math.ceil(node_s / scenario.slot_seconds) * scenario.slot_seconds


def homes_clock(
    scenario: Scenario, now_s: int, speedup: float, *, lead_s: int = 0
) -> tuple[int, int]:
    """``(genesis_s, shift_s)`` for a community of real homes: the genesis time, and node time −
    data time, a whole number of weeks nearest a whole number of years — so the homes keep their
    weekdays and time of day, and the sun its season (within half a week): the forecaster's
    calendar and clear-sky PV stay right. With a clock speed-up the genesis is put back (by up to
    a year / (speedup − 1)) so that node time ``now_s`` is ``start_day`` at ``start_hour`` of the
    homes' calendar, those years later; in real time the node clock is the wall clock, and the
    replay runs the homes' data of the wall clock's date in the data year nearest ``start_day``.
    ``lead_s``: node time ``now_s`` is that much earlier in the homes' data (:func:`warmup_s`).
    The shipped household: ``(now_s, 0)`` (its replay meter anchors itself)."""
    if scenario.home_source == "shipped":
        return now_s, 0
    start = _data_start_s(scenario) - lead_s

    def shift_of(years: int) -> int:
        return round(years * _YEAR_S / WEEK_S) * WEEK_S

    if speedup <= 1.0:
        return now_s, shift_of(round((now_s - start) / _YEAR_S))
    years = max(0, math.ceil((now_s - start) / _YEAR_S))
    while start + shift_of(years) < now_s:
        years += 1
    shift = shift_of(years)
    return now_s - int((start + shift - now_s) / (speedup - 1.0)), shift


def _data_start_s(scenario: Scenario) -> int:
    """``start_day`` at ``start_hour`` of the homes' calendar, as data time (unix seconds)."""
    day = dt.date.fromisoformat(scenario.start_day)
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return midnight - data_utc_offset_s(scenario) + int(scenario.start_hour * 3600)


def _home_row(scenario: Scenario, spec: HouseholdSpec) -> MeterHistory:
    """The household's history in the data's time: its home's meter data replayed its day offset
    later, PV and load scaled (the row :func:`sims.homes.community_history` gives the in-process
    engine). All of it, or for a cold-start household (``history_days``) only what follows
    ``history_days`` before the first slot, as :func:`sims.training.cohorts` cuts it in process:
    the daemon's meter file then begins there, and the daemon knows nothing earlier."""
    home = home_histories(scenario)[spec.home]
    start = home.start_s - spec.day_offset * 86_400
    if home.pv_w is not None and home.load_w is not None:
        row = MeterHistory.from_components(
            home.pv_w * spec.pv_scale, home.load_w * spec.load_scale,
            start_s=start, step_s=home.step_s, utc_offset_s=home.utc_offset_s,
        )  # fmt: skip
    else:
        row = MeterHistory.from_net(home.net_w, start_s=start, step_s=home.step_s,
                                    utc_offset_s=home.utc_offset_s)  # fmt: skip
    if not spec.history_days:
        return row
    begins = _data_start_s(scenario) - spec.history_days * 86_400
    if begins <= row.start_s:
        return row
    return row.window(begins - (begins - row.start_s) % row.step_s, row.end_s)


def run_daemons(
    scenario: Scenario,
    root: Path,
    *,
    speedup: float = 60.0,
    slots: int | None = None,
    ready_timeout_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    household_nice: int = 0,
) -> DaemonRun:
    """Run ``scenario`` with real daemons under ``root`` (must be empty or absent).

    ``slots`` overrides the scenario's slot count (a day is 96 slots: at ``speedup`` 60 that is 24
    minutes of wall time). ``progress(done, planned)`` is called as slots clear. Ctrl-C stops the
    daemons and returns what was committed, marked ``interrupted``. ``household_nice`` > 0 starts
    the household daemons at that lower CPU priority (:meth:`LocalCommunity.start`; the
    validators keep the default), so that many households on one machine do not starve the
    committee; the run's notes say so.
    """
    _check_supported(scenario)
    say = log or (lambda _msg: None)
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} exists and is not empty")
    planned = slots if slots is not None else scenario.slots
    if planned < 1:
        raise UsageError("slots must be >= 1")
    specs = scenario.household_specs()
    hh_keys, v_keys = scenario.node_keys()
    lc = LocalCommunity(
        root,
        validators=scenario.validators,
        full_nodes=scenario.households,
        speedup=speedup,
        slot_seconds=scenario.slot_seconds,
        gate_lead_seconds=scenario.gate_lead_seconds,
        rule=scenario.rule,
        netting=scenario.netting,
        community_id=_community_id(scenario.name),
        keys=(*v_keys, *hh_keys),
    )
    lc.create()
    _stable_ports(lc, os.getpid())
    training_notes, shift_s = configure(lc, scenario, specs)
    n = len(lc.households)
    wall0 = time.monotonic()
    say(f"starting {n} daemons ({scenario.validators} validators) under {root}")
    try:
        run = _run_started(
            lc, scenario, specs, planned=planned, speedup=speedup, ready_timeout_s=ready_timeout_s,
            progress=progress, say=say, wall0=wall0, household_nice=household_nice,
            start_s=_data_start_s(scenario) + shift_s if warmup_s(scenario, n, speedup) else None,
        )  # fmt: skip
        run.result.training = scenario.training
        run.result.notes.extend(training_notes)
        if scenario.home_source != "shipped":  # the homes' meter files run shift_s behind
            run.local_offset_s = data_utc_offset_s(scenario) - shift_s
        return run
    except BaseException:
        lc.stop()  # never leave daemons behind (a start-up failure, a bug, Ctrl-C during collection)
        raise


def _community_id(name: str) -> str:
    """A community id from a scenario name: letters, digits, ``_ . -``; others become ``-``."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "-" for c in name)
    return safe[:64] or "sim"


def _run_started(
    lc: LocalCommunity,
    scenario: Scenario,
    specs: list[HouseholdSpec],
    *,
    planned: int,
    speedup: float,
    ready_timeout_s: float | None,
    progress: Callable[[int, int], None] | None,
    say: Callable[[str], None],
    wall0: float,
    start_s: int | None = None,
    household_nice: int = 0,
) -> DaemonRun:
    """``start_s``: measure from the slot starting there (node time; real homes, see
    :func:`warmup_s`), else — or when start-up took longer — from two slots after start-up."""
    assert lc.genesis is not None
    clock = lc.genesis.clock
    n = len(lc.households)
    # validators first; households in small batches, so the validators are not answering 46
    # connection handshakes while the first households already submit (a household whose submission
    # no validator acknowledges in time loses its bidding loop: see _frozen_nodes)
    validators = [h.index for h in lc.households if h.role == "validator"]
    lc.start(which=validators)
    timings: list[SlotTiming] = []
    served: dict[int, dict[int, tuple[int | None, list[tuple[Any, ...]]]]] = {}
    faults: list[FaultEvent] = []
    interrupted = stalled = start_stalled = False
    steady_cpu: dict[int, float] = {}
    steady_wall_s = 0.0
    first = last = 0
    late: list[str] = []
    startup = 0.0
    try:
        lc.wait_ready(ready_timeout_s or 60.0 + 3.0 * n, which=validators)
        rest = [h.index for h in lc.households if h.role != "validator"]
        slot_wall_s = scenario.slot_seconds / speedup
        growing = _LedgerWatch(lc, stall_s=max(60.0, 4 * slot_wall_s))
        for i in range(0, len(rest), _START_BATCH):
            batch = rest[i : i + _START_BATCH]
            lc.start(which=batch, nice=household_nice)
            lc.wait_ready(ready_timeout_s or 60.0 + 3.0 * n, which=batch)
            if not growing.still():
                raise _StartupStalled(
                    f"the ledger stopped growing during start-up (height {growing.height} for "
                    f"{growing.stall_s:.0f} s with {len(validators) + i + len(batch)} of {n} "
                    "daemons started): nothing measured"
                )
        # ready to trade: every household has caught up with the chain and its bidding loop has
        # made a step a validator accepted (its first forecast, a model fit, is the slowest)
        silent = _await_first_bids(lc, rest, timeout_s=3 * slot_wall_s + 60.0 + 2.0 * n)
        if not growing.still():
            raise _StartupStalled(
                f"the ledger stopped growing during start-up (height {growing.height} for "
                f"{growing.stall_s:.0f} s, all {n} daemons started): nothing measured"
            )
        if silent:
            late.append(
                f"{len(silent)} households had not caught up or bid when measuring began "
                f"({', '.join(silent[:10])}{'…' if len(silent) > 10 else ''})"
            )
        startup = time.monotonic() - wall0
        status = lc.api(0, "/api/status")
        first = status["current_slot"] + 2  # every household has quoted it before its gate
        if start_s is not None:
            if clock.slot_at(start_s) >= first:
                first = clock.slot_at(start_s)
            else:
                late.append(
                    f"the daemons were ready after the scenario's start: measured from slot "
                    f"{first}, {first - clock.slot_at(start_s)} slot(s) after it (other runs of "
                    f"this scenario may cover other hours)"
                )
        last = first + planned - 1
        say(f"{n} daemons ready in {startup:.1f} s; measuring slots {first}..{last}")
        steady0 = (time.monotonic(), _all_cpu_seconds(lc))
        sim_start_s = clock.start(first)
        pending = sorted(
            (f.at_s, i, f) for i, f in enumerate(scenario.faults)
        )  # crash at at_s, restart at at_s + duration_s
        restarts: list[tuple[int, int]] = []
        seen = first - 1
        settled_at_first = -1
        deadline = time.monotonic() + (planned + 4) * slot_wall_s * 4 + 120
        last_height, last_progress = -1, time.monotonic()
        stall_s = max(60.0, 4 * slot_wall_s)
        while seen < last and time.monotonic() < deadline:
            try:
                status = lc.api(0, "/api/status", timeout_s=5)
            except OSError:
                time.sleep(0.2)
                continue
            if status["height"] != last_height:
                last_height, last_progress = status["height"], time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                stalled = True
                say(f"the ledger stalled at height {last_height} for {stall_s:.0f} s: stopping")
                break
            now_node_s = status["now_ms"] // 1000
            while pending and now_node_s >= sim_start_s + pending[0][0]:
                at, _, f = pending.pop(0)
                lc.kill(f.validator, signal.SIGKILL)
                faults.append(FaultEvent(sim_start_s + at, "crash", f"validator {f.validator}"))
                say(f"fault: crashed validator {f.validator}")
                if f.duration_s:
                    restarts.append((sim_start_s + at + f.duration_s, f.validator))
            for at, v in list(restarts):
                if now_node_s >= at:
                    lc.start(which=[v])
                    faults.append(FaultEvent(at, "restart", f"validator {v}"))
                    restarts.remove((at, v))
                    say(f"fault: restarted validator {v}")
            cleared = status["last_cleared_slot"]
            if cleared >= first and settled_at_first < 0:
                settled_at_first = status["settled_slots"]
            if cleared > seen:
                wall = time.time()
                for s in range(max(seen + 1, first), min(cleared, last) + 1):
                    gate_node_ms = clock.gate_closure(s) * 1000
                    gate_wall = _wall_at(status["now_ms"], gate_node_ms, wall, speedup)
                    timings.append(SlotTiming(s, wall, gate_wall, status["height"]))
                    served[s] = {i: _served(lc, i, s) for i in (0, n - 1)}
                    if progress is not None:
                        progress(s - first + 1, planned)
                seen = cleared
            time.sleep(0.25)
        steady1 = (time.monotonic(), _all_cpu_seconds(lc))
        steady_wall_s = steady1[0] - steady0[0]
        steady_cpu = {i: cpu - steady0[1].get(i, cpu) for i, cpu in steady1[1].items()}
        # settlement of the last slot needs its readings (one slot later)
        lc.wait_for(
            lambda: (
                lc.api(0, "/api/status")["block_time_ms"] // 1000
                >= clock.end(last) + scenario.reading_deadline_seconds + scenario.slot_seconds // 10
            ),
            timeout_s=(scenario.reading_deadline_seconds / speedup) * 3 + 60,
        )
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: stopping the daemons and collecting what was committed")
    except _StartupStalled as exc:
        start_stalled = True
        late.append(str(exc))
        say(str(exc))
    # what every node serves: (height, head hash, state digest). The chain keeps growing while we
    # ask N nodes one after the other, so nodes are compared with the replayed chain at *their*
    # height rather than with each other at one instant.
    served_heads: dict[int, tuple[int, str, str]] = {}
    if not interrupted and not start_stalled:

        def every_node_answers() -> bool:
            for h in lc.households:
                if h.index not in served_heads:
                    st = lc.api(h.index, "/api/status", timeout_s=5)
                    if st["height"] >= (timings[-1].height if timings else 1):
                        served_heads[h.index] = (
                            st["height"], st["head_hash"], st["state_digest"]
                        )  # fmt: skip
            return len(served_heads) == len(lc.households)

        lc.wait_for(every_node_answers, 30 + n, poll_s=0.5)
    frozen = _frozen_nodes(lc, speedup)
    save_submissions(lc)
    cpu = _all_cpu_seconds(lc)
    codes = lc.stop()
    bad_exits = {i: c for i, c in codes.items() if c not in (0, -9)}
    result, trades, replay = collect(
        lc,
        scenario,
        specs,
        first=first,
        last=last,
        speedup=speedup,
        digest_at=frozenset(v[0] for v in served_heads.values()),
    )
    result.wall_seconds = time.monotonic() - wall0
    fates = None
    if first > 0:  # a measured window was chosen (not interrupted during start-up)
        fates = order_fates(
            [(h.key.public_hex, h.dir) for h in lc.households if h.role == "full"],
            replay, clock, slots=(first, last), speedup=speedup, quoted_slots=QUOTED_SLOTS,
        )  # fmt: skip
    missed = {f: fates.total(f) for f in FATES[1:] if fates.total(f)} if fates else {}
    if fates and missed:
        why = ", ".join(f"{n} {f}" for f, n in missed.items())
        reasons = ", ".join(f"{r} × {n}" for r, n in sorted(fates.refusals.items()))
        result.notes.append(
            f"household-slots whose order missed its slot: {why}"
            + (f" (refused: {reasons})" if reasons else "")
        )
    result.interrupted = interrupted or start_stalled
    result.faults = faults
    result.slots_planned = planned
    if not result.interrupted:
        # every node's served (head, digest) is the replayed chain's at that node's height
        wrong = {i: v for i, v in served_heads.items() if replay.digests.get(v[0]) != (v[1], v[2])}
        missing = len(lc.households) - len(served_heads)
        result.ledger_agreement = not wrong and not missing
        if served_heads:
            _, head, digest = max(served_heads.values())
            result.head_hash, result.state_digest = head, digest
        if wrong:
            result.notes.append(
                f"nodes {sorted(wrong)} served a head or state digest that the replayed chain "
                "does not have at their height"
            )
        if missing:
            result.notes.append(f"{missing} nodes did not answer /api/status after the run")
        heights = sorted(v[0] for v in served_heads.values())
        if heights:
            result.notes.append(
                f"ledger agreement checked at every node's own height ({heights[0]}..{heights[-1]})"
            )
    result.notes.extend(late)
    if bad_exits:
        result.notes.append(f"daemons exited with codes {bad_exits}")
    if frozen:
        result.notes.append(
            f"{len(frozen)} daemons lost their node task while the process kept running: their "
            f"API's clock stood still ({', '.join(frozen[:10])}{'…' if len(frozen) > 10 else ''}; "
            "see their daemon.log)"
        )
    if stalled:
        result.notes.append("the ledger stopped growing: the run was cut short (see daemon logs)")
        result.interrupted = True
    result.notes.append(
        f"daemon engine: {n} gridnode processes ({scenario.validators} validators), clock speed-up "
        f"{speedup:g} ({scenario.slot_seconds / speedup:.1f} s per slot), started in {startup:.1f} s"
        + (f"; household daemons at nice {household_nice}" if household_nice else "")
    )
    if len(timings) > 1:
        lags = sorted(t.lag_s for t in timings)
        per_slot = (timings[-1].cleared_wall_s - timings[0].cleared_wall_s) / (len(timings) - 1)
        result.notes.append(
            f"measured {per_slot:.1f} wall s per slot between clearings; clearing lag after gate "
            f"closure p50 {statistics.median(lags):.1f} s, max {lags[-1]:.1f} s; daemons used "
            f"{sum(cpu.values()):.0f} CPU s"
        )
    return DaemonRun(
        result, trades, lc.root, timings, speedup, n, startup, served, cpu,
        timings[-1].cleared_wall_s - timings[0].cleared_wall_s if timings else 0.0, first,
        fates=fates, steady_cpu_s=steady_cpu, steady_wall_s=steady_wall_s,
        validators=frozenset(validators),
    )  # fmt: skip


def _all_cpu_seconds(lc: LocalCommunity) -> dict[int, float]:
    """CPU seconds each running daemon has used so far, by node index."""
    return {h.index: _cpu_seconds(h.process.pid) for h in lc.households if h.process is not None}


class _StartupStalled(Exception):
    """The ledger stopped growing while the daemons started (the machine is overloaded)."""


class _LedgerWatch:
    """Whether the ledger still grows: validator 0's height, asked at each :meth:`still`; false
    once it has not changed (or not been answered) for ``stall_s`` wall seconds."""

    def __init__(self, lc: LocalCommunity, *, stall_s: float) -> None:
        self.lc, self.stall_s = lc, stall_s
        self.height, self.since = -1, time.monotonic()

    def still(self) -> bool:
        try:
            height = int(self.lc.api(0, "/api/status", timeout_s=5)["height"])
        except (OSError, ValueError, KeyError):
            height = self.height
        if height != self.height:
            self.height, self.since = height, time.monotonic()
        return time.monotonic() - self.since <= self.stall_s


#: a household is caught up when its height is at most this many blocks below validator 0's
_SYNCED_BLOCKS = 3


def _await_first_bids(lc: LocalCommunity, indices: list[int], *, timeout_s: float) -> list[str]:
    """Wait until each household in ``indices`` is ready to trade: it lists a submission a
    validator accepted in its ``/api/submissions`` (its bidding loop has run a step end to end) and
    has caught up with the chain (its height within :data:`_SYNCED_BLOCKS` of validator 0's; a
    household started late replays every block since genesis, on the thread its bidding runs on).
    The names of those that were not within ``timeout_s``."""
    waiting = set(indices)
    deadline = time.monotonic() + timeout_s

    def all_ready() -> bool:
        head = int(lc.api(0, "/api/status", timeout_s=5)["height"])
        for i in sorted(waiting):
            if time.monotonic() > deadline:  # an overloaded machine answers slowly: stop asking
                break
            try:
                height = int(lc.api(i, "/api/status", timeout_s=5)["height"])
                if height < head - _SYNCED_BLOCKS:
                    continue
                doc = lc.api(i, "/api/submissions", timeout_s=5)
            except (OSError, ValueError, KeyError):
                continue
            if any(sub.get("accepted") for sub in doc.get("submissions", ())):
                waiting.discard(i)
        return not waiting

    lc.wait_for(all_ready, timeout_s, poll_s=0.5)
    return [lc.households[i].name for i in sorted(waiting)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _served(lc: LocalCommunity, index: int, slot: int) -> tuple[int | None, list[tuple[Any, ...]]]:
    """A node's API view of a cleared slot's trades (before settlement drops them)."""
    found: list[Any] = []

    def fetch() -> bool:  # a household may apply the clearing block a moment after the validator
        doc = lc.api(index, f"/api/trades?slot={slot}", timeout_s=5)
        if doc.get("slots"):
            found.append(doc["slots"][0])
        return bool(found)

    if not lc.wait_for(fetch, 5.0, poll_s=0.05):
        return (None, [("unavailable",)])
    info = found[0]
    rows = [
        (t["buyer"], t["seller"], t["energy_wh"], t["price_micro_per_kwh"], t["amount_micro"])
        for t in info["trades"]
    ]
    return (info["clearing_price_micro_per_kwh"], rows)


def _wall_at(now_node_ms: int, at_node_ms: int, now_wall_s: float, speedup: float) -> float:
    """Wall time of node time ``at_node_ms``, given that node time ``now_node_ms`` is ``now_wall_s``."""
    return now_wall_s - (now_node_ms - at_node_ms) / 1000 / speedup


def inproc_twin(scenario: Scenario, run: DaemonRun) -> tuple[Scenario, int]:
    """``(twin, first_slot)`` such that ``sims.inproc.run_inproc(twin, first_slot=first_slot)`` runs
    exactly the slots ``run`` (a run of ``scenario``) measured, on the same data.

    The daemons replay ``start_day`` at ``start_hour`` from the genesis time (put on the data's
    15-minute grid) and measure from a slot after start-up. ``twin`` is ``scenario`` starting at the
    data time of that first measured slot (``start_day``/``start_hour`` moved on by as much; the
    households' day offsets, sizes and keys are unchanged: they depend on the seed only) and lasting
    the measured slots, quoting as many slots ahead as the daemon does
    (:data:`gridnode.household.agent.QUOTED_SLOTS` as ``horizon_slots``); ``first_slot`` numbers the
    in-process slots as the daemons' node clock did (order ids contain the slot). Each household
    then quotes the same slots, at the same slot boundaries, from the same meter history in both
    engines.
    """
    if run.first_slot <= 0 or run.result.slots_planned < 1:
        raise UsageError("the daemon run measured no slot")
    if scenario.home_source != "shipped":
        raise UsageError("inproc_twin lines up runs of the shipped household only")
    genesis = load_genesis(run.root / "node0" / "genesis.toml")
    meter = shipped_replay(  # what the daemons' make_meter built; only its node anchor matters here
        node_anchor_s=genesis.genesis_time_ms // 1000,
        day=scenario.start_day,
        hour=scenario.start_hour,
    )
    after_s = genesis.clock.start(run.first_slot) - meter.node_anchor_s
    start = dt.datetime.fromisoformat(scenario.start_day) + dt.timedelta(
        seconds=int(scenario.start_hour * 3600) + after_s
    )
    seconds = start.hour * 3600 + start.minute * 60 + start.second
    hour = seconds / 3600
    if int(hour * 3600) != seconds:  # the in-process engine reads the hour back this way
        raise UsageError(f"the first measured slot starts at {start}, not a whole second in hours")
    twin = replace(
        scenario,
        start_day=start.date().isoformat(),
        start_hour=hour,
        days=run.result.slots_planned * scenario.slot_seconds / 86_400,
        horizon_slots=QUOTED_SLOTS,
    )
    return twin, run.first_slot
