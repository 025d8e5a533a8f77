"""Meter histories: regular series of mean power, one row per household.

Rules of this module:

* A :class:`MeterHistory` is a regular grid: ``start_s`` (unix seconds UTC of the first interval),
  ``step_s`` seconds per interval, and float arrays of **mean power in W** shaped
  ``(households, steps)``. Power, not energy, so resampling does not change the numbers' meaning;
  :func:`energy_wh` converts at the boundary to the market's integer Wh (round half to even).
* ``net_w`` is always present: PV generation minus consumption (``+`` = surplus). ``pv_w`` and
  ``load_w`` are present together or not at all; when present ``net_w == pv_w - load_w`` exactly
  (it is computed here, never passed separately).
* ``utc_offset_s`` is the household's local standard-time offset (the clock its habits follow; no DST).
  It is used only for calendar features (time of day, weekend).
* Values are finite: gaps are filled (and flagged) before a history is built; nothing here guesses.
* Histories are immutable values; slicing returns new ones. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from market.errors import InvalidInput, UsageError

__all__ = ["FloatArray", "MeterHistory", "energy_wh"]

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400


def _as_2d(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise InvalidInput(
            reason="bad_shape", subject="meter history", field=name,
            expected="1-D (steps) or 2-D (households, steps)", found=f"{arr.ndim}-D",
        )  # fmt: skip
    if not np.isfinite(arr).all():
        raise InvalidInput(
            reason="not_finite", subject="meter history", field=name,
            expected="finite values (fill gaps first)",
            found=f"{int((~np.isfinite(arr)).sum())} NaN/inf values",
        )  # fmt: skip
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class MeterHistory:
    """Mean power per interval for one or more households on one regular time grid."""

    start_s: int
    step_s: int
    net_w: FloatArray
    pv_w: FloatArray | None = None
    load_w: FloatArray | None = None
    utc_offset_s: int = 0

    def __post_init__(self) -> None:
        if self.step_s <= 0 or SECONDS_PER_DAY % self.step_s:
            raise UsageError(f"step_s must divide a day, got {self.step_s}")
        if (self.pv_w is None) != (self.load_w is None):
            raise UsageError("pv_w and load_w come together (use MeterHistory.from_components)")

    @classmethod
    def from_net(
        cls, net_w: npt.ArrayLike, *, start_s: int, step_s: int, utc_offset_s: int = 0
    ) -> MeterHistory:
        """A history metered only as net (export minus import)."""
        return cls(start_s, step_s, _as_2d(net_w, "net_w"), utc_offset_s=utc_offset_s)

    @classmethod
    def from_components(
        cls,
        pv_w: npt.ArrayLike,
        load_w: npt.ArrayLike,
        *,
        start_s: int,
        step_s: int,
        utc_offset_s: int = 0,
    ) -> MeterHistory:
        """A history with PV and load metered separately; ``net_w`` is derived."""
        pv = _as_2d(pv_w, "pv_w")
        load = _as_2d(load_w, "load_w")
        if pv.shape != load.shape:
            raise InvalidInput(
                reason="shape_mismatch", subject="meter history", field="load_w",
                expected=f"shape {pv.shape} like pv_w", found=str(load.shape),
            )  # fmt: skip
        net = pv - load
        net.setflags(write=False)
        return cls(start_s, step_s, net, pv, load, utc_offset_s)

    @property
    def households(self) -> int:
        return int(self.net_w.shape[0])

    @property
    def steps(self) -> int:
        return int(self.net_w.shape[1])

    @property
    def end_s(self) -> int:
        """Unix second just after the last interval."""
        return self.start_s + self.steps * self.step_s

    @property
    def steps_per_day(self) -> int:
        return SECONDS_PER_DAY // self.step_s

    @property
    def has_components(self) -> bool:
        return self.pv_w is not None

    def index_at(self, unix_s: int) -> int:
        """Index of the interval starting at ``unix_s`` (must lie on the grid)."""
        offset = unix_s - self.start_s
        if offset % self.step_s:
            raise UsageError(f"{unix_s} is not on this history's {self.step_s}-s grid")
        return offset // self.step_s

    def step_of_day(self, index: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Local time of day of interval ``index``, in steps since local midnight."""
        t = self.start_s + np.asarray(index, dtype=np.int64) * self.step_s + self.utc_offset_s
        return (t % SECONDS_PER_DAY) // self.step_s

    def is_weekend(self, index: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether interval ``index`` falls on a local Saturday or Sunday."""
        t = self.start_s + np.asarray(index, dtype=np.int64) * self.step_s + self.utc_offset_s
        weekday = (t // SECONDS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        return np.asarray(weekday >= 5)

    def until(self, end_s: int) -> MeterHistory:
        """The history up to (excluding) ``end_s``: what was known at ``end_s``."""
        return self.window(self.start_s, end_s)

    def window(self, start_s: int, end_s: int) -> MeterHistory:
        """Intervals starting in ``[start_s, end_s)`` (both on the grid, inside the history)."""
        i, j = self.index_at(start_s), self.index_at(end_s)
        if not 0 <= i <= j <= self.steps:
            raise UsageError(
                f"slice [{start_s}, {end_s}) is outside the history [{self.start_s}, {self.end_s})"
            )

        def cut(a: FloatArray | None) -> FloatArray | None:
            return None if a is None else a[:, i:j]

        return MeterHistory(
            start_s, self.step_s, self.net_w[:, i:j], cut(self.pv_w), cut(self.load_w),
            self.utc_offset_s,
        )  # fmt: skip

    def select(self, households: slice | list[int]) -> MeterHistory:
        """A subset of the households (rows), read-only like every history's arrays."""

        def rows(a: FloatArray) -> FloatArray:
            out = a[households]  # a view for a slice, a new array for a list
            out.setflags(write=False)
            return out

        return MeterHistory(
            self.start_s, self.step_s, rows(self.net_w),
            None if self.pv_w is None else rows(self.pv_w),
            None if self.load_w is None else rows(self.load_w), self.utc_offset_s,
        )  # fmt: skip

    def resample(self, step_s: int) -> MeterHistory:
        """Mean power over coarser intervals; ``step_s`` must be a multiple of this step and the
        history's start and length must be aligned to it (trailing partial intervals are dropped)."""
        if step_s % self.step_s:
            raise UsageError(f"cannot resample {self.step_s}-s steps to {step_s}-s steps")
        if self.start_s % step_s:
            raise UsageError(f"start {self.start_s} is not aligned to {step_s}-s steps")
        k = step_s // self.step_s
        n = self.steps // k

        def down(a: FloatArray | None) -> FloatArray | None:
            if a is None:
                return None
            out: FloatArray = np.asarray(
                a[:, : n * k].reshape(a.shape[0], n, k).mean(axis=2), dtype=np.float64
            )
            out.setflags(write=False)
            return out

        if self.pv_w is not None and self.load_w is not None:
            pv, load = down(self.pv_w), down(self.load_w)
            assert pv is not None and load is not None
            return MeterHistory.from_components(
                pv, load, start_s=self.start_s, step_s=step_s, utc_offset_s=self.utc_offset_s
            )
        net = down(self.net_w)
        assert net is not None
        return MeterHistory.from_net(
            net, start_s=self.start_s, step_s=step_s, utc_offset_s=self.utc_offset_s
        )


def energy_wh(power_w: npt.ArrayLike, seconds: int) -> npt.NDArray[np.int64]:
    """Integer Wh delivered by a mean power over ``seconds`` (rounded half to even)."""
    return np.rint(np.asarray(power_w, dtype=np.float64) * seconds / 3600.0).astype(np.int64)
