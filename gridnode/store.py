"""The node's persistence: one SQLite file per node (:class:`NodeStore`), and an in-memory twin
(:class:`MemoryStore`) with the same interface and the same rules, for the deterministic simulation.

Records are opaque bytes here (blocks, commits, state snapshots, consensus WAL records and signed
votes are canonical msgpack made by :mod:`gridnode.core`); this module only enforces the rules about
*which* record may be stored *when*.

Rules of this module (both implementations enforce exactly these; the conformance tests in
``tests/store/`` run against both):

* **Blocks** are append-only and contiguous. The first block may have any height ``>= 0``;
  every later one must be ``head + 1`` (``height_gap``). Putting the same block again at an
  existing height (same hash and bytes) is a no-op that keeps the first commit; a different
  block there raises ``InvalidInput(reason="conflicting_block")``. Nothing ever deletes a block.
* **Snapshots** of the ledger state: ``put_snapshot(h, state)`` needs ``h <= head height`` (``0`` is
  allowed on an empty store: the genesis state), never goes below the latest snapshot, is idempotent
  for the same bytes and refuses different bytes at the same height. The store keeps the newest
  ``keep_snapshots`` snapshots and prunes older ones in the same transaction. The caller decides the
  interval K (e.g. every 100 blocks).
* **Consensus WAL**: ``append_wal(h, record)`` returns a sequence number (1, 2, 3, …; never reused,
  even after truncation). Heights in the WAL never go down: a record's height must be ``>=`` every
  height appended or truncated before (``wal_regression``). ``truncate_wal(below)`` drops records
  of heights ``< below`` and is only allowed for committed heights (``below <= head + 1``).
* **Last signed** ``(height, round, step)`` only moves forward (lexicographic order). Saving the
  same key with the same vote is a no-op (a retry); the same key with a different vote raises
  ``InvalidInput(reason="double_sign")``; an older key raises ``last_signed_regression``. A
  validator calls :meth:`save_last_signed` *before* it sends the vote; when it returns, the
  record is on disk. :meth:`append_signed` does that and appends the vote to the WAL in one
  transaction (one fsync instead of two); its retry of the last vote is a no-op for both.
* **Metadata**: a small ``str -> bytes`` table (node id, genesis hash, …).
* Every write is one SQLite transaction (``BEGIN IMMEDIATE … COMMIT``), so a crash between any two
  statements leaves the file as it was before the call or after it, never in between.

Durability, per table (``synchronous`` is switched per transaction on the one connection):

============  =================  ================================================================
table         synchronous        why
============  =================  ================================================================
blocks        FULL               a committed block acknowledged to anyone must survive power loss
wal           FULL               the validator's lock / votes in flight; needed to stay safe
last_signed   FULL               double-sign protection: durable before the vote leaves the node
meta          FULL               rare, small writes (node identity, genesis hash)
snapshots     NORMAL             derived data: a snapshot lost to power loss is rebuilt by replay
============  =================  ================================================================

In WAL mode ``NORMAL`` survives a process crash (``kill -9``) but may lose the last transactions on
power loss; ``FULL`` fsyncs the WAL at every commit. The WAL file is a log, so a power loss only
ever loses a *suffix* of transactions: a snapshot lost that way cannot leave a later block
behind it.
``durability=Durability.NORMAL`` runs the consensus tables at ``NORMAL`` too; it is for benchmarks
and throw-away simulation files, never for a validator.

Ownership: the file is opened in SQLite's exclusive locking mode, so a second process (a second
daemon started on the same data directory, which could double-sign) gets a clear
:class:`~market.errors.UsageError` instead of a shared file. A store is used from one thread.

Files: ``PRAGMA application_id`` marks the file as ours and a ``schema_version`` table holds the
schema version; opening a file that is not a SQLite database, belongs to another application or has
a newer schema raises :class:`~market.errors.InvalidInput` (``not_a_gridnode_store``,
``schema_too_new``); an older schema is migrated forward (:data:`MIGRATIONS`), one transaction per
step. A foreign file is never modified.

Recovery contract (what a node does on restart, :func:`recover` gathers it in one call):

1. ``head()`` — the last committed block; the node is at height ``head.height + 1``.
2. ``latest_snapshot()`` — the newest state snapshot ``S`` (``S.height <= head.height``).
3. ``blocks_from(S.height + 1, …)`` up to the head — applied to ``S`` to rebuild the ledger state
   (all blocks from the first one if there is no snapshot).
4. ``wal_since(head.height + 1)`` — the consensus records of the height in progress, replayed into
   the consensus core in sequence order (records of committed heights are ignored).
5. ``last_signed()`` — the consensus core never signs at or below this ``(height, round, step)``
   with a different vote.

Known limits: a power loss while the file is being *created* may lose the empty file (SQLite does
not fsync the directory on creation); the node then simply starts fresh.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

from market.errors import InvalidInput, UsageError

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Durability",
    "LastSigned",
    "MemoryStore",
    "NodeStore",
    "Recovery",
    "Snapshot",
    "Store",
    "StoredBlock",
    "WalRecord",
    "recover",
]

#: ``PRAGMA application_id`` of a gridnode store: ASCII "GRND".
APPLICATION_ID: Final = 0x47524E44
#: The largest value SQLite stores in an INTEGER column; heights, rounds and steps stay below it.
_MAX_INT: Final = 2**63 - 1
_MAX_META_KEY_CHARS: Final = 200
#: SQLite's STRICT tables need 3.37.
_MIN_SQLITE: Final = (3, 37, 0)

#: The schema, as a list of migrations: entry ``i`` takes the file from version ``i`` to ``i + 1``.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT",
        "INSERT INTO schema_version (version) VALUES (0)",
        "CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,"
        " block BLOB NOT NULL, commit_bytes BLOB NOT NULL) STRICT",
        "CREATE TABLE snapshots (height INTEGER PRIMARY KEY, state BLOB NOT NULL) STRICT",
        "CREATE TABLE wal (seq INTEGER PRIMARY KEY AUTOINCREMENT, height INTEGER NOT NULL,"
        " record BLOB NOT NULL) STRICT",
        "CREATE INDEX wal_by_height ON wal (height)",
        # the highest height ever truncated below: WAL heights never go under it
        "CREATE TABLE wal_floor (id INTEGER PRIMARY KEY CHECK (id = 1), height INTEGER NOT NULL)"
        " STRICT",
        "INSERT INTO wal_floor (id, height) VALUES (1, 0)",
        "CREATE TABLE last_signed (id INTEGER PRIMARY KEY CHECK (id = 1), height INTEGER NOT NULL,"
        " round INTEGER NOT NULL, step INTEGER NOT NULL, vote BLOB NOT NULL) STRICT",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT",
    ),
)
#: The schema version this code writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)


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
class Snapshot:
    """The ledger state after applying the block at ``height`` (canonical bytes)."""

    height: int
    state: bytes


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One consensus write-ahead-log record; ``seq`` orders records and is never reused."""

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
    """What a node reads on restart (see the module's recovery contract)."""

    head: StoredBlock | None
    snapshot: Snapshot | None
    #: the blocks after the snapshot (all blocks without one), up to and including the head
    blocks: tuple[StoredBlock, ...]
    #: the WAL records of the height in progress (``head.height + 1`` and above), in ``seq`` order
    wal: tuple[WalRecord, ...]
    last_signed: LastSigned | None


