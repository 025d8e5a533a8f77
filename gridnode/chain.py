"""The one chain reader: any committed chain, from genesis, as typed facts.

A chain is the sequence ``(height, block bytes, commit bytes)`` from height 1 up, each block with
the commit certificate that decided it — read from a node's SQLite or in-memory store
(:func:`stored_blocks`), handed over by a simulation's validators as they decide, or (later) read
from an exported file. :class:`ChainReader` shares nothing with whoever wrote the chain but the
genesis. For each height, in this order, it

1. checks that the height is the next one;
2. verifies the commit: precommit signatures of more than 2/3 of the genesis validators for exactly
   these block bytes at this height (:func:`gridnode.core.consensus_messages.verify_commit`);
3. decodes the block and applies it with the ledger's own rules
   (:func:`gridnode.core.ledger.apply_with_outcome`: every transaction's signature and admission
   rule re-checked, every due slot cleared and settled, the block's state root compared);

and reports what happened as one :class:`BlockFacts`: the block's transactions as the households
signed them (orders, cancels, readings; all admitted, in order), the slots it cleared (each book
exactly as the ledger held it at gate closure, after every replacement and cancel, with its trades)
and the slots it settled (the signed readings and the bills). Nothing about orders, clearing or
settlement is derived a second time here: these are the facts of the ledger's own apply step, so a
reader and a node cannot disagree about them.

Rules: the first height that fails a step raises :class:`ChainError` (its ``reason`` says which
step, ``height`` where, ``cause`` carries the commit's or the ledger's own refusal, which names the
transaction and rule); nothing of that block is applied and the reader stays at the height before,
so a caller may stop or feed the right block. :attr:`ChainReader.state` is the ledger state after
the last block read (keep the states you need: the reader keeps none).

:func:`trade_row` is the one conversion of a :class:`~market.clearing.Trade` into a JSON-ready row
(the API, the simulation's trade tables and the audit use it).

Known limits: reading is sequential on one core (a caller checks transaction and commit signatures
in a pool first and hands what verified in as ``verified`` / ``verified_votes``: the audit,
:mod:`gridnode.audit`, does); a reader starts at genesis or after a state the caller computed
itself from genesis (``state``: an audit's checkpoint), never a snapshot a node handed over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gridnode.core.consensus_messages import ValidatorSet, decode_commit, verify_commit
from gridnode.core.ledger import (
    Block,
    Genesis,
    LedgerState,
    OpenOrder,
    SignedBundle,
    SignedCancel,
    SignedOrder,
    SignedReading,
    SlotCleared,
    SlotSettled,
    apply_with_outcome,
    decode_block,
    genesis_state,
)
from market.clearing import Trade
from market.errors import ChainReason, InvalidInput, LedgerReason

__all__ = [
    "BlockFacts",
    "BlockSource",
    "ChainError",
    "ChainReader",
    "ChainReason",
    "CommittedReading",
    "SlotCleared",
    "SlotSettled",
    "stored_blocks",
    "trade_row",
]

#: blocks fetched from a store per query by :func:`stored_blocks`
STORE_BATCH = 200


class ChainError(InvalidInput):
    """A chain that does not read: ``height`` is the first block refused, ``cause`` the commit's or
    ledger's own error (naming the transaction and rule), if the step raised one."""

    def __init__(
        self,
        reason: ChainReason | LedgerReason,
        *,
        height: int,
        expected: str = "",
        cause: InvalidInput | None = None,
    ) -> None:
        self.height = height
        self.cause = cause
        super().__init__(
            reason=reason,
            subject=f"block {height}",
            expected=expected,
            found=str(cause) if cause is not None else "",
        )


@dataclass(frozen=True, slots=True)
class CommittedReading:
    """A meter reading a block committed: ``tx_id`` is the transaction that carried it (a
    ``gn.tx.reading``, or the ``gn.tx.bundle`` it was part of)."""

    household: str
    slot: int
    net_wh: int
    tx_id: bytes


@dataclass(frozen=True, slots=True)
class BlockFacts:
    """What one committed block did to the ledger (see the module rules)."""

    block: Block  # decoded: height, time, proposer, transactions, state root
    block_hash: bytes  # the ledger's head hash after it
    cleared: tuple[SlotCleared, ...]  # slots cleared by this block, in slot order
    settled: tuple[SlotSettled, ...]  # slots settled by this block, in slot order

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def time_ms(self) -> int:
        return self.block.time_ms

    @property
    def orders(self) -> tuple[OpenOrder, ...]:
        """Orders committed in this block, each its own transaction or a bundle's, in the
        block's order (a later one of the same household and slot replaces an earlier one:
        :attr:`SlotCleared.book` is what was left at gate closure)."""
        out: list[OpenOrder] = []
        for tx in self.block.txs:
            if isinstance(tx, SignedOrder):
                out.append(tx)
            elif isinstance(tx, SignedBundle):
                out.extend(tx.placed())
        return tuple(out)

    @property
    def cancels(self) -> tuple[SignedCancel, ...]:
        return tuple(tx for tx in self.block.txs if isinstance(tx, SignedCancel))

    @property
    def readings(self) -> tuple[CommittedReading, ...]:
        """Readings committed in this block, each its own transaction or a bundle's, in the
        block's order."""
        out: list[CommittedReading] = []
        for tx in self.block.txs:
            if isinstance(tx, SignedReading):
                out.append(CommittedReading(tx.household, tx.slot, tx.net_wh, tx.id))
            elif isinstance(tx, SignedBundle) and tx.reading is not None:
                r = tx.reading
                out.append(CommittedReading(tx.household, r.slot, r.net_wh, tx.id))
        return tuple(out)


