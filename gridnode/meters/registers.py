"""Cumulative energy registers → exact Wh per delivery slot (pure: no I/O, no clock).

A real meter counts energy in **registers**: cumulative counters that only go up (grid import,
grid export, PV production). The meter adapters (:mod:`gridnode.meters.dsmr`,
:mod:`gridnode.meters.mqtt`) turn telegrams and messages into :class:`Sample` values of one register;
this module turns the samples into the energy of each delivery slot. Rules:

* **Units.** Register values are integer **milli-watt-hours** (mWh), so every unit meters publish
  (Wh, kWh with three decimals, Shelly's watt-minutes) converts exactly or to within 0.5 mWh
  (:func:`to_mwh`, round half to even). Times are integer node milliseconds (``t_ms``), stamped by
  the adapter when the sample arrives; stamps of one register strictly increase.
* **The value at a boundary** (:class:`Held`). A slot boundary ``b`` (unix seconds, a multiple of the
  slot length) holds the value of the **latest sample stamped at or before** ``b`` — sample-and-hold,
  the register as the meter last showed it when the boundary passed. It is defined only when that
  sample is at most ``max_age_s`` old at ``b``; otherwise the boundary has no value. Because it
  depends only on samples up to ``b``, it is final the moment node time passes ``b``: a reading can be
  signed right after the slot ends, and nothing that arrives later changes it.
* **A slot's energy** is ``floor(held(end) / 1000) - floor(held(start) / 1000)`` Wh: the difference of
  the register, read in whole Wh, at the slot's two boundaries. Consecutive slots therefore sum
  *exactly* to the register difference between the first and the last boundary (the sum telescopes),
  and a boundary that falls exactly on a sample takes that sample's value. No power is sampled and
  nothing is interpolated: energy consumed between the last sample before a boundary and the
  boundary is counted in the next slot (at most ``power × sample interval``: ~1 Wh at 3.6 kW for a
  DSMR 5 meter's 1-second telegrams).
* **Segments.** A register's samples form a segment as long as they continue one another
  (:func:`continues`): the value never decreases, the source (meter identity) stays the same, and the
  mean power implied between two samples stays below :data:`MAX_PLAUSIBLE_POWER_W`. A break (meter
  replaced, counter reset, another meter configured) starts a new segment; a slot whose boundaries lie
  in different segments has **no energy** (``None``): the energy across a reset is unknown.
* **Gaps** cost only the slots whose boundaries have no value: energy inside a gap is still counted
  in full by the first slot whose boundaries both have a value (registers are cumulative), and a slot
  with a boundary deep inside a gap (no sample within ``max_age_s`` before it) is ``None`` — never
  guessed.
* **Power-only sources** (:class:`PowerIntegrator`) have no register: their power samples are
  integrated (each power held until the next sample, at most ``max_age_s``) into synthetic import and
  export registers, which then follow the same rules. Less exact (a power reading is an instant, not
  an average); an adapter that uses it says so (``exact = False``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

from market.errors import InvalidInput, UsageError

__all__ = [
    "ENERGY_UNITS",
    "MAX_PLAUSIBLE_POWER_W",
    "POWER_UNITS",
    "Break",
    "Held",
    "PowerIntegrator",
    "Rules",
    "Sample",
    "Tracked",
    "advance",
    "continues",
    "held_at",
    "slot_energy_wh",
    "to_mwh",
    "to_w",
]

#: A mean power above this between two samples is not a household's consumption: the register jumped
#: (meter replaced by one with a higher count, a counter set by hand), so a new segment starts.
MAX_PLAUSIBLE_POWER_W: Final = 1_000_000
#: mWh per unit of the energy units adapters accept
ENERGY_UNITS: Final = {"Wh": Decimal(1000), "kWh": Decimal(1_000_000), "Wmin": Decimal(1000) / 60}
#: W per unit of the power units adapters accept
POWER_UNITS: Final = {"W": Decimal(1), "kW": Decimal(1000)}


class Break(enum.StrEnum):
    """Why a sample starts a new segment instead of continuing the register's last one."""

    FIRST = "first"  # the register's first sample ever
    DECREASE = "decrease"  # the value went down: counter reset or meter replaced
    SOURCE = "source"  # another meter (identity) or another configured source
    JUMP = "jump"  # an implausible increase (above MAX_PLAUSIBLE_POWER_W on average)


@dataclass(frozen=True, slots=True)
class Rules:
    """How boundaries are read: the slot length and how old a held sample may be."""

    slot_seconds: int
    max_age_s: int

    def __post_init__(self) -> None:
        if self.slot_seconds <= 0:
            raise UsageError(f"slot_seconds must be > 0, got {self.slot_seconds}")
        if self.max_age_s < 0:
            raise UsageError(f"max_age_s must be >= 0, got {self.max_age_s}")


@dataclass(frozen=True, slots=True)
class Sample:
    """One register value as it arrived: node time, value in mWh, the meter's identity (or "")."""

    t_ms: int
    value_mwh: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class Tracked:
    """A register's state between samples: its last sample and that sample's segment number."""

    sample: Sample
    segment: int


@dataclass(frozen=True, slots=True)
class Held:
    """The register's value at slot boundary ``boundary_s`` (see the module docstring)."""

    boundary_s: int
    value_mwh: int
    segment: int
    sample_ms: int


def continues(prev: Sample, new: Sample) -> Break | None:
    """``None`` if ``new`` continues ``prev``'s segment, else why it does not."""
    if new.source != prev.source:
        return Break.SOURCE
    if new.value_mwh < prev.value_mwh:
        return Break.DECREASE
    # mean power in W = Δ mWh · 3600 / Δt ms
    if (new.value_mwh - prev.value_mwh) * 3600 > MAX_PLAUSIBLE_POWER_W * (new.t_ms - prev.t_ms):
        return Break.JUMP
    return None