class Store(Protocol):
    """The interface both :class:`NodeStore` and :class:`MemoryStore` implement."""

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None: ...
    def block(self, height: int) -> StoredBlock | None: ...
    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]: ...
    def head(self) -> StoredBlock | None: ...
    def put_snapshot(self, height: int, state: bytes) -> None: ...
    def latest_snapshot(self) -> Snapshot | None: ...
    def snapshot_heights(self) -> list[int]: ...
    def append_wal(self, height: int, record: bytes) -> int: ...
    def wal_since(self, height: int) -> list[WalRecord]: ...
    def truncate_wal(self, below: int) -> int: ...
    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None: ...
    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None: ...
    def last_signed(self) -> LastSigned | None: ...
    def set_meta(self, key: str, value: bytes) -> None: ...
    def meta(self, key: str) -> bytes | None: ...
    def close(self) -> None: ...


def recover(store: Store) -> Recovery:
    """Everything a restarting node needs, read from ``store`` (the module's recovery contract)."""
    head = store.head()
    snapshot = store.latest_snapshot()
    blocks: list[StoredBlock] = []
    if head is not None:
        start = snapshot.height + 1 if snapshot is not None else 0
        while start <= head.height:
            batch = store.blocks_from(start, 1000)
            if not batch:
                break
            blocks.extend(batch)
            start = batch[-1].height + 1
    wal = store.wal_since(head.height + 1 if head is not None else 0)
    return Recovery(
        head=head,
        snapshot=snapshot,
        blocks=tuple(blocks),
        wal=tuple(wal),
        last_signed=store.last_signed(),
    )


