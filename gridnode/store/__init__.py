"""The node's persistence: one SQLite file per node (:class:`NodeStore`, :mod:`.sqlite`), and an
in-memory twin (:class:`MemoryStore`, :mod:`.memory`) with the same interface and the same rules, for
the deterministic simulation. The rules are checked once (:mod:`.rules`) for both; the records and
the :class:`Store` interface are in :mod:`.records`; :func:`recover` and the store's binding to a
chain in :mod:`.recovery`.

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
* **Metadata**: a small ``str -> bytes`` table. One entry is the store's **binding**
  (:class:`StoreBinding`: community id and genesis hash), written when a node creates its store and
  checked every time it opens it (:func:`bind`, :func:`check_binding`): a store never serves
  another community's or another genesis' chain.
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

Files (:mod:`.sqlite`): created atomically (a complete store or no file), checked on every open
(ours, schema version, SQLite's ``quick_check``, the binding) and refused with a typed reason
otherwise, without being modified; an SQLite error after open fails the store for good
(:class:`StoreFailed`, fail-stop). Opened in SQLite's exclusive locking mode: a second process (a
second daemon on the same data directory, which could double-sign) gets a
:class:`~market.errors.UsageError`.

Recovery contract (what a node does on restart, :func:`recover` gathers it in one call):

1. ``head()`` — the last committed block; the node is at height ``head.height + 1``.
2. ``latest_snapshot()`` — the newest state snapshot ``S`` (``S.height <= head.height``).
3. ``blocks_from(S.height + 1, …)`` up to the head — applied to ``S`` to rebuild the ledger state
   (all blocks from the first one if there is no snapshot).
4. ``wal_since(head.height + 1)`` — the consensus records of the height in progress, replayed into
   the consensus core in sequence order (rows of committed heights are ignored).
5. ``last_signed()`` — the consensus core never signs at or below this ``(height, round, step)``
   with a different vote.
"""

from __future__ import annotations

from gridnode.store.memory import MemoryStore
from gridnode.store.records import (
    APPLICATION_ID,
    Durability,
    LastSigned,
    Recovery,
    StateSnapshot,
    Store,
    StoreBinding,
    StoredBlock,
    StoreFailed,
    WalRow,
)
from gridnode.store.recovery import bind, binding_of, check_binding, recover
from gridnode.store.sqlite import MIGRATIONS, SCHEMA_VERSION, NodeStore

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Durability",
    "LastSigned",
    "MemoryStore",
    "NodeStore",
    "Recovery",
    "StateSnapshot",
    "Store",
    "StoreBinding",
    "StoreFailed",
    "StoredBlock",
    "WalRow",
    "bind",
    "binding_of",
    "check_binding",
    "recover",
]
