"""A live meter: register samples from an adapter → per-slot energy, history, kept on disk.

:class:`LiveMeter` is the :class:`~gridnode.meter.Meter` behind ``meter.source = "dsmr"`` and
``"mqtt"``. An adapter's reader (:mod:`gridnode.meters.dsmr`, :mod:`gridnode.meters.mqtt`) calls
:meth:`LiveMeter.record` with register values as they arrive; the node asks
:meth:`LiveMeter.slot_net_wh` for each delivered slot and :meth:`LiveMeter.history_before` for the
forecaster. The rules that turn samples into slot energy are :mod:`gridnode.meters.registers`'.

* **Time.** Samples are stamped on arrival with the node's clock (``now_ms``: the same community
  clock the slots run on, sped up in demos), never with the meter's own timestamp: not every source
  sends one, meters' clocks drift and DSMR's is local time with a DST flag. Stamps strictly increase
  (a stamp is at least the previous one + 1 ms, and after a query at ``now`` a stamp is > ``now``),
  so a boundary's value is final as soon as the node has seen its time pass.
* **Persistence** (``DIR/data/meter.sqlite``, SQLite in WAL mode): every boundary value the moment it
  is final (table ``held``: register, boundary, value, segment, the sample's time), and each register's
  last sample (table ``last_sample``) at every boundary crossing, at most a minute of node time apart
  and on close. A restart therefore loses no finished slot; a slot whose boundary passed while the
  daemon was down is ``None`` unless the last sample before the stop is young enough to hold it.
* **Threads.** The reader runs on the daemon's asyncio loop, the node on the trio thread; one lock
  guards the state and the SQLite connection (calls are short: a few rows).
* **Registers.** ``import`` (from the grid) is always read; ``export`` (to the grid) when the meter
  has one (a meter without one means the household never exports: 0 Wh); ``pv`` (production)
  optionally, which gives the forecaster PV and load separately. A slot's reading is
  ``export - import`` Wh, ``None`` unless every configured register has both boundary values in one
  segment.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from gridnode.meter import Meter
from gridnode.meters.registers import (
    Break,
    Held,
    PowerIntegrator,
    Rules,
    Sample,
    Tracked,
    advance,
    held_at,
    slot_energy_wh,
)
from market.errors import InvalidInput, UsageError
from market.slots import SlotClock

if TYPE_CHECKING:  # the forecaster's series (numpy at import): read where a history is built
    from forecasting.series import MeterHistory

__all__ = ["REGISTERS", "LiveMeter", "MeterStore", "SlotEnergy"]

log = logging.getLogger(__name__)

REGISTERS: Final = ("import", "export", "pv")
#: interior history gaps up to this many slots are filled linearly; a longer gap ends the history
MAX_FILLED_SLOTS: Final = 4
#: how often (node ms) a register's last sample is written even without a boundary crossing
PERSIST_LAST_MS: Final = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    register TEXT NOT NULL, boundary_s INTEGER NOT NULL, value_mwh INTEGER NOT NULL,
    segment INTEGER NOT NULL, sample_ms INTEGER NOT NULL, PRIMARY KEY (register, boundary_s)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_sample (
    register TEXT PRIMARY KEY, t_ms INTEGER NOT NULL, value_mwh INTEGER NOT NULL,
    source TEXT NOT NULL, segment INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SlotEnergy:
    """What the registers counted in one slot (whole Wh)."""

    slot: int
    import_wh: int
    export_wh: int
    pv_wh: int | None = None

    @property
    def net_wh(self) -> int:
        """The reading the ledger takes: export minus import (``+`` = surplus)."""
        return self.export_wh - self.import_wh

    @property
    def load_wh(self) -> int | None:
        """Consumption, when PV is metered: PV + import - export."""
        return None if self.pv_wh is None else self.pv_wh + self.import_wh - self.export_wh


class MeterStore:
    """The meter's SQLite file (schema in the module docstring). Not thread-safe by itself."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> MeterStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return cls(conn, path)

    def put_held(self, register: str, rows: Iterable[Held]) -> None:
        self._conn.executemany(
            "INSERT OR IGNORE INTO held VALUES (?, ?, ?, ?, ?)",
            [(register, h.boundary_s, h.value_mwh, h.segment, h.sample_ms) for h in rows],
        )

    def held(self, register: str, first_s: int, last_s: int) -> dict[int, Held]:
        """Boundary values of ``register`` with ``first_s <= boundary <= last_s``."""
        cur = self._conn.execute(
            "SELECT boundary_s, value_mwh, segment, sample_ms FROM held "
            "WHERE register = ? AND boundary_s BETWEEN ? AND ?",
            (register, first_s, last_s),
        )
        return {b: Held(b, v, seg, t) for b, v, seg, t in cur}

    def put_last(self, register: str, tracked: Tracked) -> None:
        s = tracked.sample
        self._conn.execute(
            "INSERT OR REPLACE INTO last_sample VALUES (?, ?, ?, ?, ?)",
            (register, s.t_ms, s.value_mwh, s.source, tracked.segment),
        )

    def last(self, register: str) -> Tracked | None:
        row = self._conn.execute(
            "SELECT t_ms, value_mwh, source, segment FROM last_sample WHERE register = ?",
            (register,),
        ).fetchone()
        return None if row is None else Tracked(Sample(row[0], row[1], row[2]), row[3])

    def close(self) -> None:
        self._conn.close()