# --- the rules, shared by both implementations ------------------------------------------------


def _check_int(value: object, *, field: str, subject: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            reason="bad_type",
            subject=subject,
            field=field,
            expected="int",
            found=type(value).__name__,
        )
    if not 0 <= value <= _MAX_INT:
        raise InvalidInput(
            reason="out_of_range",
            subject=subject,
            field=field,
            expected=f"0 <= {field} <= 2**63-1",
            found=str(value),
        )
    return value


def _check_bytes(value: object, *, field: str, subject: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(
            reason="bad_type",
            subject=subject,
            field=field,
            expected="bytes",
            found=type(value).__name__,
        )
    if not value:
        raise InvalidInput(
            reason="empty", subject=subject, field=field, expected="non-empty bytes", found="b''"
        )
    return value


def _check_meta_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInput(
            reason="bad_type", subject="meta", field="key", expected="str", found=type(key).__name__
        )
    if not 0 < len(key) <= _MAX_META_KEY_CHARS:
        raise InvalidInput(
            reason="bad_length",
            subject="meta",
            field="key",
            expected=f"1..{_MAX_META_KEY_CHARS} chars",
            found=f"{len(key)} chars",
        )
    return key


def _new_block(height: object, block_hash: object, block: object, commit: object) -> StoredBlock:
    subject = f"block {height!r}"
    return StoredBlock(
        height=_check_int(height, field="height", subject=subject),
        block_hash=_check_bytes(block_hash, field="block_hash", subject=subject),
        block=_check_bytes(block, field="block", subject=subject),
        commit=_check_bytes(commit, field="commit", subject=subject),
    )


def _block_is_new(new: StoredBlock, existing: StoredBlock | None, head: StoredBlock | None) -> bool:
    """Whether to insert ``new`` (``False``: an idempotent repeat); raises on a broken rule."""
    subject = f"block {new.height}"
    if existing is not None:
        if existing.block_hash != new.block_hash:
            raise InvalidInput(
                reason="conflicting_block",
                subject=subject,
                field="block_hash",
                expected=existing.block_hash.hex(),
                found=new.block_hash.hex(),
            )
        if existing.block != new.block:
            raise InvalidInput(
                reason="conflicting_block",
                subject=subject,
                field="block",
                expected="the stored block's bytes",
                found="other bytes under the same hash",
            )
        return False
    if head is None:
        return True
    if new.height != head.height + 1:
        raise InvalidInput(
            reason="height_gap" if new.height > head.height else "below_first_block",
            subject=subject,
            field="height",
            expected=str(head.height + 1),
            found=str(new.height),
        )
    return True


def _snapshot_is_new(
    new: Snapshot,
    existing: Snapshot | None,
    latest: Snapshot | None,
    head: StoredBlock | None,
) -> bool:
    subject = f"snapshot {new.height}"
    if existing is not None:
        if existing.state != new.state:
            raise InvalidInput(
                reason="conflicting_snapshot",
                subject=subject,
                field="state",
                expected="the stored state's bytes",
                found="other bytes",
            )
        return False
    head_height = head.height if head is not None else 0
    if new.height > head_height:
        raise InvalidInput(
            reason="snapshot_ahead_of_head",
            subject=subject,
            field="height",
            expected=f"<= {head_height}",
            found=str(new.height),
        )
    if latest is not None and new.height < latest.height:
        raise InvalidInput(
            reason="snapshot_regression",
            subject=subject,
            field="height",
            expected=f">= {latest.height}",
            found=str(new.height),
        )
    return True


def _check_wal_height(height: int, floor: int) -> None:
    if height < floor:
        raise InvalidInput(
            reason="wal_regression",
            subject=f"wal record at height {height}",
            field="height",
            expected=f">= {floor}",
            found=str(height),
        )


def _check_truncate(below: int, head: StoredBlock | None) -> None:
    limit = head.height + 1 if head is not None else 0
    if below > limit:
        raise InvalidInput(
            reason="truncate_uncommitted",
            subject="wal",
            field="below",
            expected=f"<= {limit} (head + 1)",
            found=str(below),
        )


def _new_last_signed(height: object, round: object, step: object, vote: object) -> LastSigned:
    subject = f"vote at {height!r}/{round!r}/{step!r}"
    return LastSigned(
        height=_check_int(height, field="height", subject=subject),
        round=_check_int(round, field="round", subject=subject),
        step=_check_int(step, field="step", subject=subject),
        vote=_check_bytes(vote, field="vote", subject=subject),
    )


def _last_signed_is_new(new: LastSigned, current: LastSigned | None) -> bool:
    if current is None or new.key > current.key:
        return True
    subject = f"vote at {new.height}/{new.round}/{new.step}"
    if new.key == current.key:
        if new.vote == current.vote:
            return False
        raise InvalidInput(
            reason="double_sign",
            subject=subject,
            field="vote",
            expected="the vote already signed at this height/round/step",
            found="a different vote",
        )
    raise InvalidInput(
        reason="last_signed_regression",
        subject=subject,
        field="height/round/step",
        expected=f"> {current.height}/{current.round}/{current.step}",
        found=f"{new.height}/{new.round}/{new.step}",
    )


def _check_limit(limit: object) -> int:
    return _check_int(limit, field="limit", subject="blocks_from")


# --- SQLite -----------------------------------------------------------------------------------


class NodeStore:
    """A node's SQLite store (see the module docstring for its rules and durability).

    Open with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    __slots__ = ("_conn", "_durability", "_keep_snapshots", "_path", "_sync_now")

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, durability: Durability, keep_snapshots: int
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._durability = durability
        self._keep_snapshots = keep_snapshots
        self._sync_now = ""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = Durability.FULL,
        keep_snapshots: int = 2,
    ) -> NodeStore:
        """Open (or create) the store at ``path``; migrate an older schema forward.

        Raises :class:`InvalidInput` for a file that is not ours or has a newer schema, and
        :class:`UsageError` when another process holds the file or the directory is missing.
        """
        if (
            isinstance(keep_snapshots, bool)
            or not isinstance(keep_snapshots, int)
            or keep_snapshots < 1
        ):
            raise UsageError(f"keep_snapshots must be an int >= 1, got {keep_snapshots!r}")
        if not isinstance(durability, Durability):
            raise UsageError(f"durability must be a Durability, got {durability!r}")
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise UsageError(
                f"gridnode's store needs SQLite >= 3.37, found {sqlite3.sqlite_version}"
            )
        p = Path(path)
        if not p.parent.is_dir():
            raise UsageError(f"store directory {str(p.parent)!r} does not exist")
        if p.exists() and not p.is_file():
            raise UsageError(f"store path {str(p)!r} exists and is not a file")
        conn = sqlite3.connect(p, isolation_level=None, timeout=0.0)
        try:
            _open_schema(conn, p)
        except BaseException:
            conn.close()
            raise
        return cls(conn, p, durability=durability, keep_snapshots=keep_snapshots)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the file (checkpointing its WAL). Idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"NodeStore({str(self._path)!r}, {state}, durability={self._durability.name})"

    # -- plumbing

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise UsageError(f"store {str(self._path)!r} is closed")
        return self._conn

    @contextmanager
    def _write(self, *, consensus: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``consensus`` tables sync at the store's durability."""
        conn = self._c()
        level = self._durability.value if consensus else Durability.NORMAL.value
        if level != self._sync_now:
            conn.execute(f"PRAGMA synchronous={level}")
            self._sync_now = level
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- blocks

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None:
        """Append the committed block at ``height`` (idempotent for the same block)."""
        new = _new_block(height, block_hash, block, commit)
        with self._write(consensus=True) as conn:
            existing = _block_row(conn, "WHERE height = ?", (new.height,))
            head = _block_row(conn, "ORDER BY height DESC LIMIT 1", ())
            if _block_is_new(new, existing, head):
                conn.execute(
                    "INSERT INTO blocks (height, hash, block, commit_bytes) VALUES (?, ?, ?, ?)",
                    (new.height, new.block_hash, new.block, new.commit),
                )

    def block(self, height: int) -> StoredBlock | None:
        h = _check_int(height, field="height", subject="block")
        return _block_row(self._c(), "WHERE height = ?", (h,))

    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]:
        """Up to ``limit`` blocks with heights ``>= height``, in height order."""
        h = _check_int(height, field="height", subject="blocks_from")
        n = _check_limit(limit)
        rows = self._c().execute(
            "SELECT height, hash, block, commit_bytes FROM blocks WHERE height >= ?"
            " ORDER BY height LIMIT ?",
            (h, n),
        )
        return [StoredBlock(*row) for row in rows]

    def head(self) -> StoredBlock | None:
        """The highest committed block, or ``None`` in an empty store."""
        return _block_row(self._c(), "ORDER BY height DESC LIMIT 1", ())

    # -- snapshots

    def put_snapshot(self, height: int, state: bytes) -> None:
        """Store the state after block ``height``; keep only the newest ``keep_snapshots``."""
        subject = f"snapshot {height!r}"
        new = Snapshot(
            height=_check_int(height, field="height", subject=subject),
            state=_check_bytes(state, field="state", subject=subject),
        )
        with self._write(consensus=False) as conn:
            existing = _snapshot_row(conn, "WHERE height = ?", (new.height,))
            latest = _snapshot_row(conn, "ORDER BY height DESC LIMIT 1", ())
            head = _block_row(conn, "ORDER BY height DESC LIMIT 1", ())
            if _snapshot_is_new(new, existing, latest, head):
                conn.execute(
                    "INSERT INTO snapshots (height, state) VALUES (?, ?)", (new.height, new.state)
                )
                conn.execute(
                    "DELETE FROM snapshots WHERE height NOT IN"
                    " (SELECT height FROM snapshots ORDER BY height DESC LIMIT ?)",
                    (self._keep_snapshots,),
                )

    def latest_snapshot(self) -> Snapshot | None:
        return _snapshot_row(self._c(), "ORDER BY height DESC LIMIT 1", ())

    def snapshot_heights(self) -> list[int]:
        """Heights of the snapshots kept, ascending."""
        return [r[0] for r in self._c().execute("SELECT height FROM snapshots ORDER BY height")]

    # -- consensus WAL

    def append_wal(self, height: int, record: bytes) -> int:
        """Append a consensus record for ``height``; returns its sequence number."""
        subject = f"wal record at height {height!r}"
        h = _check_int(height, field="height", subject=subject)
        rec = _check_bytes(record, field="record", subject=subject)
        with self._write(consensus=True) as conn:
            _check_wal_height(h, _wal_floor(conn))
            cur = conn.execute("INSERT INTO wal (height, record) VALUES (?, ?)", (h, rec))
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def wal_since(self, height: int) -> list[WalRecord]:
        """The WAL records of heights ``>= height``, in sequence order."""
        h = _check_int(height, field="height", subject="wal_since")
        rows = self._c().execute(
            "SELECT seq, height, record FROM wal WHERE height >= ? ORDER BY seq", (h,)
        )
        return [WalRecord(*row) for row in rows]

    def truncate_wal(self, below: int) -> int:
        """Drop the WAL records of (committed) heights ``< below``; returns how many went."""
        b = _check_int(below, field="below", subject="truncate_wal")
        with self._write(consensus=True) as conn:
            _check_truncate(b, _block_row(conn, "ORDER BY height DESC LIMIT 1", ()))
            removed = conn.execute("DELETE FROM wal WHERE height < ?", (b,)).rowcount
            conn.execute("UPDATE wal_floor SET height = max(height, ?) WHERE id = 1", (b,))
        return removed

    # -- double-sign protection

    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        """Record the vote about to be sent; durable when this returns. Only moves forward."""
        new = _new_last_signed(height, round, step, vote)
        with self._write(consensus=True) as conn:
            if _last_signed_is_new(new, _last_signed_row(conn)):
                conn.execute(
                    "INSERT OR REPLACE INTO last_signed (id, height, round, step, vote)"
                    " VALUES (1, ?, ?, ?, ?)",
                    (new.height, new.round, new.step, new.vote),
                )

    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        """:meth:`append_wal` of ``vote`` and :meth:`save_last_signed` in one transaction (one
        fsync instead of two). A retry of the last signed vote is a no-op for both."""
        new = _new_last_signed(height, round, step, vote)
        with self._write(consensus=True) as conn:
            if not _last_signed_is_new(new, _last_signed_row(conn)):
                return
            _check_wal_height(new.height, _wal_floor(conn))
            conn.execute("INSERT INTO wal (height, record) VALUES (?, ?)", (new.height, new.vote))
            conn.execute(
                "INSERT OR REPLACE INTO last_signed (id, height, round, step, vote)"
                " VALUES (1, ?, ?, ?, ?)",
                (new.height, new.round, new.step, new.vote),
            )

    def last_signed(self) -> LastSigned | None:
        return _last_signed_row(self._c())

    # -- metadata

    def set_meta(self, key: str, value: bytes) -> None:
        k = _check_meta_key(key)
        if not isinstance(value, bytes):
            raise InvalidInput(
                reason="bad_type",
                subject="meta",
                field=k,
                expected="bytes",
                found=type(value).__name__,
            )
        with self._write(consensus=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, value))

    def meta(self, key: str) -> bytes | None:
        k = _check_meta_key(key)
        row = self._c().execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- maintenance

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        rows = self._c().execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)