class ChainReader:
    """Reads a chain from genesis, one height at a time (see the module rules)."""

    __slots__ = ("_state", "_validators", "_verified", "genesis")

    def __init__(
        self,
        genesis: Genesis,
        *,
        verified: set[bytes] | None = None,
        verified_votes: set[tuple[int, str, bytes, bytes]] | None = None,
        state: LedgerState | None = None,
    ) -> None:
        """``verified``: ids (:func:`~gridnode.core.ledger.tx_id`) of transactions whose signature
        the caller has already checked, e.g. in a process pool — the ledger's cache
        (:func:`~gridnode.core.ledger.check`): an id vouches for exactly those signed bytes, and
        the reader adds the ones it checks. ``None``: every signature is checked here.
        ``verified_votes``: likewise for commit signatures, the validator set's cache of
        ``(validator, domain, signed bytes, signature)`` that verified
        (:class:`~gridnode.core.consensus_messages.ValidatorSet`).
        ``state``: start after that state instead of at genesis — a state the caller computed
        itself from this genesis (an audit's own checkpoint), never one a node handed over."""
        if state is not None and state.genesis.hash != genesis.hash:
            raise ChainError(LedgerReason.WRONG_GENESIS, height=state.height)
        self.genesis = genesis
        self._state = genesis_state(genesis) if state is None else state
        self._validators = ValidatorSet(
            tuple(bytes.fromhex(v) for v in genesis.validators), verified=verified_votes
        )
        self._verified = verified

    @property
    def state(self) -> LedgerState:
        """The ledger state after the last block read (the genesis state before the first)."""
        return self._state

    @property
    def height(self) -> int:
        return self._state.height

    def read(self, height: int, block: bytes, commit: bytes) -> BlockFacts:
        """Verify and apply block ``height``; raise :class:`ChainError` if it does not read."""
        expected = self._state.height + 1
        if height != expected:
            raise ChainError(
                LedgerReason.WRONG_HEIGHT, height=height, expected=f"block {expected} next"
            )
        try:
            verify_commit(self._validators, decode_commit(commit), block, height=height)
        except InvalidInput as exc:
            raise ChainError(
                ChainReason.BAD_COMMIT,
                height=height,
                expected="precommits of > 2/3 of the validators for these bytes",
                cause=exc,
            ) from exc
        try:
            parsed = decode_block(block)
        except InvalidInput as exc:
            raise ChainError(ChainReason.BAD_BLOCK, height=height, cause=exc) from exc
        try:
            outcome = apply_with_outcome(self._state, parsed, verified=self._verified)
        except InvalidInput as exc:
            raise ChainError(ChainReason.BROKEN_RULE, height=height, cause=exc) from exc
        self._state = outcome.state
        return BlockFacts(parsed, outcome.state.head_hash, outcome.cleared, outcome.settled)

    def read_all(self, chain: Iterable[tuple[int, bytes, bytes]]) -> Iterator[BlockFacts]:
        """:meth:`read` every ``(height, block, commit)`` of ``chain``, yielding the facts."""
        for height, block, commit in chain:
            yield self.read(height, block, commit)


class StoredBlockLike(Protocol):
    """What :func:`stored_blocks` reads of a stored block (:class:`gridnode.store.StoredBlock`)."""

    @property
    def height(self) -> int: ...
    @property
    def block(self) -> bytes: ...
    @property
    def commit(self) -> bytes: ...


class BlockSource(Protocol):
    """Anything that hands out committed blocks by height: a node's SQLite or memory store."""

    def blocks_from(self, height: int, limit: int) -> Sequence[StoredBlockLike]: ...


def stored_blocks(
    store: BlockSource, *, from_height: int = 1
) -> Iterator[tuple[int, bytes, bytes]]:
    """The chain a store holds, ``(height, block, commit)`` in height order, fetched in batches
    (lazily: blocks committed while the caller reads are included)."""
    height = from_height
    while True:
        batch = store.blocks_from(height, STORE_BATCH)
        if not batch:
            return
        for sb in batch:
            yield sb.height, sb.block, sb.commit
        height = batch[-1].height + 1


def trade_row(trade: Trade) -> dict[str, str | int]:
    """A trade as a JSON-ready row: who, which orders, how much, at what price, for how much."""
    return {
        "buyer": trade.buyer,
        "seller": trade.seller,
        "buy_order": trade.buy_order,
        "sell_order": trade.sell_order,
        "energy_wh": trade.energy_wh,
        "price_micro_per_kwh": trade.price_micro_per_kwh,
        "amount_micro": trade.amount_micro,
    }
