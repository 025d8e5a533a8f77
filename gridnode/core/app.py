"""The ledger as a consensus application: mempool in, blocks out, committed blocks applied.

Rules of this module:

* :class:`LedgerApp` implements the consensus :class:`~gridnode.core.consensus.Application`
  protocol over :mod:`gridnode.core.ledger`. Block bytes are :meth:`Block.encode`; block time is the
  proposer's clock in unix milliseconds (consensus ``now``).
* :meth:`LedgerApp.submit` admits a transaction to the mempool only if it would be admitted on top of
  the current committed state at the latest clock reading the app has seen (signature, membership,
  nonce, open slot, delivered slot, …); the reason otherwise.
  After every committed block the mempool drops what the block carried and re-checks the rest.
* :meth:`LedgerApp.make_block` takes the mempool's deterministic batch (ordered by nonce, then id, so a
  household's transactions stay in nonce order), keeps its admissible part and builds the block with
  its state root. :meth:`LedgerApp.block_error` re-runs every rule (:func:`ledger.check`) and says
  which one a block breaks (the typed reason of the :class:`~market.errors.InvalidInput`). The clock
  rule (block time within ``max_drift_ms`` of the validator's clock) is judged only when consensus
  passes ``now``, i.e. for a fresh proposal; a value carrying a proof-of-lock is judged without it
  (Tendermint's rule, see :mod:`gridnode.core.consensus` and ``docs/consensus.md``). Monotonic time
  (later than the previous block) is always checked. States computed while proposing or validating
  are cached by block hash, so a committed block is not re-applied from scratch.
* :meth:`LedgerApp.snapshot` / :meth:`LedgerApp.restore` are the state's canonical bytes and back
  (what the node executor stores every ``snapshot_every`` blocks and boots from).
* :meth:`LedgerApp.apply` applies a committed block and raises :class:`~market.errors.InvalidInput` if it
  breaks a rule (which a commit of > 2/3 honest validators never does). A committed block's
  transaction signatures are taken as checked: more than 2/3 of the validators signed the commit,
  so at least one honest validator verified each of them before voting (a full node, a node
  syncing or replaying its store verifies the commit's signatures and re-runs every other rule,
  not one Ed25519 check per transaction); ``verified`` then also holds those ids.
"""

from __future__ import annotations

import operator
from typing import Final

from gridnode.core.consensus import Backlog
from gridnode.core.consensus_messages import block_hash
from gridnode.core.ledger import (
    Block,
    Genesis,
    LedgerState,
    SignedBundle,
    SignedCancel,
    SignedOrder,
    Tx,
    admission_error,
    build_block,
    check,
    decode_block,
    decode_state,
    genesis_state,
    read_by_every_member,
    tx_id,
)
from gridnode.core.mempool import AddResult, Mempool
from market.errors import InvalidInput

__all__ = ["LedgerApp"]

_CACHE_LIMIT: Final = 64
_ADMISSION_LIMIT: Final = 200_000  # a shared admission cache is emptied when it reaches this
_UNKNOWN: Final = object()  # not in the shared admission cache


def _wrong_height(height: int, found: int) -> InvalidInput:
    return InvalidInput(reason="wrong_height", subject=f"block {height}", found=str(found))


def _size(tx: Tx) -> int:
    return len(tx.raw)  # tx.encode() is tx.raw


def _nonce_key(tx: Tx) -> tuple[int, ...]:
    if isinstance(tx, SignedOrder):
        return (tx.order.nonce,)
    if isinstance(tx, SignedCancel):
        return (tx.nonce,)
    if isinstance(tx, SignedBundle) and tx.orders:
        return (tx.orders[0].nonce,)
    return (0,)