def _fresh_holds(last: Tracked, until_ms: int, rules: Rules) -> list[Held]:
    """Boundaries ``b`` with ``last.t <= b·1000 < until_ms`` that ``last`` holds (not too old)."""
    step = rules.slot_seconds
    t = last.sample.t_ms
    first = -(-t // (step * 1000)) * step  # the first boundary at or after the sample
    newest = min(until_ms - 1, t + rules.max_age_s * 1000) // 1000  # newest boundary it may hold
    return [Held(b, last.sample.value_mwh, last.segment, t) for b in range(first, newest + 1, step)]


def advance(
    last: Tracked | None, new: Sample, rules: Rules
) -> tuple[Tracked, list[Held], Break | None]:
    """Take ``new`` into a register whose last sample was ``last``.

    Returns the register's new state, the boundary values that ``new``'s arrival makes final (every
    boundary between the two samples that ``last`` holds), and why a new segment started (``None``
    if it continues). Stamps must strictly increase (:class:`UsageError` otherwise: the adapter
    stamps, so this is our bug, not the meter's).
    """
    if last is None:
        return Tracked(new, 0), [], Break.FIRST
    if new.t_ms <= last.sample.t_ms:
        raise UsageError(f"sample stamps must increase: {new.t_ms} after {last.sample.t_ms}")
    why = continues(last.sample, new)
    segment = last.segment + (why is not None)
    return Tracked(new, segment), _fresh_holds(last, new.t_ms, rules), why


def held_at(last: Tracked | None, boundary_s: int, now_ms: int, rules: Rules) -> Held | None:
    """The value at ``boundary_s`` when no sample has arrived after it: the last sample holds it if
    the boundary has passed (``now_ms > boundary``), the sample is at or before it and not too old."""
    if last is None or now_ms <= boundary_s * 1000 or boundary_s * 1000 < last.sample.t_ms:
        return None
    for held in _fresh_holds(last, boundary_s * 1000 + 1, rules):
        if held.boundary_s == boundary_s:
            return held
    return None


def slot_energy_wh(start: Held | None, end: Held | None) -> int | None:
    """Whole Wh counted by the register between two boundaries; ``None`` without both values or
    across a segment break."""
    if start is None or end is None or start.segment != end.segment:
        return None
    if end.boundary_s < start.boundary_s:
        raise UsageError(f"boundary {end.boundary_s} is before {start.boundary_s}")
    return end.value_mwh // 1000 - start.value_mwh // 1000


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidInput(
            reason="not_a_number", subject=what, expected="a number", found=repr(value)[:40]
        )
    try:
        d = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InvalidInput(
            reason="not_a_number", subject=what, expected="a number", found=repr(value)[:40]
        ) from None
    if not d.is_finite():
        raise InvalidInput(
            reason="not_finite", subject=what, expected="a finite number", found=str(d)
        )
    return d


def to_mwh(value: object, unit: str) -> int:
    """A register value (number, numeric string or Decimal) in ``unit`` as integer mWh (round half
    to even). Negative register values are refused (:class:`InvalidInput` ``negative``)."""
    if unit not in ENERGY_UNITS:
        raise UsageError(f"energy unit must be one of {', '.join(ENERGY_UNITS)}, got {unit!r}")
    mwh = int((_decimal(value, "register") * ENERGY_UNITS[unit]).to_integral_value(ROUND_HALF_EVEN))
    if mwh < 0:
        raise InvalidInput(reason="negative", subject="register", expected=">= 0", found=str(value))
    return mwh


def to_w(value: object, unit: str) -> int:
    """A power value in ``unit`` as integer W (round half to even); negative is allowed (export)."""
    if unit not in POWER_UNITS:
        raise UsageError(f"power unit must be one of {', '.join(POWER_UNITS)}, got {unit!r}")
    return int((_decimal(value, "power") * POWER_UNITS[unit]).to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class PowerIntegrator:
    """Synthetic import/export registers from signed power samples (``+`` = import from the grid).

    Each power is held from its sample until the next one, for at most ``max_age_ms``; across a
    longer silence the energy is unknown, so the integrator's ``source`` changes (``power#N``), which
    breaks both registers' segments. Energy is accumulated exactly in W·ms; the registers read it in
    whole mWh (floor). Immutable: :meth:`step` returns the next state.
    """

    max_age_ms: int
    t_ms: int | None = None
    power_w: int = 0
    import_wms: int = 0
    export_wms: int = 0
    gaps: int = 0

    @property
    def source(self) -> str:
        return f"power#{self.gaps}"

    def step(self, t_ms: int, power_w: int) -> PowerIntegrator:
        if self.t_ms is None:
            return PowerIntegrator(self.max_age_ms, t_ms, power_w, 0, 0, 0)
        if t_ms <= self.t_ms:
            raise UsageError(f"power stamps must increase: {t_ms} after {self.t_ms}")
        dt = t_ms - self.t_ms
        if dt > self.max_age_ms:
            return PowerIntegrator(
                self.max_age_ms, t_ms, power_w, self.import_wms, self.export_wms, self.gaps + 1
            )
        energy = self.power_w * dt
        return PowerIntegrator(
            self.max_age_ms,
            t_ms,
            power_w,
            self.import_wms + max(energy, 0),
            self.export_wms + max(-energy, 0),
            self.gaps,
        )

    def samples(self) -> tuple[Sample, Sample]:
        """The (import, export) register samples at the last step (1 mWh = 3600 W·ms)."""
        assert self.t_ms is not None, "no power sample yet"
        return (
            Sample(self.t_ms, self.import_wms // 3600, self.source),
            Sample(self.t_ms, self.export_wms // 3600, self.source),
        )
