"""The in-process engine's pruned memory store: a restart recovers exactly as from a full store."""

from __future__ import annotations

import pytest

from gridnode.store import MemoryStore, recover
from sims.prunedstore import PrunedMemoryStore


def _fill(store: MemoryStore, top: int, snapshot_every: int) -> None:
    for h in range(1, top + 1):
        store.put_block(h, bytes([h % 256]) * 32, f"block {h}".encode(), f"commit {h}".encode())
        store.append_wal(h + 1, f"wal {h + 1}".encode())
        store.truncate_wal(h + 1)
        if h % snapshot_every == 0:
            store.put_snapshot(h, f"state {h}".encode())


@pytest.mark.parametrize("top", [1, 199, 200, 201, 999, 1_000, 1_234])
def test_a_pruned_store_recovers_like_a_full_one(top: int) -> None:
    full, pruned = MemoryStore(), PrunedMemoryStore(keep_blocks=400)
    _fill(full, top, 200)
    _fill(pruned, top, 200)
    assert recover(pruned) == recover(full)
    assert pruned.head() == full.head()
    # it kept the last 400 blocks and everything above its latest snapshot, nothing older
    kept = [h for h in range(1, top + 1) if pruned.block(h) is not None]
    snapshot = full.latest_snapshot()
    lowest = min(top - 400, snapshot.height if snapshot else 0) + 1
    assert kept == list(range(max(1, lowest), top + 1))
    assert [b.height for b in pruned.blocks_from(1, 5)] == kept[:5]


def test_without_a_snapshot_nothing_is_pruned() -> None:
    store = PrunedMemoryStore(keep_blocks=2)
    _fill(store, 50, 1_000)
    assert store.block(1) is not None and len(store.blocks_from(1, 100)) == 50
