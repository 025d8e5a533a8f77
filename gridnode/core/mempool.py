"""A mempool: pending transactions waiting for a proposer, generic over the transaction type.

Rules of this module:

* The application supplies three functions: ``tx_id(tx) -> bytes`` (a content hash, unique per
  transaction), ``check(tx) -> str | None`` (``None`` = admissible, else a rejection reason; it is
  called on arrival and again by :meth:`Mempool.recheck` after each block) and ``size(tx) -> int``
  (bytes counted against a batch's budget).
* A transaction whose id is pending, or was removed as committed (the last ``remember_committed``
  ids), is rejected as ``"duplicate"``; the pool holds at most ``capacity`` transactions
  (``"full"`` beyond that). Nothing is evicted to make room. :meth:`Mempool.knows` lets a
  caller answer a re-sent transaction before it decodes or checks it. :meth:`Mempool.offer` is
  :meth:`Mempool.add` answering ``None`` or the reason instead of an :class:`AddResult`.
* :meth:`Mempool.batch` is deterministic: pending transactions ordered by ``(sort_key(tx), id)``
  (``sort_key`` defaults to the empty tuple, i.e. id order), taken in that order while the count
  is ``<= max_count`` and the summed size ``<= max_bytes``: the batch is a prefix of the order, the
  first transaction that does not fit ends it. (Skipping it for a later, smaller one let a
  household's next nonce into a block ahead of its previous one, which then became stale and was
  lost although a validator had accepted it: seen with full blocks under load.) Two pools holding
  the same set give the same batch, whatever the arrival order.
* :meth:`Mempool.remove_committed` drops what a decided block contained.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from market.errors import UsageError

__all__ = ["AddResult", "Mempool"]

T = TypeVar("T")
_ABSENT: Final = object()  # not pending (a transaction may be any value)


@dataclass(frozen=True, slots=True)
class AddResult:
    """``accepted`` or the rejection ``reason`` (``"duplicate"``, ``"full"`` or ``check``'s)."""

    tx_id: bytes
    accepted: bool
    reason: str = ""


class Mempool(Generic[T]):
    """Pending transactions of type ``T``; see the module rules."""

    def __init__(
        self,
        *,
        tx_id: Callable[[T], bytes],
        check: Callable[[T], str | None],
        size: Callable[[T], int],
        sort_key: Callable[[T], tuple[int, ...]] | None = None,
        capacity: int = 100_000,
        remember_committed: int = 100_000,
    ) -> None:
        if capacity <= 0 or remember_committed < 0:
            raise UsageError("mempool capacity must be > 0 and remember_committed >= 0")
        self._tx_id = tx_id
        self._check = check
        self._size = size
        self._sort_key = sort_key
        self._capacity = capacity
        self._remember = remember_committed
        self._pending: dict[bytes, T] = {}
        self._sizes: dict[bytes, int] = {}
        self._bytes = 0
        self._committed: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """The summed ``size`` of the pending transactions."""
        return self._bytes

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._pending

    def get(self, tx_id: bytes) -> T | None:
        """The pending transaction with id ``tx_id``, if any."""
        return self._pending.get(tx_id)

    def knows(self, tx_id: bytes) -> bool:
        """``tx_id`` is pending or was committed lately: :meth:`add` would answer ``"duplicate"``."""
        return tx_id in self._pending or tx_id in self._committed

    def add(self, tx: T) -> AddResult:
        """Offer ``tx`` (see the module rules): accepted, or the rejection reason."""
        reason = self.offer(tx)
        return AddResult(self._tx_id(tx), accepted=reason is None, reason=reason or "")

    def offer(self, tx: T) -> str | None:
        """:meth:`add` without its result object: ``None`` when accepted, else the rejection
        reason (a simulation offers every transaction to every validator's pool; the object
        was a third of the cost of an add)."""
        tid = self._tx_id(tx)
        pending = self._pending
        if tid in pending or tid in self._committed:
            return "duplicate"
        if len(pending) >= self._capacity:
            return "full"
        reason = self._check(tx)
        if reason is not None:
            return reason
        pending[tid] = tx
        size = self._sizes[tid] = self._size(tx)
        self._bytes += size
        return None

    def _ordered(self) -> list[tuple[bytes, T]]:
        key = self._sort_key
        if key is None:
            return sorted(self._pending.items(), key=lambda kv: kv[0])
        return sorted(self._pending.items(), key=lambda kv: (key(kv[1]), kv[0]))

    def batch(self, *, max_count: int, max_bytes: int) -> list[T]:
        """The proposer's batch (see the module rules); does not remove anything."""
        out: list[T] = []
        used = 0
        for tid, tx in self._ordered():
            if len(out) >= max_count:
                break
            size = self._sizes[tid]
            if used + size > max_bytes:
                break
            out.append(tx)
            used += size
        return out

    def remove_committed(self, tx_ids: Iterable[bytes]) -> int:
        """Drop transactions a decided block contained; returns how many were pending."""
        removed = freed = 0
        pending, sizes, committed, remember = (
            self._pending,
            self._sizes,
            self._committed,
            self._remember,
        )
        # one lookup per table for an id (each lookup in a large table is a likely cache miss)
        for tid in tx_ids:
            if pending.pop(tid, _ABSENT) is not _ABSENT:
                freed += sizes.pop(tid)
                removed += 1
            if remember:
                known = len(committed)
                committed[tid] = None  # a new id goes last; a known one keeps its place ...
                if len(committed) == known:
                    committed.move_to_end(tid)  # ... so it is moved last
        self._bytes -= freed
        while len(committed) > remember:
            committed.popitem(last=False)
        return removed

    def recheck(self) -> list[bytes]:
        """Re-run ``check`` on every pending transaction; drop and return the ids that now fail."""
        dropped = [tid for tid, tx in self._pending.items() if self._check(tx) is not None]
        for tid in dropped:
            del self._pending[tid]
            self._bytes -= self._sizes.pop(tid)
        return dropped
