"""One node's runtime: store + ledger application + consensus core, driven by any transport and clock.

This is the glue every driver shares (the daemon over libp2p, simulations in process). It has no
sockets and no clock of its own: the driver calls :meth:`NodeRuntime.start`, :meth:`on_message`,
:meth:`on_timer` and :meth:`submit` with ``now`` (unix ms of the node's clock) and provides an
:class:`Outbox` that carries bytes to other nodes and sets timers.

Rules of this module:

* **Boot** follows the store's recovery contract (:func:`gridnode.store.recover`): the ledger state is
  the latest snapshot plus the blocks after it (or the genesis state plus every block); a validator's
  consensus core is restored from its WAL and last-signed record, so it never signs twice.
* **Effects are carried out in the order the core emitted them**: a ``Persist`` is written (durably)
  before any later message leaves; a ``Decided`` block is stored with its commit *before* it is
  applied, then the WAL below the next height is truncated, and every ``snapshot_every`` blocks the
  state is snapshotted. A block that breaks a ledger rule despite a valid commit (impossible with
  < 1/3 Byzantine validators) stops the node with :class:`LedgerHalted`: continuing would fork.
* **Peers' bytes are never trusted**: an undecodable consensus message counts as misbehaviour of its
  sender (:attr:`misbehaviour`) and is dropped; nothing a peer sends can raise out of
  :meth:`on_message`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gridnode.core.app import LedgerApp
from gridnode.core.consensus import (
    Broadcast,
    Consensus,
    ConsensusConfig,
    Decided,
    Effect,
    EvidenceFound,
    FullNode,
    Persist,
    Send,
    SetTimer,
    SignedRecord,
    TimerKind,
    WalRecord,
    decode_wal_record,
    encode_wal_record,
)
from gridnode.core.consensus_messages import (
    SyncedBlock,
    ValidatorSet,
    decode_commit,
    decode_message,
    encode_commit,
    encode_message,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Block, Genesis, LedgerState, Tx, decode_state, genesis_state
from gridnode.core.mempool import AddResult
from gridnode.store import Store, recover
from market.errors import GridnodeError, InvalidInput

__all__ = ["LedgerHalted", "NodeRuntime", "Outbox"]


class LedgerHalted(GridnodeError):
    """A committed block broke a ledger rule: the node stops rather than fork."""


class Outbox(Protocol):
    """What the driver does for the node."""

    def broadcast(self, data: bytes) -> None:
        """Send consensus bytes to every other validator."""

    def send(self, to: str, data: bytes) -> None:
        """Send consensus bytes to one node, named by its public key hex."""

    def set_timer(self, at_ms: int, kind: TimerKind, height: int, round_: int) -> None:
        """Call :meth:`NodeRuntime.on_timer` with these arguments at ``at_ms`` (node clock)."""


class _StoreBlocks:
    def __init__(self, store: Store) -> None:
        self._store = store

    def committed(self, height: int) -> SyncedBlock | None:
        sb = self._store.block(height)
        if sb is None:
            return None
        return SyncedBlock(sb.height, sb.block, decode_commit(sb.commit))


@dataclass(frozen=True, slots=True)
class Committed:
    """Handed to ``on_commit`` listeners after a block is stored and applied."""

    height: int
    block_hash: bytes
    state: LedgerState
    block: Block  # the block, decoded (listeners need not decode the stored bytes again)


class NodeRuntime:
    """See the module rules."""

    def __init__(
        self,
        *,
        genesis: Genesis,
        key: KeyPair,
        store: Store,
        outbox: Outbox,
        validator: bool,
        config: ConsensusConfig | None = None,
        snapshot_every: int = 100,
        sync_peers: Sequence[str] | None = None,
        max_block_txs: int = 2_000,
        verified: set[bytes] | None = None,
        shared_blocks: dict[tuple[bytes, bytes], tuple[Block, LedgerState]] | None = None,
        verified_votes: set[tuple[int, str, bytes, bytes]] | None = None,
    ) -> None:
        self.genesis = genesis
        self.key = key
        self.store = store
        self.outbox = outbox
        self.snapshot_every = snapshot_every
        self.validators = ValidatorSet(
            tuple(bytes.fromhex(v) for v in genesis.validators), verified=verified_votes
        )
        self.misbehaviour: dict[str, dict[str, int]] = {}
        self.evidence = 0
        self.listeners: list[Callable[[Committed], None]] = []
        self.last_heard_ms: dict[str, int] = {}
        rec = recover(store)
        state = genesis_state(genesis)
        if rec.snapshot is not None:
            state = decode_state(rec.snapshot.state, genesis)
        self.app = LedgerApp(
            genesis,
            proposer=key.public_hex,
            state=state,
            max_block_txs=max_block_txs,
            verified=verified,
            shared_blocks=shared_blocks,
        )
        for sb in rec.blocks:
            self.app.apply(sb.height, sb.block)
        height = rec.head.height + 1 if rec.head is not None else 1
        blocks = _StoreBlocks(store)
        self.is_validator = validator and key.public_hex in genesis.validators
        self.core: Consensus | FullNode
        if self.is_validator:
            wal: list[WalRecord] = [decode_wal_record(w.record) for w in rec.wal]
            if rec.last_signed is not None:
                wal.append(decode_wal_record(rec.last_signed.vote))
            self.core = Consensus.recover(
                validators=self.validators,
                key=key,
                app=self.app,
                blocks=blocks,
                height=height,
                wal=wal,
                config=config,
            )
        else:
            peers = list(sync_peers) if sync_peers else list(genesis.validators)
            self.core = FullNode(
                validators=self.validators, peers=peers, blocks=blocks, height=height, config=config
            )

    # ------------------------------------------------------------------ inputs
    @property
    def state(self) -> LedgerState:
        return self.app.state

    def start(self, now: int) -> None:
        self._run(self.core.start(now))

    def on_timer(self, kind: TimerKind, height: int, round_: int, now: int) -> None:
        self._run(self.core.on_timer(kind, height, round_, now))

    def on_message(self, sender: str, data: bytes, now: int) -> None:
        try:
            msg = decode_message(data)
        except InvalidInput as exc:
            self.count(sender, exc.reason)
            return
        self.last_heard_ms[sender] = now
        self._run(self.core.on_message(sender, msg, now))

    def submit(self, tx: Tx, now: int) -> AddResult:
        """Offer a transaction to this node's mempool."""
        return self.app.submit(tx, now_ms=now)

    def count(self, peer: str, reason: str) -> None:
        by = self.misbehaviour.setdefault(peer, {})
        by[reason] = by.get(reason, 0) + 1

    # ------------------------------------------------------------------ effects
    def _run(self, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Persist):
                self._persist(eff.record)
            elif isinstance(eff, Broadcast):
                self.outbox.broadcast(encode_message(eff.message))
            elif isinstance(eff, Send):
                self.outbox.send(eff.to, encode_message(eff.message))
            elif isinstance(eff, SetTimer):
                self.outbox.set_timer(eff.at, eff.kind, eff.height, eff.round)
            elif isinstance(eff, Decided):
                self._decided(eff)
            elif isinstance(eff, EvidenceFound):
                self.evidence += 1

    def _persist(self, record: WalRecord) -> None:
        data = encode_wal_record(record)
        if isinstance(record, SignedRecord):  # WAL + last-signed in one durable transaction
            self.store.append_signed(record.height, record.round, int(record.step), data)
        else:
            self.store.append_wal(record.height, data)

    def _decided(self, eff: Decided) -> None:
        block_hash = eff.commit.block_hash
        self.store.put_block(eff.height, block_hash, eff.block, encode_commit(eff.commit))
        try:
            state = self.app.apply(eff.height, eff.block)
        except InvalidInput as exc:
            raise LedgerHalted(f"committed block {eff.height} breaks a ledger rule: {exc}") from exc
        self.store.truncate_wal(eff.height + 1)
        if self.snapshot_every and eff.height % self.snapshot_every == 0:
            self.store.put_snapshot(eff.height, state.encode())
        assert self.app.last_applied is not None  # set by apply()
        event = Committed(eff.height, block_hash, state, self.app.last_applied)
        for listener in self.listeners:
            listener(event)
