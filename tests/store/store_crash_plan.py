"""The crash test's workload: a fixed sequence of store writes, and the child process that runs it.

The workload imitates a validator: per height ``h`` it logs two consensus records, signs a
prevote (``save_last_signed``) and a precommit (``append_signed``: WAL and last-signed at once),
commits the block, snapshots every :data:`SNAPSHOT_EVERY` heights, truncates the WAL below
``h - 2`` and records its height in the metadata every third height. After the last write of a
height it prints and flushes ``ok height=h``: everything up to there is acknowledged durable.

Run as a script (``python store_crash_plan.py DB [BROKEN [KILL_AFTER_S]]``) it opens the store,
recovers, redoes the ops of the head's height that may not have happened (skipping the ones that
did) and carries on forever, until it is killed (by the test, or by its own thread after
``KILL_AFTER_S`` seconds). The test drives a :class:`~gridnode.store.MemoryStore` through the same
ops as the reference for what the file may contain after a kill.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from anywhere: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gridnode.store import NodeStore, Store, StoredBlock

SNAPSHOT_EVERY = 5
KEEP_SNAPSHOTS = 2
PREVOTE, PRECOMMIT = 1, 2


def _bytes(label: str, height: int, size: int) -> bytes:
    return hashlib.shake_256(f"{label}/{height}".encode()).digest(size)


def block_size(height: int) -> int:
    """1 B .. 16 KiB, spread so blocks straddle SQLite pages and overflow chains."""
    return 1 + int.from_bytes(hashlib.sha256(b"size%d" % height).digest()[:2], "big") % 16384


@functools.cache
def expected_block(height: int) -> StoredBlock:
    block = _bytes("block", height, block_size(height))
    return StoredBlock(
        height=height,
        block_hash=hashlib.sha256(block).digest(),
        block=block,
        commit=_bytes("commit", height, 96),
    )


@dataclass(frozen=True, slots=True)
class Op:
    kind: str
    height: int
    payload: bytes = b""
    round: int = 0
    step: int = 0


def ops_for_height(h: int) -> list[Op]:
    ops = [
        Op("wal", h, _bytes("proposal", h, 200)),
        Op("wal", h, _bytes("prevotes", h, 3000)),
        Op("sign", h, _bytes("prevote", h, 100), round=0, step=PREVOTE),
        Op("wal+sign", h, _bytes("precommit", h, 100), round=0, step=PRECOMMIT),
        Op("block", h),
    ]
    if h % SNAPSHOT_EVERY == 0:
        ops.append(Op("snapshot", h, _bytes("state", h, 5000 + h)))
    if h > 2:
        ops.append(Op("truncate", h - 2))
    if h % 3 == 0:
        ops.append(Op("meta", h, str(h).encode()))
    return ops


def ops_through(height: int) -> int:
    """How many ops heights ``1..height`` comprise."""
    return sum(len(ops_for_height(h)) for h in range(1, height + 1))


def apply(store: Store, op: Op) -> None:
    if op.kind == "wal":
        store.append_wal(op.height, op.payload)
    elif op.kind == "sign":
        store.save_last_signed(op.height, op.round, op.step, op.payload)
    elif op.kind == "wal+sign":
        store.append_signed(op.height, op.round, op.step, op.payload)
    elif op.kind == "block":
        b = expected_block(op.height)
        store.put_block(b.height, b.block_hash, b.block, b.commit)
    elif op.kind == "snapshot":
        store.put_snapshot(op.height, op.payload)
    elif op.kind == "truncate":
        store.truncate_wal(op.height)
    elif op.kind == "meta":
        store.set_meta("height", op.payload)
    else:
        raise AssertionError(op.kind)


def redo(store: Store, op: Op) -> None:
    """Apply ``op`` unless it already happened (what a recovering node does)."""
    if op.kind == "wal":
        if any(r.record == op.payload for r in store.wal_since(op.height)):
            return
    elif op.kind in ("sign", "wal+sign"):
        last = store.last_signed()
        if last is not None and last.key >= (op.height, op.round, op.step):
            return
    apply(store, op)


def _torn_block(store: NodeStore, op: Op) -> None:
    """Negative control: a block written in two autocommit statements, half of it first."""
    b = expected_block(op.height)
    if store.block(op.height) == b:
        return
    conn = store._c()  # a deliberately broken writer
    conn.execute(
        "INSERT OR REPLACE INTO blocks (height, hash, block, commit_bytes) VALUES (?, ?, ?, ?)",
        (b.height, b.block_hash, b.block[: len(b.block) // 2] or b"x", b.commit),
    )
    conn.execute("UPDATE blocks SET block = ? WHERE height = ?", (b.block, b.height))


def run_child(path: str, broken: str) -> None:
    """``broken``: ``""`` (the real workload), ``"ack-early"`` or ``"torn-block"`` (bugs)."""
    store = NodeStore.open(path, keep_snapshots=KEEP_SNAPSHOTS)
    head = store.head()
    h = head.height if head is not None else 1
    while True:
        ops = ops_for_height(h)
        if broken == "ack-early":  # acknowledges the height before its block is written
            print(f"ok height={h}", flush=True)
        for op in ops:
            if broken == "torn-block" and op.kind == "block":
                _torn_block(store, op)
            else:
                redo(store, op)
        if broken != "ack-early":
            print(f"ok height={h}", flush=True)
        h += 1


def _kill_self_after(seconds: float) -> None:
    """SIGKILL this process from a thread after ``seconds``: the main thread is then usually inside
    SQLite (which runs without the GIL), so the kill lands mid-write however busy the machine is."""

    def killer() -> None:
        time.sleep(seconds)  # picks the kill point; nothing waits on it
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3]:
        _kill_self_after(float(sys.argv[3]))
    run_child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