class LiveMeter(Meter):
    """Register samples in, slot energy and history out (see the module docstring)."""

    def __init__(
        self,
        *,
        store: MeterStore,
        rules: Rules,
        now_ms: Callable[[], int],
        registers: tuple[str, ...] = ("import", "export"),
        source_id: str = "",
        exact: bool = True,
        utc_offset_s: int = 0,
    ) -> None:
        if "import" not in registers or not set(registers) <= set(REGISTERS):
            raise UsageError(f"registers must include 'import' and be among {REGISTERS}")
        self.store = store
        self.rules = rules
        self.registers = registers
        self.source_id = source_id
        #: False when the registers are integrated from power samples (less exact; documented)
        self.exact = exact
        self.utc_offset_s = utc_offset_s
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self._tracks: dict[str, Tracked | None] = {r: store.last(r) for r in registers}
        self._persisted_ms: dict[str, int] = {}
        self._floor_ms = max((t.sample.t_ms for t in self._tracks.values() if t), default=0)
        self._power = PowerIntegrator(rules.max_age_s * 1000)
        #: what arrived: ``samples``, segment ``break:<reason>``, ``dropped:<reason>``
        self.counts: Counter[str] = Counter()
        #: one connection's reading loop (asyncio), set by :func:`gridnode.meters.open_live_meter`
        self.reader: Callable[[], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ adapter side
    def _stamp(self) -> int:
        t = max(self._now_ms(), self._floor_ms + 1)
        self._floor_ms = t
        return t

    def record(self, values_mwh: Mapping[str, int], *, source: str = "") -> None:
        """Register values (mWh) read now from the meter called ``source`` (its identity, or "")."""
        unknown = set(values_mwh) - set(self.registers)
        if unknown:
            raise UsageError(f"registers {sorted(unknown)} are not configured for this meter")
        with self._lock:
            self._record(self._stamp(), values_mwh, source)

    def _record(self, t_ms: int, values_mwh: Mapping[str, int], source: str) -> None:
        src = f"{self.source_id}|{source}"
        for register, value in values_mwh.items():
            prev = self._tracks[register]
            tracked, fixed, why = advance(prev, Sample(t_ms, value, src), self.rules)
            self._tracks[register] = tracked
            self.counts["samples"] += 1
            if fixed:
                self.store.put_held(register, fixed)
            if why is not None:
                self.counts[f"break:{why.value}"] += 1
                if why is not Break.FIRST:
                    log.warning(
                        "meter register %s: new segment (%s) at %d mWh after %d mWh",
                        register, why.value, value, prev.sample.value_mwh if prev else 0,
                    )  # fmt: skip
            if (
                fixed
                or why is not None
                or t_ms - self._persisted_ms.get(register, 0) >= PERSIST_LAST_MS
            ):
                self.store.put_last(register, tracked)
                self._persisted_ms[register] = t_ms

    def record_power(self, power_w: int, *, source: str = "") -> None:
        """A signed power sample (W, ``+`` = import): integrated into the import/export registers."""
        with self._lock:
            t = self._stamp()
            self._power = self._power.step(t, power_w)
            imp, exp = self._power.samples()
            values = {"import": imp.value_mwh}
            if "export" in self.registers:
                values["export"] = exp.value_mwh
            self._record(t, values, f"{source}|{imp.source}")

    def drop(self, reason: str) -> None:
        """Count an input that was not a sample (bad CRC, not JSON, no such field, …)."""
        with self._lock:
            self.counts[f"dropped:{reason}"] += 1

    def close(self) -> None:
        with self._lock:
            for register, tracked in self._tracks.items():
                if tracked is not None:
                    self.store.put_last(register, tracked)
            self.store.close()

    # ------------------------------------------------------------------ node side
    def _held_range(self, register: str, first_s: int, last_s: int, now_ms: int) -> dict[int, Held]:
        rows = self.store.held(register, first_s, last_s)
        tracked = self._tracks[register]
        if tracked is not None:  # boundaries passed since the last sample: final now, keep them
            step = self.rules.slot_seconds
            start = max(first_s, -(-tracked.sample.t_ms // (step * 1000)) * step)
            new = []
            for b in range(start, last_s + 1, step):
                if b not in rows:
                    held = held_at(tracked, b, now_ms, self.rules)
                    if held is None:
                        break
                    rows[b] = held
                    new.append(held)
            if new:
                self.store.put_held(register, new)
        return rows

    def _energies(self, first_slot: int, last_slot: int) -> list[SlotEnergy | None]:
        """Slot energies of ``first_slot .. last_slot`` (inclusive)."""
        step = self.rules.slot_seconds
        with self._lock:
            now = max(self._now_ms(), self._floor_ms)
            self._floor_ms = now  # later samples are stamped after this query
            rows = {
                r: self._held_range(r, first_slot * step, (last_slot + 1) * step, now)
                for r in self.registers
            }
        out: list[SlotEnergy | None] = []
        for slot in range(first_slot, last_slot + 1):
            a, b = slot * step, (slot + 1) * step
            wh = {r: slot_energy_wh(rows[r].get(a), rows[r].get(b)) for r in self.registers}
            if any(v is None for v in wh.values()):
                out.append(None)
                continue
            out.append(SlotEnergy(slot, wh["import"] or 0, wh.get("export") or 0, wh.get("pv")))
        return out

    def slot_energy(self, slot: int) -> SlotEnergy | None:
        """What the registers counted in ``slot``; ``None`` if a boundary value is missing, the
        slot has not ended, or a register was reset inside it."""
        return self._energies(slot, slot)[0]

    def slot_net_wh(self, slot: int, clock: SlotClock) -> int | None:
        if clock.slot_seconds != self.rules.slot_seconds:
            raise UsageError(
                f"the meter reads {self.rules.slot_seconds}-s slots, the clock has {clock.slot_seconds}-s"
            )
        energy = self.slot_energy(slot)
        return None if energy is None else energy.net_wh

    def slot_pv_load_wh(self, slot: int, clock: SlotClock) -> tuple[int, int] | None:
        energy = self.slot_energy(slot) if clock.slot_seconds == self.rules.slot_seconds else None
        if energy is None or energy.pv_wh is None or energy.load_wh is None:
            return None
        return energy.pv_wh, energy.load_wh

    def history_before(self, node_s: int, *, days: int) -> MeterHistory:
        """Mean power per slot over the last ``days`` before ``node_s``, from the stored boundary
        values: trailing slots without a reading are dropped, interior gaps of up to
        :data:`MAX_FILLED_SLOTS` slots are filled linearly, and a longer gap ends the history (it
        starts after the gap). :class:`InvalidInput` ``no_history`` with fewer than two slots."""
        step = self.rules.slot_seconds
        end_slot = node_s // step  # the slot running at node_s is not finished
        first_slot = max(0, end_slot - days * 86_400 // step)
        energies = self._energies(first_slot, end_slot - 1) if end_slot > first_slot else []
        known = [i for i, e in enumerate(energies) if e is not None]
        if not known:
            energies = []
        else:
            energies = energies[: known[-1] + 1]
            for i, j in itertools.pairwise(known):
                if j - i - 1 > MAX_FILLED_SLOTS:
                    energies[:j] = [None] * j
            start = next(i for i, e in enumerate(energies) if e is not None)
            energies = energies[start:]
            first_slot += start
        if len(energies) < 2:
            raise InvalidInput(
                reason="no_history", subject="live meter", expected=">= 2 metered slots",
                found=f"{len(energies)} before {node_s}",
            )  # fmt: skip
        from forecasting.series import MeterHistory  # noqa: PLC0415 - a household's, once serving

        idx = np.arange(len(energies))
        ok = np.array([e is not None for e in energies])
        to_w = 3600.0 / step

        def series(values: list[float]) -> np.ndarray:
            arr = np.array(values, dtype=np.float64)
            return np.interp(idx, idx[ok], arr[ok]) * to_w

        nan = float("nan")
        if "pv" in self.registers:
            pv = series([nan if e is None else float(e.pv_wh or 0) for e in energies])
            load = series([nan if e is None else float(e.load_wh or 0) for e in energies])
            return MeterHistory.from_components(
                pv, load, start_s=first_slot * step, step_s=step, utc_offset_s=self.utc_offset_s
            )
        net = series([nan if e is None else float(e.net_wh) for e in energies])
        return MeterHistory.from_net(
            net, start_s=first_slot * step, step_s=step, utc_offset_s=self.utc_offset_s
        )
