"""Conformance: every rule of gridnode.store, run against NodeStore (SQLite) and MemoryStore alike.

Each test also re-opens the store where it matters, so what is checked is what a restarted node
would read back, not just what a live object remembers.
"""

from __future__ import annotations

import hashlib

import pytest
from store_helpers import Opener

from gridnode.store import LastSigned, Recovery, StateSnapshot, Store, StoredBlock, WalRow, recover
from market.errors import InvalidInput, Reason, StoreReason, UsageError, WireReason
from tests.refusals import refused


def blk(height: int, tag: str = "") -> StoredBlock:
    body = f"block {height}{tag}".encode()
    return StoredBlock(height, hashlib.sha256(body).digest(), body, f"commit {height}".encode())


def put(store: Store, b: StoredBlock) -> None:
    store.put_block(b.height, b.block_hash, b.block, b.commit)


def chain(store: Store, first: int, last: int) -> list[StoredBlock]:
    blocks = [blk(h) for h in range(first, last + 1)]
    for b in blocks:
        put(store, b)
    return blocks


def reason(exc: pytest.ExceptionInfo[InvalidInput]) -> str:
    return exc.value.reason


# --- empty store -----------------------------------------------------------------------------


def test_an_empty_store_reads_as_empty(store: Store) -> None:
    assert store.head() is None
    assert store.block(0) is None
    assert store.blocks_from(0, 10) == []
    assert store.latest_snapshot() is None
    assert store.snapshot_heights() == []
    assert store.wal_since(0) == []
    assert store.last_signed() is None
    assert store.meta("node") is None
    assert recover(store) == Recovery(None, None, (), (), None)


# --- blocks ----------------------------------------------------------------------------------


def test_blocks_read_back_after_reopen(opener: Opener) -> None:
    blocks = chain(opener.open(), 1, 5)
    store = opener.open()
    assert store.head() == blocks[-1]
    assert [store.block(h) for h in range(1, 6)] == blocks
    assert store.block(0) is None
    assert store.block(6) is None


@pytest.mark.parametrize("first", [0, 1, 7])
def test_the_first_block_may_have_any_height_then_heights_are_contiguous(
    store: Store, first: int
) -> None:
    chain(store, first, first + 2)
    with pytest.raises(InvalidInput) as gap:
        put(store, blk(first + 4))
    assert reason(gap) == "height_gap"
    assert gap.value.expected == str(first + 3)
    if first > 0:
        with pytest.raises(InvalidInput) as below:
            put(store, blk(first - 1))
        assert reason(below) == "below_first_block"
    head = store.head()
    assert head is not None
    assert head.height == first + 2


def test_put_block_is_idempotent_and_keeps_the_first_commit(opener: Opener) -> None:
    store = opener.open()
    b = blk(1)
    put(store, b)
    put(store, b)
    store.put_block(1, b.block_hash, b.block, b"another valid commit")
    store = opener.open()
    assert store.blocks_from(0, 10) == [b]


def test_a_different_block_at_a_committed_height_is_refused(opener: Opener) -> None:
    store = opener.open()
    chain(store, 1, 3)
    other = blk(2, "fork")
    with pytest.raises(InvalidInput) as exc:
        put(store, other)
    assert reason(exc) == "conflicting_block"
    assert exc.value.field == "block_hash"
    # same hash, other bytes: also refused (a hash collision or a caller bug)
    with pytest.raises(InvalidInput) as same_hash:
        store.put_block(2, blk(2).block_hash, b"tampered", b"c")
    assert reason(same_hash) == "conflicting_block"
    assert same_hash.value.field == "block"
    store = opener.open()
    assert store.block(2) == blk(2)


def test_blocks_from_pages_in_height_order(store: Store) -> None:
    blocks = chain(store, 3, 12)
    assert store.blocks_from(0, 100) == blocks
    assert store.blocks_from(5, 3) == blocks[2:5]
    assert store.blocks_from(12, 5) == blocks[-1:]
    assert store.blocks_from(13, 5) == []
    assert store.blocks_from(3, 0) == []


@pytest.mark.parametrize(
    ("height", "block_hash", "block", "commit", "why", "field"),
    [
        (-1, b"h", b"b", b"c", "out_of_range", "height"),
        (2**63, b"h", b"b", b"c", "out_of_range", "height"),
        (True, b"h", b"b", b"c", "bad_type", "height"),
        ("1", b"h", b"b", b"c", "bad_type", "height"),
        (1, "h", b"b", b"c", "bad_type", "block_hash"),
        (1, b"", b"b", b"c", "empty", "block_hash"),
        (1, b"h", bytearray(b"b"), b"c", "bad_type", "block"),
        (1, b"h", b"b", b"", "empty", "commit"),
    ],
)
def test_put_block_checks_its_arguments(
    store: Store,
    height: object,
    block_hash: object,
    block: object,
    commit: object,
    why: str,
    field: str,
) -> None:
    with pytest.raises(InvalidInput) as exc:
        store.put_block(height, block_hash, block, commit)  # type: ignore[arg-type]
    assert (exc.value.reason, exc.value.field) == (why, field)
    assert store.head() is None


