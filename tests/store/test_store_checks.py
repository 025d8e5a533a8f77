"""Stores are checked on open and fail-stop after: damaged pages, bindings, a disk that fills up.

Issue 11.3 (a full disk left a zombie daemon) and 11.5 (bad stores were accepted): a store that is
not sound or holds another chain is refused on open without being touched; an SQLite error after
open (here a real full file system: a tmpfs of a few hundred KiB) fails the store for good and
tells its owner once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode.store import (
    MemoryStore,
    NodeStore,
    Store,
    StoreBinding,
    StoreFailed,
    bind,
    binding_of,
)
from market.errors import InvalidInput

A = StoreBinding("street-a", hashlib.sha256(b"genesis a").digest())
A_REISSUED = StoreBinding("street-a", hashlib.sha256(b"genesis a, edited").digest())
B = StoreBinding("street-b", hashlib.sha256(b"genesis b").digest())


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def filled(path: Path, blocks: int = 60) -> None:
    with NodeStore.open(path, binding=A) as s:
        for h in range(1, blocks + 1):
            s.put_block(h, hashlib.sha256(b"%d" % h).digest(), os.urandom(3000), b"c" * 100)


@pytest.mark.parametrize("page", [2, 5, 20, 40])
def test_a_damaged_page_is_refused_untouched(tmp_path: Path, page: int) -> None:
    path = tmp_path / "node.sqlite"
    filled(path)
    data = bytearray(path.read_bytes())
    data[(page - 1) * 4096 : (page - 1) * 4096 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    before = files(tmp_path)
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "damaged_store"
    assert "\n" not in str(exc.value)
    assert files(tmp_path) == before


def test_a_schema_name_that_is_not_utf8_is_refused_as_damaged(tmp_path: Path) -> None:
    # a flipped byte in sqlite_schema's name column: SQLite's error message quotes the name, and
    # Python failed decoding the message itself (UnicodeDecodeError, not an sqlite3.Error)
    path = tmp_path / "node.sqlite"
    filled(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    name = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' LIMIT 1").fetchone()[0]
    conn.execute(
        "UPDATE sqlite_schema SET name = CAST(X'74FF' AS TEXT), "
        "sql = CAST(X'435245415445205441424C45207428FF' AS TEXT) WHERE name = ?",
        (name,),
    )
    conn.commit()
    conn.close()
    before = files(tmp_path)
    with pytest.raises(InvalidInput) as exc:
        NodeStore.open(path)
    assert exc.value.reason == "damaged_store"
    assert "not UTF-8" in str(exc.value) and "\n" not in str(exc.value)
    assert files(tmp_path) == before


def test_a_new_store_records_its_binding_and_refuses_another_chain(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with NodeStore.open(path, binding=A) as s:
        assert binding_of(s) == A
        s.put_block(1, b"h", b"b", b"c")
    before = files(tmp_path)
    for other, reason in ((B, "other_community"), (A_REISSUED, "other_genesis")):
        with pytest.raises(InvalidInput) as exc:
            NodeStore.open(path, binding=other)
        assert exc.value.reason == reason
        assert files(tmp_path) == before
    with NodeStore.open(path, binding=A) as s:  # the right chain opens
        assert s.head() is not None
    with NodeStore.open(path) as s:  # and a tool that names no chain may read it
        assert binding_of(s) == A


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_bind_records_once_and_refuses_a_change(tmp_path: Path, kind: str) -> None:
    store: Store = NodeStore.open(tmp_path / "n.sqlite") if kind == "sqlite" else MemoryStore()
    assert binding_of(store) is None  # a store made before bindings existed
    bind(store, A)
    bind(store, A)  # idempotent
    assert binding_of(store) == A
    with pytest.raises(InvalidInput) as exc:
        bind(store, B)
    assert exc.value.reason == "other_community"
    assert binding_of(store) == A
    store.close()


# --------------------------------------------------------------------------- a full disk, for real


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (needs root, as in CI and on the dev box)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_store_for_good_and_tells_its_owner_once(small_disk: Path) -> None:
    path = small_disk / "node.sqlite"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 128 * 1024)  # what the "user" frees afterwards
    failures: list[StoreFailed] = []
    store = NodeStore.open(path, binding=A, on_failure=failures.append)
    acknowledged = 0
    with pytest.raises(StoreFailed) as exc:
        for h in range(1, 10_000):
            store.append_signed(h, 0, 1, os.urandom(2000))
            store.put_block(h, hashlib.sha256(b"%d" % h).digest(), os.urandom(6000), b"c" * 100)
            acknowledged = h
    assert "database or disk is full" in str(exc.value)
    assert exc.value.path == path
    assert failures == [exc.value]
    assert store.failed is exc.value
    # fail-stop: every later call is refused, reads included, without calling the owner again
    with pytest.raises(StoreFailed, match="failed earlier"):
        store.head()
    with pytest.raises(StoreFailed):
        store.append_signed(acknowledged + 1, 0, 1, b"vote")
    assert len(failures) == 1
    assert "failed" in repr(store)
    store.close()  # quiet
    store.close()
    assert acknowledged > 5
    # the file is sound and holds every acknowledged write; with space freed the node goes on
    filler.unlink()
    with NodeStore.open(path, binding=A) as again:
        head = again.head()
        signed = again.last_signed()
        assert head is not None and head.height >= acknowledged
        assert signed is not None and signed.height >= acknowledged
        assert again.integrity_check() == "ok"