def _block_row(conn: sqlite3.Connection, where: str, args: tuple[int, ...]) -> StoredBlock | None:
    row = conn.execute(
        f"SELECT height, hash, block, commit_bytes FROM blocks {where}", args
    ).fetchone()
    return None if row is None else StoredBlock(*row)


def _snapshot_row(conn: sqlite3.Connection, where: str, args: tuple[int, ...]) -> Snapshot | None:
    row = conn.execute(f"SELECT height, state FROM snapshots {where}", args).fetchone()
    return None if row is None else Snapshot(*row)


def _last_signed_row(conn: sqlite3.Connection) -> LastSigned | None:
    row = conn.execute("SELECT height, round, step, vote FROM last_signed WHERE id = 1").fetchone()
    return None if row is None else LastSigned(*row)


def _wal_floor(conn: sqlite3.Connection) -> int:
    floor = conn.execute("SELECT height FROM wal_floor WHERE id = 1").fetchone()[0]
    top = conn.execute("SELECT max(height) FROM wal").fetchone()[0]
    return max(int(floor), int(top) if top is not None else 0)


def _not_ours(path: Path, found: str) -> InvalidInput:
    return InvalidInput(
        reason="not_a_gridnode_store",
        subject=str(path),
        expected=f"a gridnode store (SQLite, application_id {APPLICATION_ID:#x})",
        found=found,
    )