def test_reads_check_their_arguments(store: Store) -> None:
    with refused(WireReason.OUT_OF_RANGE):
        store.block(-1)
    with refused(WireReason.OUT_OF_RANGE):
        store.blocks_from(0, -1)
    with refused(WireReason.OUT_OF_RANGE):
        store.wal_since(-1)


# --- snapshots -------------------------------------------------------------------------------


def test_snapshots_need_the_block_and_never_go_back(opener: Opener) -> None:
    store = opener.open()
    store.put_snapshot(0, b"genesis state")  # allowed before any block
    chain(store, 1, 10)
    with pytest.raises(InvalidInput) as ahead:
        store.put_snapshot(11, b"s11")
    assert reason(ahead) == "snapshot_ahead_of_head"
    store.put_snapshot(5, b"s5")
    store.put_snapshot(5, b"s5")  # idempotent
    with pytest.raises(InvalidInput) as conflict:
        store.put_snapshot(5, b"other")
    assert reason(conflict) == "conflicting_snapshot"
    with pytest.raises(InvalidInput) as older:
        store.put_snapshot(3, b"s3")
    assert reason(older) == "snapshot_regression"
    store = opener.open()
    assert store.latest_snapshot() == StateSnapshot(5, b"s5")


def test_a_snapshot_on_an_empty_store_is_only_the_genesis_state(store: Store) -> None:
    with pytest.raises(InvalidInput) as exc:
        store.put_snapshot(1, b"s")
    assert reason(exc) == "snapshot_ahead_of_head"


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_old_snapshots_are_pruned(opener: Opener, keep: int) -> None:
    store = opener.open(keep_snapshots=keep)
    chain(store, 1, 30)
    for h in range(5, 31, 5):
        store.put_snapshot(h, f"state {h}".encode())
        expected = list(range(5, h + 1, 5))[-keep:]
        assert store.snapshot_heights() == expected
    store = opener.open(keep_snapshots=keep)
    assert store.snapshot_heights() == list(range(5, 31, 5))[-keep:]
    assert store.latest_snapshot() == StateSnapshot(30, b"state 30")


def test_keep_snapshots_must_be_positive(opener: Opener) -> None:
    with pytest.raises(UsageError):
        opener.open(keep_snapshots=0)


# --- consensus WAL ---------------------------------------------------------------------------


def test_wal_appends_in_sequence_and_filters_by_height(opener: Opener) -> None:
    store = opener.open()
    seqs = [store.append_wal(h, f"r{h}.{i}".encode()) for h in (1, 1, 2, 4) for i in (0,)]
    assert seqs == [1, 2, 3, 4]
    store = opener.open()
    assert store.wal_since(2) == [WalRow(3, 2, b"r2.0"), WalRow(4, 4, b"r4.0")]
    assert [r.seq for r in store.wal_since(0)] == [1, 2, 3, 4]
    assert store.wal_since(5) == []


def test_wal_heights_never_go_down(store: Store) -> None:
    store.append_wal(3, b"a")
    with pytest.raises(InvalidInput) as exc:
        store.append_wal(2, b"b")
    assert reason(exc) == "wal_regression"
    store.append_wal(3, b"again")  # same height is fine


def test_truncating_the_wal_drops_committed_heights_only(opener: Opener) -> None:
    store = opener.open()
    chain(store, 1, 3)
    for h in (1, 2, 3, 4):
        store.append_wal(h, f"r{h}".encode())
    with pytest.raises(InvalidInput) as exc:
        store.truncate_wal(5)  # height 4 is not committed
    assert reason(exc) == "truncate_uncommitted"
    assert store.truncate_wal(3) == 2
    assert store.truncate_wal(3) == 0
    store = opener.open()
    assert [r.height for r in store.wal_since(0)] == [3, 4]
    # sequence numbers are never reused, and nothing below the truncation point comes back
    assert store.append_wal(4, b"next") == 5


def test_the_wal_floor_survives_an_empty_wal(opener: Opener) -> None:
    store = opener.open()
    chain(store, 1, 5)
    store.append_wal(2, b"r")
    assert store.truncate_wal(6) == 1
    store = opener.open()
    with pytest.raises(InvalidInput) as exc:
        store.append_wal(5, b"late")
    assert reason(exc) == "wal_regression"
    assert store.append_wal(6, b"ok") == 2


def test_truncate_on_an_empty_store(store: Store) -> None:
    assert store.truncate_wal(0) == 0
    with refused(StoreReason.TRUNCATE_UNCOMMITTED):
        store.truncate_wal(1)


# --- last signed -----------------------------------------------------------------------------


def test_last_signed_moves_forward_only(opener: Opener) -> None:
    store = opener.open()
    store.save_last_signed(1, 0, 1, b"prevote 1/0")
    store.save_last_signed(1, 0, 2, b"precommit 1/0")
    store.save_last_signed(1, 1, 1, b"prevote 1/1")
    store.save_last_signed(2, 0, 0, b"proposal 2/0")
    store = opener.open()
    assert store.last_signed() == LastSigned(2, 0, 0, b"proposal 2/0")
    for key, why in [
        ((1, 9, 9), StoreReason.LAST_SIGNED_REGRESSION),
        ((2, 0, 0), StoreReason.DOUBLE_SIGN),
    ]:
        with refused(why):
            store.save_last_signed(*key, b"other")
    assert store.last_signed() == LastSigned(2, 0, 0, b"proposal 2/0")


