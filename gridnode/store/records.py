"""What the store holds and hands back: frozen records, the :class:`Store` interface, its errors.

Records are opaque bytes to the store (canonical msgpack made by :mod:`gridnode.core`); the
dataclasses here only say where a record sits (height, round, step, sequence number).

Names: a :class:`StateSnapshot` is a stored ledger state (not the daemon's status snapshot,
:class:`gridnode.status.Snapshot`), a :class:`WalRow` is a stored consensus WAL entry (the bytes of
one :data:`gridnode.core.consensus.WalRecord`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from market.errors import GridnodeError

__all__ = [
    "APPLICATION_ID",
    "Durability",
    "LastSigned",
    "Recovery",
    "StateSnapshot",
    "Store",
    "StoreBinding",
    "StoreFailed",
    "StoredBlock",
    "WalRow",
]

#: ``PRAGMA application_id`` of a gridnode store: ASCII "GRND".
APPLICATION_ID: Final = 0x47524E44


class Durability(enum.Enum):
    """How hard the consensus tables (blocks, wal, last_signed, meta) are synced."""

    #: fsync the SQLite WAL at every commit: survives ``kill -9`` and power loss. The default.
    FULL = "FULL"
    #: survives ``kill -9``, may lose the last commits on power loss. Benchmarks and simulations.
    NORMAL = "NORMAL"


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A committed block as stored: its height, hash, canonical bytes and commit (signatures)."""

    height: int
    block_hash: bytes
    block: bytes
    commit: bytes


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The ledger state after applying the block at ``height`` (canonical bytes)."""

    height: int
    state: bytes


@dataclass(frozen=True, slots=True)
class WalRow:
    """One stored consensus write-ahead-log entry; ``seq`` orders entries and is never reused."""

    seq: int
    height: int
    record: bytes


@dataclass(frozen=True, slots=True)
class LastSigned:
    """The last vote this validator signed, and where: ``(height, round, step)``."""

    height: int
    round: int
    step: int
    vote: bytes

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a node reads on restart (the recovery contract, :func:`gridnode.store.recover`)."""

    head: StoredBlock | None
    snapshot: StateSnapshot | None
    #: the blocks after the snapshot (all blocks without one), up to and including the head
    blocks: tuple[StoredBlock, ...]
    #: the WAL rows of the height in progress (``head.height + 1`` and above), in ``seq`` order
    wal: tuple[WalRow, ...]
    last_signed: LastSigned | None


@dataclass(frozen=True, slots=True)
class StoreBinding:
    """The chain a store holds: its community id and genesis hash. Recorded in the store's
    metadata (:func:`gridnode.store.bind`) and checked when the store is opened for a genesis, so
    a store never serves another community's or another genesis' chain."""

    community_id: str
    genesis_hash: bytes


class StoreFailed(GridnodeError):
    """The store's file failed under us (disk full, I/O error, a page found damaged).

    Not a refusal (those are :class:`~market.errors.InvalidInput`): the write may or may not have
    reached the disk, so the store refuses every later call too (fail-stop) and the owner must
    stop — a validator that went on could sign again what it is not sure it recorded.
    """

    def __init__(self, path: Path, operation: str, cause: str) -> None:
        self.path = path
        self.operation = operation
        self.cause = cause
        super().__init__(f"store {path}: {operation} failed: {cause}")


class Store(Protocol):
    """The interface both :class:`~gridnode.store.NodeStore` and
    :class:`~gridnode.store.MemoryStore` implement."""

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None: ...
    def block(self, height: int) -> StoredBlock | None: ...
    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]: ...
    def head(self) -> StoredBlock | None: ...
    def put_snapshot(self, height: int, state: bytes) -> None: ...
    def latest_snapshot(self) -> StateSnapshot | None: ...
    def snapshot_heights(self) -> list[int]: ...
    def append_wal(self, height: int, record: bytes) -> int: ...
    def wal_since(self, height: int) -> list[WalRow]: ...
    def truncate_wal(self, below: int) -> int: ...
    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None: ...
    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None: ...
    def last_signed(self) -> LastSigned | None: ...
    def set_meta(self, key: str, value: bytes) -> None: ...
    def meta(self, key: str) -> bytes | None: ...
    def close(self) -> None: ...
