"""A chain's clearing prices, shared along its states: :class:`ClearingPrices`.

Rules of this module:

* The ledger records a slot's clearing price once, when it clears the slot, and a slot is cleared
  only after every slot before it (an order names an open slot, block times only grow), so the
  prices of a state are those of its parent **plus later slots**. Every state of a chain therefore
  holds a prefix of one log of ``(slot, price)`` entries in increasing slot order:
  :class:`ClearingPrices` is the first ``n`` entries of a log it shares with the states before and
  after it.
* A holder never sees its prices change: :meth:`ClearingPrices.plus` appends in place only when
  this mapping ends where the log ends (the usual case: the newest state of a chain); a second
  child of the same state (a proposal of another round, a fork) finds the log longer than its
  parent's prefix and copies that prefix into a new log first. Entries past a mapping's ``n`` are
  never read through it (the first ``n`` entries are exactly those with a slot up to its last).
  Prices that are not all after the last slot are merged into a new log (the plain definition:
  correct for any input, a copy).
* So recording a block's prices costs ``O(new prices)``, where a copy of a year's 35,040 prices
  per clearing block cost ≈ 0.8 ms (and ≈ 1.3 MB per live state). It is a ``Mapping`` like the
  ``dict`` it replaces: equal to a ``dict`` of the same items, pickled as one. Reads are
  thread-safe against an append by the thread that builds the next state (a list is iterated up
  to ``n``, a dict is only read).

Known limit: a log is never shortened; the entries a discarded fork appended stay in it (a few
per discarded proposal) until no state holds the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice, pairwise
from typing import Any

__all__ = ["ClearingPrices"]


class _Log:
    """The shared, append-only log: slots in increasing order and their prices."""

    __slots__ = ("prices", "slots")

    def __init__(self) -> None:
        self.slots: list[int] = []
        self.prices: dict[int, int | None] = {}


class ClearingPrices(Mapping[int, "int | None"]):
    """Clearing prices by slot: a prefix of a log shared along a chain (module rules)."""

    __slots__ = ("_last", "_log", "_n")

    def __init__(self) -> None:
        """No prices (a genesis state's)."""
        self._log = _Log()
        self._n = 0
        self._last: int | None = None

    @classmethod
    def of(cls, prices: Mapping[int, int | None]) -> ClearingPrices:
        """The same prices as ``prices`` (any mapping), in a log of their own."""
        return cls().plus(sorted(prices.items()))

    def plus(self, entries: Iterable[tuple[int, int | None]]) -> ClearingPrices:
        """These prices and ``entries`` (``(slot, price)``; a slot already here takes the new
        price), as a new mapping; this one is unchanged."""
        new = list(entries)
        if not new:
            return self
        last = self._last
        increasing = all(a[0] < b[0] for a, b in pairwise(new))
        if not increasing or (last is not None and new[0][0] <= last):
            merged = self._dict()  # the plain definition: a new log of the merged items
            merged.update(new)
            return ClearingPrices().plus(sorted(merged.items()))
        log = self._log
        if len(log.slots) != self._n:  # another mapping appended to this prefix already: a fork
            log = _Log()
            log.slots = self._log.slots[: self._n]
            log.prices = {s: self._log.prices[s] for s in log.slots}
        for slot, price in new:
            log.prices[slot] = price  # first the value, then the slot that makes it visible
            log.slots.append(slot)
        out = ClearingPrices.__new__(ClearingPrices)
        out._log, out._n, out._last = log, self._n + len(new), new[-1][0]
        return out

    def added_since(self, older: Mapping[int, int | None]) -> list[int] | None:
        """The slots these prices hold beyond ``older``, in order, when ``older`` is a prefix of
        the same log (an earlier state of this chain); ``None`` otherwise."""
        if isinstance(older, ClearingPrices) and older._log is self._log and older._n <= self._n:
            return self._log.slots[older._n : self._n]
        return None

    # -- Mapping
    def __getitem__(self, slot: int) -> int | None:
        last = self._last
        if last is None or not isinstance(slot, int) or slot > last:
            raise KeyError(slot)
        return self._log.prices[slot]

    def get(self, slot: int, default: Any = None) -> Any:
        last = self._last
        if last is None or not isinstance(slot, int) or slot > last:
            return default
        return self._log.prices.get(slot, default)

    def __contains__(self, slot: object) -> bool:
        last = self._last
        return (
            last is not None and isinstance(slot, int) and slot <= last and slot in self._log.prices
        )

    def __iter__(self) -> Iterator[int]:
        return islice(self._log.slots, self._n)

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClearingPrices):
            if self._n != other._n or other._log is self._log:
                return self._n == other._n  # prefixes of one log: equal iff equally long
            return self._dict() == other._dict()
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(other) == self._n and self._dict() == dict(other.items())

    # unhashable, like dict (mypy types object.__hash__ as always callable)
    __hash__ = None  # type: ignore[assignment]

    def _dict(self) -> dict[int, int | None]:
        prices = self._log.prices
        return {s: prices[s] for s in islice(self._log.slots, self._n)}

    def __repr__(self) -> str:
        return f"ClearingPrices({self._dict()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ClearingPrices.of, (self._dict(),))