class LedgerApp:
    """One node's ledger: committed state, mempool, and the consensus application hooks."""

    def __init__(
        self,
        genesis: Genesis,
        *,
        proposer: str = "",
        max_block_txs: int = 2_000,
        max_block_bytes: int = 2 * 1024 * 1024,
        state: LedgerState | None = None,
        verified: set[bytes] | None = None,
        shared_blocks: dict[tuple[bytes, bytes], tuple[Block, LedgerState]] | None = None,
        shared_admission: dict[tuple[int, bytes, bytes, int], str | None] | None = None,
        mempool_capacity: int = 100_000,
    ) -> None:
        self.genesis = genesis
        self.state = state if state is not None else genesis_state(genesis)
        self.proposer = proposer
        self._max_txs = max_block_txs
        self._max_bytes = max_block_bytes
        self._after: dict[bytes, tuple[Block, LedgerState]] = {}
        self._now_ms = self.state.time_ms  # the latest clock reading we were given
        #: ids of transactions whose signature this node already verified (each is checked once);
        #: a simulation may share one set among the nodes it runs in one process
        self.verified: set[bytes] = set() if verified is None else verified
        self.last_applied: Block | None = None  # the block the last apply() applied, decoded
        self._due: tuple[LedgerState | None, int | None] = (None, None)  # backlog()'s, per state
        #: (head hash, block hash) -> the checked block and the state after it. Only a simulation
        #: that runs many nodes in one process shares one: the same block on the same head always
        #: yields the same state, so one node's check serves all (per-node CPU is not modelled).
        self._shared = shared_blocks
        #: (height, head hash, tx id, clock second) -> the admission check's answer. Only a
        #: simulation running many nodes in one process shares one: admission is a function of the
        #: committed state, the transaction and the clock's second alone, so one node's answer
        #: serves every node on the same state in the same second (per-node CPU is not modelled).
        self._shared_admission = shared_admission
        self.mempool: Mempool[Tx] = Mempool(
            tx_id=operator.attrgetter("id"),  # tx.id, read in C: no Python frame per call
            check=self._check_tx,
            size=_size,
            sort_key=_nonce_key,
            capacity=mempool_capacity,
        )

    # ------------------------------------------------------------------ mempool
    def _check_tx(self, tx: Tx) -> str | None:
        state = self.state
        time_ms = max(state.time_ms + 1, self._now_ms)
        shared = self._shared_admission
        if shared is not None:
            key = (state.height, state.head_hash, tx.id, time_ms // 1000)
            answer = shared.get(key, _UNKNOWN)
            if answer is not _UNKNOWN:
                return answer  # type: ignore[return-value]
        error = admission_error(state, tx, time_ms=time_ms, verified=self.verified)
        reason = None if error is None else error.reason
        if shared is not None:
            if len(shared) >= _ADMISSION_LIMIT:
                shared.clear()
            shared[key] = reason
        return reason

    def submit(self, tx: Tx, *, now_ms: int | None = None) -> AddResult:
        """Offer a transaction to the mempool (see the module rules), as of ``now_ms`` if given."""
        self._advance(now_ms)
        return self.mempool.add(tx)

    def offer(self, tx: Tx, *, now_ms: int | None = None) -> str | None:
        """:meth:`submit` answering ``None`` (accepted) or the rejection reason
        (:meth:`Mempool.offer <gridnode.core.mempool.Mempool.offer>`)."""
        self._advance(now_ms)
        return self.mempool.offer(tx)

    def _advance(self, now_ms: int | None) -> None:
        """The admission clock moves forward to ``now_ms`` (if given), never back."""
        if now_ms is not None and now_ms > self._now_ms:
            self._now_ms = now_ms

    def backlog_full(self) -> bool:
        """The pending transactions fill half a block's count or bytes (:meth:`backlog`'s
        ``full``)."""
        mempool = self.mempool
        return len(mempool) >= self._max_txs // 2 or mempool.pending_bytes >= self._max_bytes // 2

    def backlog(self) -> Backlog:
        """What the adaptive cadence starts the next height for (``gridnode.core.consensus``):
        the pending transactions, full at half the block's count or bytes limit, and when a block
        would next clear or settle something by its time alone — the gate closure of the earliest
        slot holding open orders, the reading deadline of the earliest slot awaiting settlement
        (not one every member read: it is settled already) (the ledger's rules decide what a block
        does; this only says when to look)."""
        count = len(self.mempool)
        full = self.backlog_full()
        state = self.state
        if self._due[0] is not state:  # a function of the state alone: once per block
            clock, due = self.genesis.clock, []
            if state.orders:
                due.append(clock.gate_closure(min(state.orders)) * 1000)
            # a slot every member read was settled by the block that brought its last reading;
            # it keeps its readings until its deadline (a re-reading is a duplicate) and a later
            # block drops them: its deadline is no reason to start a height
            genesis = self.genesis
            waiting = state.trades.keys() | {
                s for s, r in state.readings.items() if not read_by_every_member(genesis, r)
            }
            if waiting:
                deadline = clock.end(min(waiting)) + self.genesis.reading_deadline_seconds
                due.append(deadline * 1000)
            self._due = (state, min(due) if due else None)
        return Backlog(count, full, self._due[1])

    # ------------------------------------------------------------------ consensus hooks
    def make_block(self, height: int, round_: int, now: int) -> bytes:
        del round_
        if height != self.state.height + 1:
            raise InvalidInput(
                reason="not_next", subject=f"block {height}", expected=str(self.state.height + 1)
            )
        self._now_ms = max(self._now_ms, now)
        txs = self.mempool.batch(max_count=self._max_txs, max_bytes=self._max_bytes)
        block, after = build_block(
            self.state, time_ms=now, proposer=self.proposer, txs=txs, verified=self.verified
        )
        self._remember(block, after)
        return block.encode()

    def _known(self, block: bytes) -> tuple[Block, LedgerState] | None:
        digest = block_hash(block)
        known = self._after.get(digest)
        if known is None and self._shared is not None:
            known = self._shared.get((self.state.head_hash, digest))
        if known is not None and known[0].raw != block:
            return None  # the same header over other bytes: not the block we checked
        return known

    def block_error(
        self, height: int, block: bytes, now: int | None, *, round_: int = 0
    ) -> InvalidInput | None:
        """Why ``block`` may not be committed at ``height`` (``None``: it may); ``now`` given: the
        clock rule too (a fresh proposal only, see the module rules), whose old side widens by
        one ``max_drift_ms`` per round of the proposal: a validator starved of CPU judges every
        proposal seconds late, and with a fixed bound it would prevote nil in every round while
        the machine stays busy (measured: 100 daemons on 2 cores stalled the ledger for minutes
        on ``time_too_old``). The future side never widens."""
        late = max(0, round_) * self.genesis.max_drift_ms
        known = self._known(block)
        if known is not None and known[1].height == self.state.height + 1:
            # already checked on top of the current state (our own proposal, or a re-proposal):
            # only the clock rule depends on ``now``; ledger.check names it when it fails
            parsed = known[0]
            if parsed.height != height:
                return _wrong_height(height, parsed.height)
            drift = self.genesis.max_drift_ms
            if now is None or now - drift - late <= parsed.time_ms <= now + drift:
                return None
            try:
                check(self.state, parsed, now_ms=now, late_ms=late, verified=self.verified)
            except InvalidInput as exc:  # time_in_future / time_too_old, raised before any work
                return exc
            return None
        try:
            parsed = decode_block(block, known=self.mempool.get)
            if parsed.height != height:
                return _wrong_height(height, parsed.height)
            after = check(self.state, parsed, now_ms=now, late_ms=late, verified=self.verified)
        except InvalidInput as exc:
            return exc
        self._remember(parsed, after)
        return None

    def apply(self, height: int, block: bytes) -> LedgerState:
        """Apply the committed block at ``height``; returns the new state."""
        known = self._known(block)
        if known is not None and known[1].height == self.state.height + 1:
            parsed, after = known
        else:  # a block this node did not check (a full node, a sync, a replay at boot)
            parsed = decode_block(block, known=self.mempool.get)
            # committed: > 2/3 of the validators signed it, so an honest one checked every
            # signature in it (the module rules); every other rule is re-run here
            self.verified.update(tx_id(tx) for tx in parsed.txs)
            after = check(self.state, parsed, verified=self.verified)
        if parsed.height != height:
            raise _wrong_height(height, parsed.height)
        self.state = after
        self.last_applied = parsed
        self._after.clear()
        self.mempool.remove_committed([tx.id for tx in parsed.txs])  # tx.id is tx_id(tx)
        self.mempool.recheck()
        return after

    def snapshot(self) -> bytes:
        """The committed state's canonical bytes (:meth:`LedgerState.encode`)."""
        return self.state.encode()

    def restore(self, data: bytes) -> None:
        """Start from a snapshot made by :meth:`snapshot` (on an app that has applied nothing)."""
        self.state = decode_state(data, self.genesis)
        self._now_ms = self.state.time_ms

    def _remember(self, block: Block, after: LedgerState) -> None:
        """Cache the state after ``block`` by its id (SHA-256 of its header; :meth:`_known` also
        compares the bytes)."""
        if len(self._after) >= _CACHE_LIMIT:
            self._after.pop(next(iter(self._after)))
        self._after[block.hash] = (block, after)
        if self._shared is not None:
            if len(self._shared) >= 16 * _CACHE_LIMIT:
                self._shared.pop(next(iter(self._shared)))
            self._shared[(self.state.head_hash, block.hash)] = (block, after)

    @staticmethod
    def decode(block: bytes) -> Block:
        return decode_block(block)
