"""Helpers shared by the store tests."""

from __future__ import annotations

from pathlib import Path

from gridnode.store import Durability, MemoryStore, NodeStore, Store


class Opener:
    """Opens the store under test and re-opens it (closing first), as a restarting node would."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "node.sqlite"
        self.current: Store | None = None
        self._memory: MemoryStore | None = None

    def open(self, *, keep_snapshots: int = 2) -> Store:
        if self.current is not None:
            self.current.close()
        store: Store
        if self.kind == "sqlite":
            # NORMAL: same rules, no fsync per commit (durability is the crash test's business)
            store = NodeStore.open(
                self.path, durability=Durability.NORMAL, keep_snapshots=keep_snapshots
            )
        elif self._memory is None:
            store = self._memory = MemoryStore(keep_snapshots=keep_snapshots)
        else:
            store = self._memory.reopen()
        self.current = store
        return store

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
