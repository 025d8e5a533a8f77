"""What only the SQLite store has: its file, schema version, migrations, locking and sync levels."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gridnode.store import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    Durability,
    NodeStore,
)
from gridnode.store import sqlite as store_mod
from market.errors import InvalidInput, StoreReason, UsageError
from tests.refusals import refused


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_a_new_file_is_marked_ours_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    NodeStore.open(path).close()
    conn = raw(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_reopening_keeps_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    with NodeStore.open(path) as s:
        s.put_block(1, b"h", b"b", b"c")
    with NodeStore.open(path) as s:
        assert s.integrity_check() == "ok"
        assert s.head() is not None


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"my shopping list\n" * 300
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "not_a_gridnode_store"
    assert exc.value.subject == str(path)
    assert path.read_bytes() == content


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = raw(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "not_a_gridnode_store"
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


def test_a_database_with_another_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = raw(path)
    conn.execute("PRAGMA application_id=1234")
    conn.close()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "not_a_gridnode_store"
    assert "0x4d2" in exc.value.found


def test_our_id_without_a_schema_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.sqlite"
    conn = raw(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("CREATE TABLE x (y)")
    conn.close()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "not_a_gridnode_store"


def test_a_newer_schema_is_refused_with_both_versions_named(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    NodeStore.open(path).close()
    conn = raw(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "schema_too_new"
    assert exc.value.found == str(SCHEMA_VERSION + 1)
    assert str(SCHEMA_VERSION) in exc.value.expected


def test_an_empty_file_is_refused_untouched(tmp_path: Path) -> None:
    """A 0-byte file is a store that lost its content, never a new one: a validator started on
    it would have forgotten its last signed vote (issue 11.5)."""
    path = tmp_path / "n.sqlite"
    path.touch()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "empty_file"
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.sqlite"]


def test_an_empty_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    conn = raw(path)
    conn.execute("PRAGMA user_version=0")  # a valid, empty SQLite file
    conn.execute("VACUUM")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "not_a_gridnode_store"
    assert "empty SQLite database" in exc.value.found
    assert path.read_bytes() == before


def test_a_missing_directory_or_a_directory_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        NodeStore.open(tmp_path / "nope" / "n.sqlite")
    with pytest.raises(UsageError, match="not a file"):
        NodeStore.open(tmp_path)


def test_a_second_opener_is_refused_while_the_first_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    with NodeStore.open(path) as first:
        first.put_block(1, b"h", b"b", b"c")
        with pytest.raises(UsageError, match="in use"):
            NodeStore.open(path)
        # and from another process (a second daemon on the same data directory)
        code = (
            "import sys\nfrom gridnode.store import NodeStore\nfrom market.errors import UsageError\n"
            "try:\n    NodeStore.open(sys.argv[1])\nexcept UsageError:\n    sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(path)], check=False, timeout=60)
        assert result.returncode == 3
        assert first.head() is not None
    with NodeStore.open(path) as again:  # released on close
        assert again.head() is not None


def test_the_lock_dies_with_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    code = (
        "import os, signal, sys\nfrom gridnode.store import NodeStore\n"
        "s = NodeStore.open(sys.argv[1])\ns.put_block(1, b'h', b'b', b'c')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], check=False, timeout=60)
    assert result.returncode == -9
    with NodeStore.open(path) as s:
        head = s.head()
        assert head is not None
        assert head.height == 1


def test_consensus_tables_sync_full_and_snapshots_normal(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path / "n.sqlite") as s:
        conn = s._c()

        def level() -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        s.put_block(1, b"h", b"b", b"c")
        assert level() == 2  # FULL
        s.put_snapshot(1, b"state")
        assert level() == 1  # NORMAL
        s.save_last_signed(1, 0, 0, b"v")
        assert level() == 2
        s.append_wal(2, b"r")
        assert level() == 2
        s.set_meta("k", b"v")
        assert level() == 2


def test_durability_normal_relaxes_the_consensus_tables(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path / "n.sqlite", durability=Durability.NORMAL) as s:
        s.put_block(1, b"h", b"b", b"c")
        assert s._c().execute("PRAGMA synchronous").fetchone()[0] == 1


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="durability"):
        NodeStore.open(tmp_path / "n.sqlite", durability="FULL")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="keep_snapshots"):
        NodeStore.open(tmp_path / "n.sqlite", keep_snapshots=True)
    assert not (tmp_path / "n.sqlite").exists()


def test_a_refused_write_leaves_no_open_transaction(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path / "n.sqlite") as s:
        s.put_block(1, b"h", b"b", b"c")
        with refused(StoreReason.CONFLICTING_BLOCK):
            s.put_block(1, b"other", b"b", b"c")
        assert not s._c().in_transaction
        s.put_block(2, b"h2", b"b", b"c")


def test_migrations_run_forward_one_transaction_each(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    NodeStore.open(path).close()
    extra = (*MIGRATIONS, ("CREATE TABLE peers (id TEXT PRIMARY KEY) STRICT",))
    conn = raw(path)
    try:
        store_mod._migrate(conn, SCHEMA_VERSION, extra)
        assert (
            conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1
        )
        assert conn.execute("SELECT count(*) FROM peers").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_failing_migration_step_leaves_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    NodeStore.open(path).close()
    broken = (*MIGRATIONS, ("CREATE TABLE half (x)", "THIS IS NOT SQL"))
    conn = raw(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            store_mod._migrate(conn, SCHEMA_VERSION, broken)
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        assert "half" not in tables
    finally:
        conn.close()
    with NodeStore.open(path) as s:
        assert s.integrity_check() == "ok"


def test_a_fresh_file_is_created_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is built in a temporary file and linked into place: a creation that fails (here a
    broken migration) leaves no file behind, neither at the path nor beside it."""
    path = tmp_path / "n.sqlite"
    monkeypatch.setattr(store_mod, "MIGRATIONS", ((*MIGRATIONS[0], "BROKEN"),))
    with pytest.raises(UsageError, match="cannot create the store"):
        NodeStore.open(path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with NodeStore.open(path) as s:
        assert s.head() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.sqlite"]  # no -wal/-shm, no temp


def test_repr_and_path(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    s = NodeStore.open(path)
    assert s.path == path
    assert "open" in repr(s)
    s.close()
    assert "closed" in repr(s)
