"""A memory store that forgets old blocks: the in-process engine's validators on long runs.

:class:`PrunedMemoryStore` is :class:`~gridnode.store.MemoryStore` (same interface, same rules, the
same conformance) except that it keeps only the blocks a node can still need. Rules:

* A block at height ``h`` is dropped once ``h <= top - keep_blocks`` **and** ``h`` is at or below
  the latest state snapshot: a restarting node replays only the blocks after its latest snapshot
  (:func:`gridnode.store.recover`), so it recovers exactly as from an unpruned store.
* :meth:`blocks_from` and :meth:`block` answer ``None`` / nothing below the kept window. A peer
  that lags more than ``keep_blocks`` heights behind every other store could not catch up by
  block sync from it (no state sync exists); the engine's faults last minutes of simulated time,
  far less than the window (``docs/sims.md``).
* Snapshots, the WAL, last-signed and metadata behave as in :class:`MemoryStore`.

Why: a year of 15-minute slots is ~70,000 blocks per validator; every validator keeping every
block's bytes in RAM was the engine's memory (``docs/benchmarks.md``). The chain itself — every
block, with its commit — still reaches the sample full node as it is decided, which checks and
re-applies it; the engine keeps what it reports from it, not the blocks.
"""

from __future__ import annotations

from gridnode.store import MemoryStore

__all__ = ["PrunedMemoryStore"]


class PrunedMemoryStore(MemoryStore):
    """See the module rules."""

    __slots__ = ("_keep",)

    def __init__(self, *, keep_blocks: int, keep_snapshots: int = 2) -> None:
        if keep_blocks < 1:
            raise ValueError("keep_blocks must be >= 1")
        super().__init__(keep_snapshots=keep_snapshots)
        self._keep = keep_blocks

    def put_block(self, height: int, block_hash: bytes, block: bytes, commit: bytes) -> None:
        super().put_block(height, block_hash, block, commit)
        self._prune()

    def put_snapshot(self, height: int, state: bytes) -> None:
        super().put_snapshot(height, state)
        self._prune()

    def _prune(self) -> None:
        snapshot = self.latest_snapshot()
        if snapshot is None or not self._blocks:
            return
        below = min(self._top - self._keep, snapshot.height) + 1  # keep heights >= below
        while self._first < below and self._first in self._blocks:
            del self._blocks[self._first]
            self._first += 1