def _open_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours (without touching a foreign one), take the lock, migrate."""
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        n_tables = int(conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise UsageError(f"store {str(path)!r} is in use by another process") from exc
        raise
    except sqlite3.DatabaseError as exc:
        raise _not_ours(path, f"not a SQLite database ({exc})") from exc
    if app_id not in (0, APPLICATION_ID):
        raise _not_ours(path, f"application_id {app_id:#x}")
    if app_id == 0 and n_tables:
        raise _not_ours(path, f"a SQLite database of another application ({n_tables} tables)")
    version = 0
    if app_id == APPLICATION_ID:
        version = _read_version(conn, path)
        if version > SCHEMA_VERSION:
            raise InvalidInput(
                reason="schema_too_new",
                subject=str(path),
                field="schema_version",
                expected=f"<= {SCHEMA_VERSION} (this gridnode's schema)",
                found=str(version),
            )
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise UsageError(f"store {str(path)!r} is in use by another process") from exc
        raise
    if str(mode).lower() != "wal":
        raise UsageError(f"store {str(path)!r}: could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    _migrate(conn, version, MIGRATIONS)
    # Take the exclusive lock now, so a second process fails at open, not at its first write.
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise UsageError(f"store {str(path)!r} is in use by another process") from exc
    conn.execute("COMMIT")


def _read_version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        raise _not_ours(path, f"no schema_version table ({exc})") from exc
    if row is None or not isinstance(row[0], int):
        raise _not_ours(path, f"schema_version row {row!r}")
    return int(row[0])


def _migrate(
    conn: sqlite3.Connection, version: int, migrations: tuple[tuple[str, ...], ...]
) -> None:
    """Run ``migrations[version:]``, one transaction per step (a step is all or nothing)."""
    for target in range(version + 1, len(migrations) + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise UsageError(f"store is in use by another process ({exc})") from exc
        try:
            for statement in migrations[target - 1]:
                conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (target,))
            if target == 1:
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


# --- in memory --------------------------------------------------------------------------------


class MemoryStore:
    """The store in memory: same interface and rules as :class:`NodeStore`, no file.

    For the deterministic simulation: a simulated crash keeps the object (everything a call
    returned from is "durable") and a restarted node core reads it back with :func:`recover`.
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
        if (
            isinstance(keep_snapshots, bool)
            or not isinstance(keep_snapshots, int)
            or keep_snapshots < 1
        ):
            raise UsageError(f"keep_snapshots must be an int >= 1, got {keep_snapshots!r}")
        self._keep_snapshots = keep_snapshots
        self._blocks: dict[int, StoredBlock] = {}
        # heights are contiguous, so the blocks are exactly range(_first, _top + 1)
        self._first = 0
        self._top = -1
        self._snapshots: dict[int, Snapshot] = {}
        self._wal: list[WalRecord] = []
        self._wal_floor = 0
        self._next_seq = 1
        self._last_signed: LastSigned | None = None
        self._meta: dict[str, bytes] = {}
        self._closed = False

    def close(self) -> None:
        """Mark closed (calls then raise, as on a closed :class:`NodeStore`); the data stays."""
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

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None:
        new = _new_block(height, block_hash, block, commit)
        self._live()
        if _block_is_new(new, self._blocks.get(new.height), self.head()):
            self._blocks[new.height] = new
            if self._top < 0:
                self._first = new.height
            self._top = new.height

    def block(self, height: int) -> StoredBlock | None:
        h = _check_int(height, field="height", subject="block")
        self._live()
        return self._blocks.get(h)

    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]:
        h = _check_int(height, field="height", subject="blocks_from")
        n = _check_limit(limit)
        self._live()
        start = max(h, self._first)
        return [self._blocks[k] for k in range(start, min(self._top + 1, start + n))]

    def head(self) -> StoredBlock | None:
        self._live()
        return self._blocks[self._top] if self._blocks else None

    def put_snapshot(self, height: int, state: bytes) -> None:
        subject = f"snapshot {height!r}"
        new = Snapshot(
            height=_check_int(height, field="height", subject=subject),
            state=_check_bytes(state, field="state", subject=subject),
        )
        self._live()
        if _snapshot_is_new(
            new, self._snapshots.get(new.height), self.latest_snapshot(), self.head()
        ):
            self._snapshots[new.height] = new
            for h in sorted(self._snapshots)[: -self._keep_snapshots]:
                del self._snapshots[h]

    def latest_snapshot(self) -> Snapshot | None:
        self._live()
        return self._snapshots[max(self._snapshots)] if self._snapshots else None

    def snapshot_heights(self) -> list[int]:
        self._live()
        return sorted(self._snapshots)

    def append_wal(self, height: int, record: bytes) -> int:
        subject = f"wal record at height {height!r}"
        h = _check_int(height, field="height", subject=subject)
        rec = _check_bytes(record, field="record", subject=subject)
        self._live()
        _check_wal_height(h, max([self._wal_floor, *(r.height for r in self._wal[-1:])]))
        seq = self._next_seq
        self._wal.append(WalRecord(seq=seq, height=h, record=rec))
        self._next_seq += 1
        return seq

    def wal_since(self, height: int) -> list[WalRecord]:
        h = _check_int(height, field="height", subject="wal_since")
        self._live()
        return [r for r in self._wal if r.height >= h]

    def truncate_wal(self, below: int) -> int:
        b = _check_int(below, field="below", subject="truncate_wal")
        self._live()
        _check_truncate(b, self.head())
        kept = [r for r in self._wal if r.height >= b]
        removed = len(self._wal) - len(kept)
        self._wal = kept
        self._wal_floor = max(self._wal_floor, b)
        return removed

    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        new = _new_last_signed(height, round, step, vote)
        self._live()
        if _last_signed_is_new(new, self._last_signed):
            self._last_signed = new

    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        new = _new_last_signed(height, round, step, vote)
        self._live()
        if not _last_signed_is_new(new, self._last_signed):
            return
        _check_wal_height(new.height, max([self._wal_floor, *(r.height for r in self._wal[-1:])]))
        self._wal.append(WalRecord(seq=self._next_seq, height=new.height, record=new.vote))
        self._next_seq += 1
        self._last_signed = new

    def last_signed(self) -> LastSigned | None:
        self._live()
        return self._last_signed

    def set_meta(self, key: str, value: bytes) -> None:
        k = _check_meta_key(key)
        if not isinstance(value, bytes):
            raise InvalidInput(
                reason="bad_type",
                subject="meta",
                field=k,
                expected="bytes",
                found=type(value).__name__,
            )
        self._live()
        self._meta[k] = value

    def meta(self, key: str) -> bytes | None:
        k = _check_meta_key(key)
        self._live()
        return self._meta.get(k)
