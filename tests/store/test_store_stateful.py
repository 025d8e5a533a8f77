"""Stateful property test: NodeStore and MemoryStore against a naive in-memory model.

Hypothesis drives random sequences of every write (including ones that must be refused) and
restarts; after each step both stores must give the model's answer (a value, or the refusal's
``reason``) and read back exactly the model's state. The model is written from the rules in the
module docstring, independently of the store's own rule helpers.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gridnode.store import (
    Durability,
    LastSigned,
    MemoryStore,
    NodeStore,
    StateSnapshot,
    Store,
    StoredBlock,
    WalRow,
)
from market.errors import InvalidInput

KEEP = 2
heights = st.integers(min_value=0, max_value=12)
small = st.integers(min_value=0, max_value=3)
tags = st.sampled_from(["a", "b"])


class Model:
    def __init__(self) -> None:
        self.blocks: dict[int, StoredBlock] = {}
        self.snapshots: dict[int, bytes] = {}
        self.wal: list[WalRow] = []
        self.next_seq = 1
        self.floor = 0
        self.last: LastSigned | None = None
        self.meta: dict[str, bytes] = {}

    def put_block(self, b: StoredBlock) -> object:
        old = self.blocks.get(b.height)
        if old is not None:
            if (old.block_hash, old.block) == (b.block_hash, b.block):
                return None
            return "conflicting_block"
        if self.blocks:
            top = max(self.blocks)
            if b.height > top + 1:
                return "height_gap"
            if b.height < top + 1:
                return "below_first_block"
        self.blocks[b.height] = b
        return None

    def put_snapshot(self, height: int, state: bytes) -> object:
        if height in self.snapshots:
            return None if self.snapshots[height] == state else "conflicting_snapshot"
        if height > max(self.blocks, default=0):
            return "snapshot_ahead_of_head"
        if self.snapshots and height < max(self.snapshots):
            return "snapshot_regression"
        self.snapshots[height] = state
        while len(self.snapshots) > KEEP:
            del self.snapshots[min(self.snapshots)]
        return None

    def append_wal(self, height: int, record: bytes) -> object:
        if height < max([self.floor, *(r.height for r in self.wal)]):
            return "wal_regression"
        self.wal.append(WalRow(self.next_seq, height, record))
        self.next_seq += 1
        return self.next_seq - 1

    def truncate_wal(self, below: int) -> object:
        if below > (max(self.blocks) + 1 if self.blocks else 0):
            return "truncate_uncommitted"
        before = len(self.wal)
        self.wal = [r for r in self.wal if r.height >= below]
        self.floor = max(self.floor, below)
        return before - len(self.wal)

    def append_signed(self, new: LastSigned) -> object:
        key = (new.height, new.round, new.step)
        if self.last is not None:
            cur = (self.last.height, self.last.round, self.last.step)
            if key < cur:
                return "last_signed_regression"
            if key == cur:
                return None if self.last.vote == new.vote else "double_sign"
        seq = self.append_wal(new.height, new.vote)
        if seq == "wal_regression":
            return seq
        self.last = new
        return None

    def save_last_signed(self, new: LastSigned) -> object:
        key = (new.height, new.round, new.step)
        if self.last is not None:
            cur = (self.last.height, self.last.round, self.last.step)
            if key < cur:
                return "last_signed_regression"
            if key == cur:
                return None if self.last.vote == new.vote else "double_sign"
        self.last = new
        return None


def outcome(call: Any) -> object:
    try:
        return call()
    except InvalidInput as exc:
        return exc.reason


def block(height: int, tag: str, commit: str) -> StoredBlock:
    body = f"{height}/{tag}".encode()
    return StoredBlock(height, hashlib.sha256(body).digest(), body, commit.encode())


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="gridnode-store-"))
        self.path = self.dir / "n.sqlite"
        self.sqlite = self._open()
        self.memory = MemoryStore(keep_snapshots=KEEP)
        self.model = Model()

    def _open(self) -> NodeStore:
        return NodeStore.open(self.path, durability=Durability.NORMAL, keep_snapshots=KEEP)

    @property
    def stores(self) -> tuple[Store, Store]:
        return (self.sqlite, self.memory)

    def both(self, expected: object, name: str, *args: Any) -> None:
        for s in self.stores:
            got = outcome(lambda s=s: getattr(s, name)(*args))
            assert got == expected, f"{type(s).__name__}.{name}{args!r}: {got!r} != {expected!r}"

    @rule(height=heights, tag=tags, commit=tags)
    def put_block(self, height: int, tag: str, commit: str) -> None:
        b = block(height, tag, commit)
        self.both(self.model.put_block(b), "put_block", b.height, b.block_hash, b.block, b.commit)

    @rule(height=heights, tag=tags)
    def put_snapshot(self, height: int, tag: str) -> None:
        state = f"state {height}/{tag}".encode()
        self.both(self.model.put_snapshot(height, state), "put_snapshot", height, state)

    @rule(height=heights, tag=tags)
    def append_wal(self, height: int, tag: str) -> None:
        record = f"record {height}/{tag}".encode()
        self.both(self.model.append_wal(height, record), "append_wal", height, record)

    @rule(below=heights)
    def truncate_wal(self, below: int) -> None:
        self.both(self.model.truncate_wal(below), "truncate_wal", below)

    @rule(height=heights, round_=small, step=small, tag=tags)
    def save_last_signed(self, height: int, round_: int, step: int, tag: str) -> None:
        new = LastSigned(height, round_, step, f"vote {tag}".encode())
        expected = self.model.save_last_signed(new)
        self.both(expected, "save_last_signed", height, round_, step, new.vote)

    @rule(height=heights, round_=small, step=small, tag=tags)
    def append_signed(self, height: int, round_: int, step: int, tag: str) -> None:
        new = LastSigned(height, round_, step, f"vote {tag}".encode())
        expected = self.model.append_signed(new)
        self.both(expected, "append_signed", height, round_, step, new.vote)

    @rule(tag=tags)
    def sign_again_at_the_last_position(self, tag: str) -> None:
        last = self.model.last
        if last is None:
            return
        new = LastSigned(last.height, last.round, last.step, f"vote {tag}".encode())
        expected = self.model.save_last_signed(new)
        self.both(expected, "save_last_signed", new.height, new.round, new.step, new.vote)

    @rule(key=tags, value=st.binary(max_size=8))
    def set_meta(self, key: str, value: bytes) -> None:
        self.model.meta[key] = value
        self.both(None, "set_meta", key, value)

    @rule()
    def restart(self) -> None:
        self.sqlite.close()
        self.sqlite = self._open()
        self.memory.close()
        self.memory = self.memory.reopen()

    @invariant()
    def reads_match_the_model(self) -> None:
        m = self.model
        blocks = [m.blocks[h] for h in sorted(m.blocks)]
        latest = max(m.snapshots, default=None)
        for s in self.stores:
            assert s.blocks_from(0, 100) == blocks
            assert s.head() == (blocks[-1] if blocks else None)
            for h in range(0, 14):
                assert s.block(h) == m.blocks.get(h)
            assert s.snapshot_heights() == sorted(m.snapshots)
            assert s.latest_snapshot() == (
                None if latest is None else StateSnapshot(latest, m.snapshots[latest])
            )
            assert s.wal_since(0) == m.wal
            assert s.last_signed() == m.last
            for key in ("a", "b"):
                assert s.meta(key) == m.meta.get(key)

    def teardown(self) -> None:
        self.sqlite.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, database=None
)
test_store_against_a_naive_model = StoreMachine.TestCase
