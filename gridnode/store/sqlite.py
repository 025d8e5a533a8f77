"""A node's SQLite store (:class:`NodeStore`): one file, the rules of :mod:`gridnode.store`.

Rules of this module, on top of the shared ones:

* **Creation is atomic**: a new store is built in a temporary file next to ``path`` (schema, the
  application id and, when given, the :class:`~gridnode.store.records.StoreBinding`), synced, and
  then linked into place; the directory is synced. So a file at ``path`` is always a complete
  store, and an existing file that is not one is refused rather than taken as new: a 0-byte file
  (``empty_file``: a validator started on it would have lost its last-signed record), an empty
  SQLite database or another application's (``not_a_gridnode_store``), a newer schema
  (``schema_too_new``), a file failing SQLite's ``quick_check`` (``damaged_store``), or one bound
  to another community or genesis (``other_community``, ``other_genesis``). A refused file is never
  modified.
* **Fail-stop**: an SQLite error after open (disk full, I/O error, a damaged page found by a
  query) raises :class:`~gridnode.store.records.StoreFailed` and fails the store: every later call
  raises it too, and ``on_failure`` (if given) is called once, so the owner stops rather than
  carrying on with state it may not have recorded.
* **Ownership**: the file is opened in SQLite's exclusive locking mode; a second process gets a
  :class:`~market.errors.UsageError` ("in use by another process"). The OS drops the lock when the
  owner dies, even by ``kill -9``. A store is used from one thread.
* **Durability per table** (``synchronous`` switched per transaction on the one connection):
  blocks, wal, last_signed and meta at the store's :class:`~gridnode.store.records.Durability`
  (FULL by default); snapshots at NORMAL (derived data, rebuilt by replay if lost).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Concatenate, Final, ParamSpec, Self, TypeVar

from gridnode.files import fsync_path
from gridnode.store.records import (
    APPLICATION_ID,
    Durability,
    LastSigned,
    StateSnapshot,
    StoreBinding,
    StoredBlock,
    StoreFailed,
    WalRow,
)
from gridnode.store.recovery import BINDING_KEY, check_binding, decode_binding, encode_binding
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
from market.errors import InvalidInput, UsageError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "NodeStore"]

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

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[NodeStore, _P], _R],
) -> Callable[Concatenate[NodeStore, _P], _R]:
    """An SQLite error inside ``method`` fails the store (fail-stop, see the module rules)."""

    def guarded(self: NodeStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._fail(method.__name__, exc) from exc

    functools.update_wrapper(guarded, method)
    return guarded


class NodeStore:
    """A node's SQLite store (see :mod:`gridnode.store` for its rules and durability).

    Open with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    __slots__ = (
        "_conn",
        "_durability",
        "_failed",
        "_keep_snapshots",
        "_on_failure",
        "_path",
        "_sync_now",
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        durability: Durability,
        keep_snapshots: int,
        on_failure: Callable[[StoreFailed], None] | None,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._durability = durability
        self._keep_snapshots = keep_snapshots
        self._on_failure = on_failure
        self._failed: StoreFailed | None = None
        self._sync_now = ""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = Durability.FULL,
        keep_snapshots: int = 2,
        binding: StoreBinding | None = None,
        on_failure: Callable[[StoreFailed], None] | None = None,
    ) -> NodeStore:
        """Open the store at ``path``, or create it (atomically) if there is no file there.

        ``binding``: the chain the caller runs. A new store records it; an existing store that
        recorded another one is refused (``other_community``, ``other_genesis``); an existing
        store that recorded none is opened (the caller may :func:`~gridnode.store.bind` it).
        ``on_failure`` is called once if the store fails later (see the module rules).

        Raises :class:`InvalidInput` for a file that is not a complete, sound store of ours (see
        the module rules) and :class:`UsageError` when another process holds the file, the
        directory is missing or the file cannot be created or written.
        """
        keep = check_keep_snapshots(keep_snapshots)
        if not isinstance(durability, Durability):
            raise UsageError(f"durability must be a Durability, got {durability!r}")
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise UsageError(
                f"gridnode's store needs SQLite >= 3.37, found {sqlite3.sqlite_version}"
            )
        p = Path(path)
        if not p.parent.exists():
            raise UsageError(f"store directory {str(p.parent)!r} does not exist")
        if not p.parent.is_dir():
            raise UsageError(f"store directory {str(p.parent)!r} is not a directory")
        if p.exists() and not p.is_file():
            raise UsageError(f"store path {str(p)!r} exists and is not a file")
        if not p.exists():
            _create(p, binding)
        elif p.stat().st_size == 0:
            raise InvalidInput(
                reason="empty_file",
                subject=str(p),
                expected="a gridnode store (a new node has no file: the store creates it)",
                found="an empty file (0 bytes): the store that was here is lost",
            )
        try:
            conn = sqlite3.connect(p, isolation_level=None, timeout=0.0)
        except sqlite3.Error as exc:
            raise _open_error(p, exc) from exc
        try:
            _open_schema(conn, p, binding)
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(p, exc) from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, p, durability=durability, keep_snapshots=keep, on_failure=on_failure)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def durability(self) -> Durability:
        """How hard the consensus tables are synced (what :meth:`open` was given)."""
        return self._durability

    @property
    def failed(self) -> StoreFailed | None:
        """The failure that stopped this store, or ``None``."""
        return self._failed

    def close(self) -> None:
        """Close the file (checkpointing its WAL). Idempotent; quiet on a failed store."""
        if self._conn is not None:
            with suppress(sqlite3.Error):
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
        state = "failed" if self._failed else "open" if self._conn is not None else "closed"
        return f"NodeStore({str(self._path)!r}, {state}, durability={self._durability.name})"

    # -- plumbing

    def _c(self) -> sqlite3.Connection:
        if self._failed is not None:
            f = self._failed
            raise StoreFailed(f.path, f.operation, f"{f.cause} (the store failed earlier)")
        if self._conn is None:
            raise UsageError(f"store {str(self._path)!r} is closed")
        return self._conn

    def _fail(self, operation: str, exc: sqlite3.Error) -> StoreFailed:
        failure = StoreFailed(self._path, operation, str(exc))
        first = self._failed is None
        if first:
            self._failed = failure
            if self._on_failure is not None:
                self._on_failure(failure)
        return failure

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
                with suppress(sqlite3.Error):  # the error that brought us here is the one to raise
                    conn.execute("ROLLBACK")
            raise

    # -- blocks

    @_guarded
    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None:
        """Append the committed block at ``height`` (idempotent for the same block)."""
        new = new_block(height, block_hash, block, commit)
        with self._write(consensus=True) as conn:
            existing = _block_row(conn, "WHERE height = ?", (new.height,))
            head = _block_row(conn, "ORDER BY height DESC LIMIT 1", ())
            if block_is_new(new, existing, head):
                conn.execute(
                    "INSERT INTO blocks (height, hash, block, commit_bytes) VALUES (?, ?, ?, ?)",
                    (new.height, new.block_hash, new.block, new.commit),
                )

    @_guarded
    def block(self, height: int) -> StoredBlock | None:
        h = check_int(height, field="height", subject="block")
        return _block_row(self._c(), "WHERE height = ?", (h,))

    @_guarded
    def blocks_from(self, height: int, limit: int) -> list[StoredBlock]:
        """Up to ``limit`` blocks with heights ``>= height``, in height order."""
        h = check_int(height, field="height", subject="blocks_from")
        n = check_limit(limit)
        rows = self._c().execute(
            "SELECT height, hash, block, commit_bytes FROM blocks WHERE height >= ?"
            " ORDER BY height LIMIT ?",
            (h, n),
        )
        return [StoredBlock(*row) for row in rows]

    @_guarded
    def head(self) -> StoredBlock | None:
        """The highest committed block, or ``None`` in an empty store."""
        return _block_row(self._c(), "ORDER BY height DESC LIMIT 1", ())

    # -- snapshots

    @_guarded
    def put_snapshot(self, height: int, state: bytes) -> None:
        """Store the state after block ``height``; keep only the newest ``keep_snapshots``."""
        new = new_snapshot(height, state)
        with self._write(consensus=False) as conn:
            existing = _snapshot_row(conn, "WHERE height = ?", (new.height,))
            latest = _snapshot_row(conn, "ORDER BY height DESC LIMIT 1", ())
            head = _block_row(conn, "ORDER BY height DESC LIMIT 1", ())
            if snapshot_is_new(new, existing, latest, head):
                conn.execute(
                    "INSERT INTO snapshots (height, state) VALUES (?, ?)", (new.height, new.state)
                )
                conn.execute(
                    "DELETE FROM snapshots WHERE height NOT IN"
                    " (SELECT height FROM snapshots ORDER BY height DESC LIMIT ?)",
                    (self._keep_snapshots,),
                )

    @_guarded
    def latest_snapshot(self) -> StateSnapshot | None:
        return _snapshot_row(self._c(), "ORDER BY height DESC LIMIT 1", ())

    @_guarded
    def snapshot_heights(self) -> list[int]:
        """Heights of the snapshots kept, ascending."""
        return [r[0] for r in self._c().execute("SELECT height FROM snapshots ORDER BY height")]

    # -- consensus WAL

    @_guarded
    def append_wal(self, height: int, record: bytes) -> int:
        """Append a consensus record for ``height``; returns its sequence number."""
        row = new_wal_row(0, height, record)
        with self._write(consensus=True) as conn:
            check_wal_height(row.height, _wal_floor(conn))
            cur = conn.execute(
                "INSERT INTO wal (height, record) VALUES (?, ?)", (row.height, row.record)
            )
            seq = cur.lastrowid
        assert seq is not None
        return seq

    @_guarded
    def wal_since(self, height: int) -> list[WalRow]:
        """The WAL rows of heights ``>= height``, in sequence order."""
        h = check_int(height, field="height", subject="wal_since")
        rows = self._c().execute(
            "SELECT seq, height, record FROM wal WHERE height >= ? ORDER BY seq", (h,)
        )
        return [WalRow(*row) for row in rows]

    @_guarded
    def truncate_wal(self, below: int) -> int:
        """Drop the WAL rows of (committed) heights ``< below``; returns how many went."""
        b = check_int(below, field="below", subject="truncate_wal")
        with self._write(consensus=True) as conn:
            check_truncate(b, _block_row(conn, "ORDER BY height DESC LIMIT 1", ()))
            removed = conn.execute("DELETE FROM wal WHERE height < ?", (b,)).rowcount
            conn.execute("UPDATE wal_floor SET height = max(height, ?) WHERE id = 1", (b,))
        return removed

    # -- double-sign protection

    @_guarded
    def save_last_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        """Record the vote about to be sent; durable when this returns. Only moves forward."""
        new = new_last_signed(height, round, step, vote)
        with self._write(consensus=True) as conn:
            if last_signed_is_new(new, _last_signed_row(conn)):
                conn.execute(
                    "INSERT OR REPLACE INTO last_signed (id, height, round, step, vote)"
                    " VALUES (1, ?, ?, ?, ?)",
                    (new.height, new.round, new.step, new.vote),
                )

    @_guarded
    def append_signed(self, height: int, round: int, step: int, vote: bytes) -> None:
        """:meth:`append_wal` of ``vote`` and :meth:`save_last_signed` in one transaction (one
        fsync instead of two). A retry of the last signed vote is a no-op for both."""
        new = new_last_signed(height, round, step, vote)
        with self._write(consensus=True) as conn:
            if not last_signed_is_new(new, _last_signed_row(conn)):
                return
            check_wal_height(new.height, _wal_floor(conn))
            conn.execute("INSERT INTO wal (height, record) VALUES (?, ?)", (new.height, new.vote))
            conn.execute(
                "INSERT OR REPLACE INTO last_signed (id, height, round, step, vote)"
                " VALUES (1, ?, ?, ?, ?)",
                (new.height, new.round, new.step, new.vote),
            )

    @_guarded
    def last_signed(self) -> LastSigned | None:
        return _last_signed_row(self._c())

    # -- metadata

    @_guarded
    def set_meta(self, key: str, value: bytes) -> None:
        k = check_meta_key(key)
        v = check_meta_value(k, value)
        with self._write(consensus=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))

    @_guarded
    def meta(self, key: str) -> bytes | None:
        k = check_meta_key(key)
        row = self._c().execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- maintenance

    @_guarded
    def integrity_check(self) -> str:
        """SQLite's full ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        rows = self._c().execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)


def _block_row(conn: sqlite3.Connection, where: str, args: tuple[int, ...]) -> StoredBlock | None:
    row = conn.execute(
        f"SELECT height, hash, block, commit_bytes FROM blocks {where}", args
    ).fetchone()
    return None if row is None else StoredBlock(*row)


def _snapshot_row(
    conn: sqlite3.Connection, where: str, args: tuple[int, ...]
) -> StateSnapshot | None:
    row = conn.execute(f"SELECT height, state FROM snapshots {where}", args).fetchone()
    return None if row is None else StateSnapshot(*row)


def _last_signed_row(conn: sqlite3.Connection) -> LastSigned | None:
    row = conn.execute("SELECT height, round, step, vote FROM last_signed WHERE id = 1").fetchone()
    return None if row is None else LastSigned(*row)


def _wal_floor(conn: sqlite3.Connection) -> int:
    floor = conn.execute("SELECT height FROM wal_floor WHERE id = 1").fetchone()[0]
    top = conn.execute("SELECT max(height) FROM wal").fetchone()[0]
    return max(int(floor), int(top) if top is not None else 0)


# --- opening -----------------------------------------------------------------------------------


def _in_use(path: Path) -> UsageError:
    return UsageError(f"store {str(path)!r} is in use by another process")


def _not_ours(path: Path, found: str) -> InvalidInput:
    return InvalidInput(
        reason="not_a_gridnode_store",
        subject=str(path),
        expected=f"a gridnode store (SQLite, application_id {APPLICATION_ID:#x})",
        found=found,
    )


def _damaged(path: Path, found: str) -> InvalidInput:
    return InvalidInput(
        reason="damaged_store",
        subject=str(path),
        expected="a store that passes SQLite's quick_check",
        found=found.splitlines()[0] if found else "an unreadable file",
    )


def _open_error(path: Path, exc: sqlite3.Error) -> Exception:
    """What an SQLite error while opening an existing file means, as one of our errors."""
    text = str(exc)
    if "locked" in text:
        return _in_use(path)
    if "malformed" in text or "corrupt" in text:
        return _damaged(path, text)
    if "not a database" in text:
        return _not_ours(path, f"not a SQLite database ({text})")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return UsageError(
            f"store {str(path)!r} cannot be written ({text}): the file or its directory is "
            f"read-only or not ours"
        )
    return UsageError(f"store {str(path)!r} cannot be opened: {text}")


def _open_schema(conn: sqlite3.Connection, path: Path, binding: StoreBinding | None) -> None:
    """Check the file is ours, sound and (given a ``binding``) holds that chain, without touching
    it; then switch to WAL mode, migrate and take the lock."""
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        n_tables = int(conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc):
            raise _open_error(path, exc) from exc
        raise _not_ours(path, f"not a SQLite database ({exc})") from exc
    except UnicodeDecodeError as exc:  # SQLite's message quotes a damaged name that is not UTF-8
        raise _damaged(path, f"schema text that is not UTF-8 ({exc.reason})") from exc
    if app_id not in (0, APPLICATION_ID):
        raise _not_ours(path, f"application_id {app_id:#x}")
    if app_id == 0:  # stores are created whole (see _create): a file without our id is not one
        found = f"a SQLite database of another application ({n_tables} tables)"
        raise _not_ours(path, found if n_tables else "an empty SQLite database")
    version = _read_version(conn, path)
    if version > SCHEMA_VERSION:
        raise InvalidInput(
            reason="schema_too_new",
            subject=str(path),
            field="schema_version",
            expected=f"<= {SCHEMA_VERSION} (this gridnode's schema)",
            found=str(version),
        )
    problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise _damaged(path, problems[0] if problems else "")
    if binding is not None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (BINDING_KEY,)).fetchone()
        held = None if row is None else decode_binding(bytes(row[0]))
        check_binding(held, binding, subject=str(path))
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise UsageError(f"store {str(path)!r}: could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    _migrate(conn, version, MIGRATIONS)
    # Take the exclusive lock now, so a second process fails at open, not at its first write.
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise _in_use(path) from exc
    conn.execute("COMMIT")


def _read_version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise
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


def _create(path: Path, binding: StoreBinding | None) -> None:
    """Build a complete store in a temporary file next to ``path``, sync it, link it into place
    and sync the directory. Another creator winning the race is fine (its file is opened)."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    except OSError as exc:
        raise UsageError(
            f"cannot create the store in {str(path.parent)!r}: {exc.strerror or exc}"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None, timeout=0.0)
        try:
            conn.execute("PRAGMA synchronous=FULL")  # rollback journal: nothing beside the file
            _migrate(conn, 0, MIGRATIONS)
            if binding is not None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    (BINDING_KEY, encode_binding(binding)),
                )
        finally:
            conn.close()
        fsync_path(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename (no other creator expected)
            if not path.exists():
                os.replace(tmp, path)
        fsync_path(path.parent)
    except (OSError, sqlite3.Error) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot create the store {str(path)!r}: {text}") from None
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
