"""The store in memory (:class:`MemoryStore`): the same interface and rules as the SQLite store,
no file, for the deterministic simulation. The conformance tests in ``tests/store/`` run both."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from gridnode.store.records import LastSigned, StateSnapshot, StoredBlock, WalRow
from gridnode.store.rules import (
    block_is_new,
    check_int,
    check_keep_snapshots,
    check_limit,
    check_meta_key,
    check_meta_value,
    check_truncate,
    check_wal_height,
    last_signed_is_new,
    new_block,
    new_last_signed,
    new_snapshot,
    new_wal_row,
    snapshot_is_new,
)
from market.errors import UsageError

__all__ = ["MemoryStore"]


class MemoryStore:
    """The store in memory: same interface and rules as :class:`~gridnode.store.NodeStore`.

    A simulated crash keeps the object (everything a call returned from is "durable") and a
    restarted node core reads it back with :func:`~gridnode.store.recover`.
    """

    __slots__ = (
        "_blocks",
        "_closed",
        "_first",
        "_keep_snapshots",
        "_last_signed",
        "_meta",
        "_next_seq",
        "_snapshots",
        "_top",
        "_wal",
        "_wal_floor",
    )

    def __init__(self, *, keep_snapshots: int = 2) -> None:
        self._keep_snapshots = check_keep_snapshots(keep_snapshots)
        self._blocks: dict[int, StoredBlock] = {}
        # heights are contiguous, so the blocks are exactly range(_first, _top + 1)
        self._first = 0
        self._top = -1
        self._snapshots: dict[int, StateSnapshot] = {}
        self._wal: list[WalRow] = []
        self._wal_floor = 0
        self._next_seq = 1
        self._last_signed: LastSigned | None = None
        self._meta: dict[str, bytes] = {}
        self._closed = False

    def close(self) -> None:
        """Mark closed (calls then raise, as on a closed NodeStore); the data stays."""
        self._closed = True

    def reopen(self) -> MemoryStore:
        """The same data, open again: what a simulated restart uses."""
        self._closed = False
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _live(self) -> None:
        if self._closed:
            raise UsageError("memory store is closed")

    def _wal_top(self) -> int:
        return max([self._wal_floor, *(r.height for r in self._wal[-1:])])

    # -- blocks

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None:
        new = new_block(height, block_hash, block, commit)
        self._live()
        if block_is_new(new, self._blocks.get(new.height), self.head()):
            self._blocks[new.height] = new
            if self._top < 0:
                self._first = new.height
            self._top = new.height

    def block(self, height: int) -> StoredBlock | None:
        h = check_int(height, field="height", subject="block")
        self._live()
        return self._blocks.get(h)

    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]:
        h = check_int(height, field="height", subject="blocks_from")
        n = check_limit(limit)
        self._live()
        start = max(h, self._first)
        return [self._blocks[k] for k in range(start, min(self._top + 1, start + n))]

    def head(self) -> StoredBlock | None:
        self._live()
        return self._blocks[self._top] if self._blocks else None

    # -- snapshots

    def put_snapshot(self, height: int, state: bytes) -> None:
        new = new_snapshot(height, state)
        self._live()
        if snapshot_is_new(
            new, self._snapshots.get(new.height), self.latest_snapshot(), self.head()
        ):
            self._snapshots[new.height] = new
            for h in sorted(self._snapshots)[: -self._keep_snapshots]:
                del self._snapshots[h]

    def latest_snapshot(self) -> StateSnapshot | None:
        self._live()
        return self._snapshots[max(self._snapshots)] if self._snapshots else None

    def snapshot_heights(self) -> list[int]:
        self._live()
        return sorted(self._snapshots)

    # -- consensus WAL

    def append_wal(self, height: int, record: bytes) -> int:
        row = new_wal_row(self._next_seq, height, record)
        self._live()
        check_wal_height(row.height, self._wal_top())
        self._wal.append(row)
        self._next_seq += 1
        return row.seq

    def wal_since(self, height: int) -> list[WalRow]:
        h = check_int(height, field="height", subject="wal_since")
        self._live()
        return [r for r in self._wal if r.height >= h]

    def truncate_wal(self, below: int) -> int:
        b = check_int(below, field="below", subject="truncate_wal")
        self._live()
        check_truncate(b, self.head())
        kept = [r for r in self._wal if r.height >= b]
        removed = len(self._wal) - len(kept)
        self._wal = kept
        self._wal_floor = max(self._wal_floor, b)
        return removed

    # -- double-sign protection

    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        new = new_last_signed(height, round, step, vote)
        self._live()
        if last_signed_is_new(new, self._last_signed):
            self._last_signed = new

    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        new = new_last_signed(height, round, step, vote)
        self._live()
        if not last_signed_is_new(new, self._last_signed):
            return
        check_wal_height(new.height, self._wal_top())
        self._wal.append(WalRow(seq=self._next_seq, height=new.height, record=new.vote))
        self._next_seq += 1
        self._last_signed = new

    def last_signed(self) -> LastSigned | None:
        self._live()
        return self._last_signed

    # -- metadata

    def set_meta(self, key: str, value: bytes) -> None:
        k = check_meta_key(key)
        v = check_meta_value(k, value)
        self._live()
        self._meta[k] = v

    def meta(self, key: str) -> bytes | None:
        k = check_meta_key(key)
        self._live()
        return self._meta.get(k)
