"""Compact per-slot tables of per-household values, for runs of a year and more.

The in-process engine records, for every slot, the P50 each household quoted and which households
ordered. As dicts of ``(slot, household)`` pairs and sets that is ~200 bytes a household-slot —
700 MB for 100 households over a year — where one machine word is enough. Rules:

* :class:`SlotValues` maps ``(slot, household)`` to an ``int`` (``table[slot, i] = v``,
  ``table.get((slot, i))``): one ``int64`` array per slot, a missing value being ``None``. Values
  must fit an ``int64`` other than its minimum (the missing marker).
* :class:`SlotMembers` maps a slot to the set of households that did something in it
  (``table.setdefault(slot, set()).add(i)``, ``len(table.get(slot, set()))``): one byte per
  household and slot. The ``set()`` defaults are accepted so that code written for a ``dict`` of
  sets reads the same; only ``add``, ``len`` and ``in`` are offered on what they return.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["SlotMembers", "SlotValues"]

_MISSING: Final = np.iinfo(np.int64).min


class SlotValues:
    """See the module rules."""

    __slots__ = ("_households", "_slots")

    def __init__(self, households: int) -> None:
        self._households = households
        self._slots: dict[int, npt.NDArray[np.int64]] = {}

    def __setitem__(self, key: tuple[int, int], value: int) -> None:
        slot, i = key
        row = self._slots.get(slot)
        if row is None:
            row = self._slots[slot] = np.full(self._households, _MISSING, dtype=np.int64)
        if value == _MISSING:
            raise ValueError("the int64 minimum marks a missing value")
        row[i] = value

    def get(self, key: tuple[int, int]) -> int | None:
        slot, i = key
        row = self._slots.get(slot)
        if row is None or row[i] == _MISSING:
            return None
        return int(row[i])

    def __len__(self) -> int:
        return sum(int((row != _MISSING).sum()) for row in self._slots.values())


class _Members:
    __slots__ = ("_flags",)

    def __init__(self, households: int) -> None:
        self._flags = bytearray(households)

    def add(self, i: int) -> None:
        self._flags[i] = 1

    def __contains__(self, i: object) -> bool:
        return isinstance(i, int) and 0 <= i < len(self._flags) and self._flags[i] == 1

    def __len__(self) -> int:
        return self._flags.count(1)


class SlotMembers:
    """See the module rules."""

    __slots__ = ("_households", "_slots")

    def __init__(self, households: int) -> None:
        self._households = households
        self._slots: dict[int, _Members] = {}

    def setdefault(self, slot: int, default: object = None) -> _Members:
        del default  # the dict-of-sets spelling; the members are always a compact one
        found = self._slots.get(slot)
        if found is None:
            found = self._slots[slot] = _Members(self._households)
        return found

    def get(self, slot: int, default: object = None) -> _Members | set[int]:
        found = self._slots.get(slot)
        return found if found is not None else set()