def test_the_same_vote_again_is_a_retry_and_another_is_a_double_sign(opener: Opener) -> None:
    store = opener.open()
    store.save_last_signed(5, 2, 1, b"vote A")
    store.save_last_signed(5, 2, 1, b"vote A")
    with pytest.raises(InvalidInput) as exc:
        store.save_last_signed(5, 2, 1, b"vote B")
    assert reason(exc) == "double_sign"
    store = opener.open()
    with pytest.raises(InvalidInput) as after_restart:
        store.save_last_signed(5, 2, 1, b"vote B")
    assert reason(after_restart) == "double_sign"


@pytest.mark.parametrize("older", [(4, 9, 9), (5, 1, 9), (5, 2, 0)])
def test_an_older_position_is_a_regression(store: Store, older: tuple[int, int, int]) -> None:
    store.save_last_signed(5, 2, 1, b"v")
    with pytest.raises(InvalidInput) as exc:
        store.save_last_signed(*older, b"v")
    assert reason(exc) == "last_signed_regression"


def test_last_signed_checks_its_arguments(store: Store) -> None:
    with refused(WireReason.OUT_OF_RANGE):
        store.save_last_signed(1, -1, 0, b"v")
    with refused(StoreReason.EMPTY):
        store.save_last_signed(1, 0, 0, b"")
    assert store.last_signed() is None


def test_append_signed_logs_and_guards_in_one_step(opener: Opener) -> None:
    store = opener.open()
    store.append_wal(3, b"proposal")
    store.append_signed(3, 0, 1, b"prevote")
    store.append_signed(3, 0, 1, b"prevote")  # retry: neither table changes
    store = opener.open()
    assert store.last_signed() == LastSigned(3, 0, 1, b"prevote")
    assert store.wal_since(0) == [WalRow(1, 3, b"proposal"), WalRow(2, 3, b"prevote")]
    with pytest.raises(InvalidInput) as double:
        store.append_signed(3, 0, 1, b"other prevote")
    assert reason(double) == "double_sign"
    with pytest.raises(InvalidInput) as older:
        store.append_signed(2, 5, 2, b"old")
    assert reason(older) == "last_signed_regression"
    assert len(store.wal_since(0)) == 2


def test_append_signed_refuses_a_wal_regression_without_signing(store: Store) -> None:
    store.append_wal(7, b"r")
    with pytest.raises(InvalidInput) as exc:
        store.append_signed(6, 0, 1, b"v")
    assert reason(exc) == "wal_regression"
    assert store.last_signed() is None
    assert len(store.wal_since(0)) == 1


# --- meta ------------------------------------------------------------------------------------


def test_meta_sets_overwrites_and_persists(opener: Opener) -> None:
    store = opener.open()
    store.set_meta("genesis", b"\x01\x02")
    store.set_meta("genesis", b"\x03")
    store.set_meta("empty", b"")
    store = opener.open()
    assert store.meta("genesis") == b"\x03"
    assert store.meta("empty") == b""
    assert store.meta("missing") is None


@pytest.mark.parametrize(
    ("key", "why"),
    [("", StoreReason.BAD_LENGTH), ("k" * 201, StoreReason.BAD_LENGTH), (3, WireReason.BAD_TYPE)],
)
def test_meta_keys_are_short_strings(store: Store, key: object, why: Reason) -> None:
    with refused(why):
        store.set_meta(key, b"v")  # type: ignore[arg-type]


def test_meta_values_are_bytes(store: Store) -> None:
    with refused(WireReason.BAD_TYPE):
        store.set_meta("k", "text")  # type: ignore[arg-type]


# --- lifecycle and recovery ------------------------------------------------------------------


def test_a_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    with pytest.raises(UsageError):
        store.head()
    with pytest.raises(UsageError):
        put(store, blk(1))
    store.close()  # idempotent


def test_recover_gathers_the_restart_contract(opener: Opener) -> None:
    store = opener.open()
    blocks = chain(store, 1, 12)
    store.put_snapshot(5, b"s5")
    store.put_snapshot(10, b"s10")
    for h in (11, 12, 13, 13):
        store.append_wal(h, f"r{h}".encode())
    store.save_last_signed(13, 0, 1, b"prevote 13")
    rec = recover(opener.open())
    assert rec.head == blocks[-1]
    assert rec.snapshot == StateSnapshot(10, b"s10")
    assert rec.blocks == tuple(blocks[10:])
    assert rec.wal == (WalRow(3, 13, b"r13"), WalRow(4, 13, b"r13"))
    assert rec.last_signed == LastSigned(13, 0, 1, b"prevote 13")


def test_recover_without_a_snapshot_returns_every_block(store: Store) -> None:
    blocks = chain(store, 0, 2500)
    rec = recover(store)
    assert rec.blocks == tuple(blocks)
    assert rec.snapshot is None
